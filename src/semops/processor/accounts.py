"""The processor's ledger in its database: the shell around `semops.ledger` planning.

Theory of operation. Every money movement is one call here, inside the caller's write
transaction (`_apply`): the customer's or merchant's balance moved by one UPDATE ...
RETURNING (on PostgreSQL it locks that row to COMMIT), then the entry row (its unique key
decides "new") with its postings -- one statement on PostgreSQL, two on SQLite. The
`plan_*` function of `semops.ledger` decides on the balance before (the row after minus
the posting) and `check_limits` on the balance as written, so a limit can never be broken
by a concurrent writer; a refusal, or a key found taken, undoes the balance moves, so
nothing changes.

System accounts (suspense, settlement, funding) are touched by every payment, so no
payment reads or writes their rows: their postings go in unfolded, and a system balance is
its row plus its unfolded postings (`store.booked_balance`). `fold` adds them into the rows
in batches, off the payment path, and checks that suspense is not below zero.

Entry ids derive from (reference, kind), so a repeated operation finds its stored entry:
the same content is a no-op, other content `idempotency_conflict`; closing a reservation a
second time the same way is a no-op, the other way `transfer_state_conflict`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Final, NoReturn

import structlog

from semops.core.errors import E, SemopsError
from semops.core.limits import BALANCE_ABS_MAX_MINOR
from semops.core.money import CURRENCY_SCALES, Money
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
    SystemAccount,
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

log = structlog.get_logger("semops.processor.accounts")

_CLOSINGS: Final = ((EntryKind.POST, ClosureKind.POSTED), (EntryKind.VOID, ClosureKind.VOIDED))
# Unfolded system postings folded into their rows per write transaction (`fold`).
FOLD_BATCH_MAX: Final = 5_000
_SYSTEM_KIND_NAMES: Final = frozenset(kind.value for kind in SYSTEM_KINDS)


def system_account_name(kind: AccountKind, currency: str) -> str:
    return f"{kind.value}:{currency}"


def system_account(account_id: str) -> SystemAccount | None:
    """The system account an id names ("<kind>:<currency>"), or None for any other id
    (customer and merchant ids never contain ':')."""
    kind, separator, currency = account_id.partition(":")
    if not separator or kind not in _SYSTEM_KIND_NAMES or currency not in CURRENCY_SCALES:
        return None
    return SystemAccount(account_id, AccountKind(kind), currency)


def _system(kind: AccountKind, currency: str) -> SystemAccount:
    return SystemAccount(system_account_name(kind, currency), kind, currency)


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
    """The account as booked (a system account's with its postings not folded yet)."""
    row = await store.get_row(connection, store.accounts, account_id, for_update=for_update)
    if row is None:
        raise SemopsError(E.ACCOUNT_UNKNOWN)
    if system_account(account_id) is not None:  # its row lacks the postings not folded yet
        row = {**row, "balance_minor": await store.booked_balance_of(connection, account_id)}
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
    return system_account(posting.account_id) is not None


# The `plan_*` decision of one operation, over the snapshots of the customer and merchant
# accounts it touches as they were before it (keyed by account id).
Plan = Callable[[Mapping[str, AccountSnapshot]], Entry]


async def _apply(connection: Connection, intended: Entry, plan: Plan, now: int) -> bool:
    """Write `intended` if its entry is new; False if its key is taken (the caller tells a
    retry from a conflict). Two statements on the way through on PostgreSQL, three on
    SQLite (module docstring).

    The customer or merchant rows are moved first, in id order (at most one per operation
    today), each by one UPDATE ... RETURNING that hands back the row as it is after: the
    balance before follows, `plan` decides on it exactly as on a prefetched snapshot, and
    `check_limits` runs on the balance as written. Only then do the entry and its postings
    go in (the system ones unfolded), the entry's key deciding "new". Whatever stops the
    entry -- a refusal, or its key found taken -- undoes the balance moves before it
    returns or raises, so nothing is changed; a refusal of a move already made (a retry
    that would overdraw on top of itself) is a taken key, not a refusal.
    """
    parties = sorted(
        (p for p in intended.postings if not _is_system(p)), key=lambda p: p.account_id
    )
    after: dict[str, AccountSnapshot] = {}
    refusal: SemopsError | None = None
    for posting in parties:
        row = await store.move_balance(
            connection, posting.account_id, posting.amount_minor, BALANCE_ABS_MAX_MINOR
        )
        if row is None:  # no such account, or the balance would leave its range
            break
        after[posting.account_id] = _snapshot(row)
    else:
        before = {
            posting.account_id: replace(
                after[posting.account_id],
                balance_minor=after[posting.account_id].balance_minor - posting.amount_minor,
            )
            for posting in parties
        }
        try:
            entry = plan(before)
            assert entry == intended, f"{intended.entry_id}: planned another entry"
            # on the balances as written, before the caller commits
            check_limits(entry, after, [p.account_id for p in intended.postings if _is_system(p)])
        except SemopsError as error:
            refusal = error
        else:
            written = await store.insert_entry_with_postings(
                connection,
                (intended.entry_id, intended.kind.value, intended.transfer_ref, intended.currency),
                [(p.account_id, p.amount_minor, not _is_system(p)) for p in intended.postings],
                now,
            )
            if not written:
                await _undo(connection, intended, after)
            return written
    # Refused, by the database or by the plan: nothing of this entry stays, and a retry of
    # a move already made (one that would overdraw on top of itself) is a taken key.
    await _undo(connection, intended, after)
    if await store.entry_taken(
        connection, intended.entry_id, intended.kind.value, intended.transfer_ref
    ):
        return False
    if refusal is not None:
        raise refusal
    await _refuse(connection, intended, plan)  # decided on the balances as they were


async def _undo(
    connection: Connection, intended: Entry, moved: Mapping[str, AccountSnapshot]
) -> None:
    """Take back the balance moves `_apply` made for an entry that did not go in."""
    for posting in reversed(intended.postings):
        if posting.account_id in moved:
            row = await store.move_balance(
                connection, posting.account_id, -posting.amount_minor, BALANCE_ABS_MAX_MINOR
            )
            assert row is not None, f"{intended.entry_id}: could not undo a balance move"


async def _refuse(connection: Connection, intended: Entry, plan: Plan) -> NoReturn:
    """The operating error for an entry whose balance could not be moved, decided by its
    `plan_*` function on snapshots read now (an unknown account raises on the read)."""
    accounts_before: dict[str, AccountSnapshot] = {}
    for posting in intended.postings:
        if _is_system(posting):
            continue
        row = await store.get_row(connection, store.accounts, posting.account_id)
        if row is None:
            raise SemopsError(E.ACCOUNT_UNKNOWN)
        accounts_before[posting.account_id] = _snapshot(row)
    plan(accounts_before)
    raise AssertionError(f"{intended.entry_id}: refused by the database, not by its plan")


def _party(before: Mapping[str, AccountSnapshot], account_id: str) -> AccountSnapshot:
    """The customer or merchant account an operation names; a system account there is the
    caller's mistake, refused as its plan would refuse a wrong kind."""
    if account_id not in before:
        raise SemopsError(E.VALIDATION_FAILED, f"{account_id} is not a customer or merchant")
    return before[account_id]


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
    suspense = _system(AccountKind.SUSPENSE, amount.currency)
    intended = move_entry(EntryKind.RESERVE, ref, amount, payer_id, suspense.account_id)
    if not await _apply(
        connection,
        intended,
        lambda before: plan_reserve(_party(before, payer_id), suspense, amount, ref),
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
    suspense = _system(AccountKind.SUSPENSE, amount.currency)
    to_system = system_account(to_account_id)
    intended = move_entry(
        EntryKind.POST, reservation.ref, amount, suspense.account_id, to_account_id
    )
    if await _apply(
        connection,
        intended,
        lambda before: plan_post(reservation, suspense, to_system or _party(before, to_account_id)),
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
    suspense = _system(AccountKind.SUSPENSE, amount.currency)
    intended = move_entry(EntryKind.VOID, reservation.ref, amount, suspense.account_id, payer_id)
    if await _apply(
        connection,
        intended,
        lambda before: plan_void(reservation, suspense, _party(before, payer_id)),
        now,
    ):
        return True
    return await _closed(connection, reservation.ref, Closure(ClosureKind.VOIDED, payer_id))


async def credit_inbound(
    connection: Connection, to_account_id: str, amount: Money, ref: str, now: int
) -> None:
    """Money that arrived through the router: settlement -> a merchant or customer."""
    check_request(ref, amount)
    settlement = _system(AccountKind.SETTLEMENT, amount.currency)
    intended = move_entry(
        EntryKind.CREDIT_INBOUND, ref, amount, settlement.account_id, to_account_id
    )
    if not await _apply(
        connection,
        intended,
        lambda before: plan_credit_inbound(settlement, _party(before, to_account_id), amount, ref),
        now,
    ):
        await _repeat(connection, intended)


async def deposit(
    connection: Connection, account_id: str, amount: Money, ref: str, now: int
) -> None:
    """Money entering from outside (cash in, a bank transfer): funding -> the account."""
    check_request(ref, amount)
    funding = _system(AccountKind.FUNDING, amount.currency)
    intended = move_entry(EntryKind.DEPOSIT, ref, amount, funding.account_id, account_id)
    if not await _apply(
        connection,
        intended,
        lambda before: plan_deposit(_party(before, account_id), funding, amount, ref),
        now,
    ):
        await _repeat(connection, intended)


async def withdraw(
    connection: Connection, account_id: str, amount: Money, ref: str, now: int
) -> None:
    """Money leaving to the outside (cash out, a payout): the account -> funding."""
    check_request(ref, amount)
    funding = _system(AccountKind.FUNDING, amount.currency)
    intended = move_entry(EntryKind.WITHDRAW, ref, amount, account_id, funding.account_id)
    if not await _apply(
        connection,
        intended,
        lambda before: plan_withdraw(_party(before, account_id), funding, amount, ref),
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


async def fold(connection: Connection) -> int:
    """Fold up to FOLD_BATCH_MAX unfolded system postings into their accounts' rows, in
    the caller's write transaction; how many it folded. Then every booked
    suspense balance must be at least zero: below is corrupt state (a reservation closed
    twice or never made), logged as an error every fold until someone looks."""
    folded, _ = await store.fold_system_postings(connection, FOLD_BATCH_MAX)
    suspense = await store.booked_balances_of_kind(connection, AccountKind.SUSPENSE.value)
    for account_id, balance_minor in suspense.items():
        if balance_minor < 0:
            log.error("suspense_below_zero", account_id=account_id, balance_minor=balance_minor)
    return folded
