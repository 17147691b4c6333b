"""The processor's ledger in its database: the shell around `semops.ledger` planning.

Theory of operation. Every money movement is one call here, inside the caller's write
transaction, and follows prefetch -> decide -> write -> re-check:

1. prefetch: the account snapshots the operation touches (the debited customer or merchant
   row locked FOR UPDATE on PostgreSQL; SQLite writers are already serialised);
2. decide: a `plan_*` function of `semops.ledger` returns the entry (or raises the
   operating error: insufficient funds, blocked account, ...);
3. write: the entry, its postings and the balance changes, in the same transaction;
4. re-check: the touched balances are read again and `check_limits` runs once more
   before the caller commits, so a limit can never be broken by a concurrent writer.

Entry ids derive from (reference, kind), so a repeated operation finds its stored entry:
the same content is a no-op, other content `idempotency_conflict`; closing a reservation a
second time the same way is a no-op, the other way `transfer_state_conflict`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Final, NoReturn

from semops.core.errors import E, SemopsError
from semops.core.limits import BALANCE_ABS_MAX_MINOR
from semops.core.money import Money
from semops.ledger import (
    SYSTEM_KINDS,
    AccountKind,
    AccountSnapshot,
    AccountStatus,
    Closure,
    ClosureKind,
    Entry,
    EntryKind,
    Posting,
    Reservation,
    check_closing,
    check_limits,
    check_repeat,
    check_request,
    entry_id_for,
    move_entry,
    plan_credit_inbound,
    plan_deposit,
    plan_post,
    plan_reserve,
    plan_void,
    plan_withdraw,
)
from semops.store import processor as store
from semops.store.db import Connection

_CLOSINGS: Final = ((EntryKind.POST, ClosureKind.POSTED), (EntryKind.VOID, ClosureKind.VOIDED))


def system_account_name(kind: AccountKind, currency: str) -> str:
    return f"{kind.value}:{currency}"


def _snapshot(row: dict[str, Any]) -> AccountSnapshot:
    return AccountSnapshot(
        account_id=row["account_id"],
        kind=AccountKind(row["kind"]),
        currency=row["currency"],
        balance_minor=int(row["balance_minor"]),
        overdraft_minor=int(row["overdraft_minor"]),
        status=AccountStatus(row["status"]),
    )


async def snapshot(
    connection: Connection, account_id: str, *, for_update: bool = False
) -> AccountSnapshot:
    row = await store.get_row(connection, store.accounts, account_id, for_update=for_update)
    if row is None:
        raise SemopsError(E.ACCOUNT_UNKNOWN)
    return _snapshot(row)


async def system_snapshot(
    connection: Connection, kind: AccountKind, currency: str
) -> AccountSnapshot:
    assert kind in SYSTEM_KINDS, kind
    row = await store.get_row(connection, store.accounts, system_account_name(kind, currency))
    assert row is not None, f"no {currency} {kind} account: open_account creates them"
    return _snapshot(row)


async def ensure_system_accounts(connection: Connection, currency: str, now: int) -> None:
    """The suspense, settlement and funding accounts of a currency, made on first use."""
    for kind in sorted(SYSTEM_KINDS):
        name = system_account_name(kind, currency)
        if await store.get_row(connection, store.accounts, name) is None:
            await store.insert_row(
                connection, store.accounts, _new_account(name, kind, currency, now)
            )


def _new_account(account_id: str, kind: AccountKind, currency: str, now: int) -> dict[str, Any]:
    AccountSnapshot(account_id=account_id, kind=kind, currency=currency)  # validates
    return {
        "account_id": account_id,
        "kind": kind.value,
        "currency": currency,
        "balance_minor": 0,
        "overdraft_minor": 0,
        "status": AccountStatus.OPEN.value,
        "created_at": now,
    }


async def open_account(
    connection: Connection, account_id: str, kind: AccountKind, currency: str, now: int
) -> None:
    """A new, empty customer or merchant account (and the currency's system accounts)."""
    assert kind not in SYSTEM_KINDS, kind
    await ensure_system_accounts(connection, currency, now)
    await store.insert_row(
        connection, store.accounts, _new_account(account_id, kind, currency, now)
    )


async def stored_entry(connection: Connection, entry_id: str) -> Entry | None:
    row = await store.find_row(connection, store.entries, entry_id=entry_id)
    if row is None:
        return None
    amounts = sorted(await store.entry_postings(connection, entry_id), key=lambda item: item[1])
    return Entry(
        entry_id=row["entry_id"],
        kind=EntryKind(row["kind"]),
        transfer_ref=row["transfer_ref"],
        currency=row["currency"],
        postings=tuple(Posting(account_id, amount) for account_id, amount in amounts),
    )


async def lock_accounts(connection: Connection, account_ids: list[str]) -> None:
    """Lock customer and merchant rows up front, in id order (PostgreSQL; SQLite writers
    are serialised anyway). A transaction that moves money between two such accounts
    takes both locks before touching either, so two of them never wait on each other."""
    for account_id in sorted(set(account_ids)):
        await snapshot(connection, account_id, for_update=True)


def _is_system(posting: Posting) -> bool:
    # System accounts are named "<kind>:<currency>"; ours never contain ':'.
    return ":" in posting.account_id


def _lock_order(posting: Posting) -> tuple[bool, str]:
    # Customer and merchant rows before the shared system rows (suspense, settlement,
    # funding): every transaction takes row locks in the same order, so none deadlock, and
    # the hot system rows are locked last, for the shortest time.
    return _is_system(posting), posting.account_id


# The `plan_*` decision of one operation, over the snapshots of the accounts it touches as
# they were before it (keyed by account id).
Plan = Callable[[Mapping[str, AccountSnapshot]], Entry]


async def _apply(connection: Connection, intended: Entry, plan: Plan, now: int) -> bool:
    """Write `intended` if its entry is new; False if its unique key is taken (the caller
    tells a retry from a conflict). Four statements on the way through.

    The entry row is inserted first (its unique keys decide "new"), then each balance is
    moved by one UPDATE ... RETURNING, in lock order, which hands back the row as it is
    after; the postings go in between the customer or merchant rows (whose UPDATE finds
    out whether they exist) and the system rows. The balances before follow from the rows
    after, and the same `plan_*` function decides on them as on a prefetched snapshot;
    `check_limits` runs on the balances after, read in the very statement that wrote them.
    A refusal undoes what this call changed (the balances moved back, the postings and the
    entry row deleted) before it is raised, so it changes nothing, as before. The system
    rows come last because every payment shares them (suspense, settlement) and on
    PostgreSQL each stays locked until COMMIT: the fewer statements after them, the shorter
    everyone else waits.
    """
    if not await store.insert_entry_if_new(
        connection,
        intended.entry_id,
        intended.kind.value,
        intended.transfer_ref,
        intended.currency,
        now,
    ):
        return False
    ordered = sorted(intended.postings, key=_lock_order)
    after: dict[str, AccountSnapshot] = {}
    for posting in (p for p in ordered if not _is_system(p)):
        await _move(connection, intended, plan, posting, after)
    await store.insert_postings(
        connection, intended.entry_id, [(p.account_id, p.amount_minor) for p in ordered], now
    )
    for posting in (p for p in ordered if _is_system(p)):
        await _move(connection, intended, plan, posting, after)
    before = {
        posting.account_id: replace(
            after[posting.account_id],
            balance_minor=after[posting.account_id].balance_minor - posting.amount_minor,
        )
        for posting in ordered
    }
    try:
        entry = plan(before)
        assert entry == intended, f"{intended.entry_id}: planned another entry"
        check_limits(entry, after)  # on the balances as written, before the caller commits
    except SemopsError:
        await _undo(connection, intended, after)
        raise
    return True


async def _move(
    connection: Connection,
    intended: Entry,
    plan: Plan,
    posting: Posting,
    after: dict[str, AccountSnapshot],
) -> None:
    """One balance moved by `posting`, its row after kept in `after`; if it could not be
    (no such account, or the balance would leave its range) everything `intended` changed
    so far is undone and the operating error raised."""
    row = await store.move_balance(
        connection, posting.account_id, posting.amount_minor, BALANCE_ABS_MAX_MINOR
    )
    if row is None:
        await _undo(connection, intended, after)
        await _refuse(connection, intended, plan)
    after[posting.account_id] = _snapshot(row)


async def _undo(
    connection: Connection, intended: Entry, moved: Mapping[str, AccountSnapshot]
) -> None:
    """Take back the balance moves, the postings and the entry row `_apply` wrote for a
    refused entry."""
    for posting in reversed(intended.postings):
        if posting.account_id in moved:
            row = await store.move_balance(
                connection, posting.account_id, -posting.amount_minor, BALANCE_ABS_MAX_MINOR
            )
            assert row is not None, f"{intended.entry_id}: could not undo a balance move"
    await store.delete_entry(connection, intended.entry_id)


async def _refuse(connection: Connection, intended: Entry, plan: Plan) -> NoReturn:
    """The operating error for an entry whose balances could not be moved, decided by its
    `plan_*` function on snapshots read now (an unknown account raises on the read)."""
    accounts_before: dict[str, AccountSnapshot] = {}
    for posting in sorted(intended.postings, key=_lock_order):
        row = await store.get_row(connection, store.accounts, posting.account_id)
        if row is None:
            assert not _is_system(posting), f"no {posting.account_id} account"
            raise SemopsError(E.ACCOUNT_UNKNOWN)
        accounts_before[posting.account_id] = _snapshot(row)
    plan(accounts_before)
    raise AssertionError(f"{intended.entry_id}: refused by the database, not by its plan")


async def _repeat(connection: Connection, intended: Entry) -> None:
    """The entry's id is taken: a no-op if by this very entry, a conflict otherwise."""
    stored = await stored_entry(connection, intended.entry_id)
    assert stored is not None, f"{intended.entry_id}: taken, yet not stored"
    check_repeat(stored, intended)


async def _closed(connection: Connection, ref: str, requested: Closure) -> bool:
    """The reservation's closing key is taken: False if by the same closure (a retry),
    `transfer_state_conflict` if by the other one."""
    assert not check_closing(await closure_of(connection, ref), requested), ref
    return False


async def reserve(connection: Connection, payer_id: str, amount: Money, ref: str, now: int) -> None:
    """Hold `amount` of the payer's money in suspense for transfer or refund `ref`."""
    check_request(ref, amount)
    suspense_id = system_account_name(AccountKind.SUSPENSE, amount.currency)
    intended = move_entry(EntryKind.RESERVE, ref, amount, payer_id, suspense_id)
    if not await _apply(
        connection,
        intended,
        lambda before: plan_reserve(before[payer_id], before[suspense_id], amount, ref),
        now,
    ):
        await _repeat(connection, intended)


async def closure_of(connection: Connection, ref: str) -> Closure | None:
    for entry_kind, closure_kind in _CLOSINGS:
        entry = await stored_entry(connection, entry_id_for(ref, entry_kind))
        if entry is not None:
            (credited,) = (p.account_id for p in entry.postings if p.amount_minor > 0)
            return Closure(closure_kind, credited)
    return None


async def post(
    connection: Connection, reservation: Reservation, to_account_id: str, now: int
) -> bool:
    """Complete a reservation to `to_account_id`; False if it already was (a retry)."""
    amount = reservation.amount
    suspense_id = system_account_name(AccountKind.SUSPENSE, amount.currency)
    intended = move_entry(EntryKind.POST, reservation.ref, amount, suspense_id, to_account_id)
    if await _apply(
        connection,
        intended,
        lambda before: plan_post(reservation, before[suspense_id], before[to_account_id]),
        now,
    ):
        return True
    return await _closed(connection, reservation.ref, Closure(ClosureKind.POSTED, to_account_id))


async def post_to_settlement(connection: Connection, reservation: Reservation, now: int) -> bool:
    settlement = system_account_name(AccountKind.SETTLEMENT, reservation.amount.currency)
    return await post(connection, reservation, settlement, now)


async def void(connection: Connection, reservation: Reservation, now: int) -> bool:
    """Release a reservation back to its payer; False if it already was (a retry)."""
    amount = reservation.amount
    payer_id = reservation.payer_account_id
    suspense_id = system_account_name(AccountKind.SUSPENSE, amount.currency)
    intended = move_entry(EntryKind.VOID, reservation.ref, amount, suspense_id, payer_id)
    if await _apply(
        connection,
        intended,
        lambda before: plan_void(reservation, before[suspense_id], before[payer_id]),
        now,
    ):
        return True
    return await _closed(connection, reservation.ref, Closure(ClosureKind.VOIDED, payer_id))


async def credit_inbound(
    connection: Connection, to_account_id: str, amount: Money, ref: str, now: int
) -> None:
    """Money that arrived through the router: settlement -> a merchant or customer."""
    check_request(ref, amount)
    settlement_id = system_account_name(AccountKind.SETTLEMENT, amount.currency)
    intended = move_entry(EntryKind.CREDIT_INBOUND, ref, amount, settlement_id, to_account_id)
    if not await _apply(
        connection,
        intended,
        lambda before: plan_credit_inbound(
            before[settlement_id], before[to_account_id], amount, ref
        ),
        now,
    ):
        await _repeat(connection, intended)


async def deposit(
    connection: Connection, account_id: str, amount: Money, ref: str, now: int
) -> None:
    """Money entering from outside (cash in, a bank transfer): funding -> the account."""
    check_request(ref, amount)
    funding_id = system_account_name(AccountKind.FUNDING, amount.currency)
    intended = move_entry(EntryKind.DEPOSIT, ref, amount, funding_id, account_id)
    if not await _apply(
        connection,
        intended,
        lambda before: plan_deposit(before[account_id], before[funding_id], amount, ref),
        now,
    ):
        await _repeat(connection, intended)


async def withdraw(
    connection: Connection, account_id: str, amount: Money, ref: str, now: int
) -> None:
    """Money leaving to the outside (cash out, a payout): the account -> funding."""
    check_request(ref, amount)
    funding_id = system_account_name(AccountKind.FUNDING, amount.currency)
    intended = move_entry(EntryKind.WITHDRAW, ref, amount, account_id, funding_id)
    if not await _apply(
        connection,
        intended,
        lambda before: plan_withdraw(before[account_id], before[funding_id], amount, ref),
        now,
    ):
        await _repeat(connection, intended)


async def balance_view(connection: Connection, account_id: str) -> dict[str, Any]:
    """What a customer sees: the booked balance and what is available to spend.

    A reservation already left the account (it sits in suspense), so `available` is the
    ledger balance plus any overdraft, and `balance` adds back what is held in flight.
    """
    account = await snapshot(connection, account_id)
    held = await store.held_minor(connection, account_id)
    return {
        "account_id": account.account_id,
        "currency": account.currency,
        "balance_minor": account.balance_minor + held,
        "available_minor": account.balance_minor + account.overdraft_minor,
    }
