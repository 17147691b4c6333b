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

from typing import Any, Final

from semops.core.errors import E, SemopsError
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
    entry_id_for,
    move_entry,
    plan_credit_inbound,
    plan_deposit,
    plan_post,
    plan_reserve,
    plan_void,
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


def _lock_order(posting: Posting) -> tuple[bool, str]:
    # Customer and merchant rows before the shared system rows (suspense, settlement,
    # funding): every transaction takes row locks in the same order, so none deadlock, and
    # the hot system rows are locked last, for the shortest time.
    # System accounts are named "<kind>:<currency>"; ours never contain ':'.
    return ":" in posting.account_id, posting.account_id


async def _write(
    connection: Connection, entry: Entry, touched: list[AccountSnapshot], now: int
) -> None:
    await store.write_entry(
        connection,
        entry.entry_id,
        entry.kind.value,
        entry.transfer_ref,
        entry.currency,
        [(p.account_id, p.amount_minor) for p in sorted(entry.postings, key=_lock_order)],
        now,
    )
    after = {
        account.account_id: await snapshot(connection, account.account_id) for account in touched
    }
    check_limits(entry, after)  # again after the write, before the caller commits


async def _repeat(connection: Connection, intended: Entry) -> bool:
    """True if this very entry is already written; conflict if another one is."""
    stored = await stored_entry(connection, intended.entry_id)
    if stored is None:
        return False
    check_repeat(stored, intended)
    return True


async def reserve(connection: Connection, payer_id: str, amount: Money, ref: str, now: int) -> None:
    """Hold `amount` of the payer's money in suspense for transfer or refund `ref`."""
    suspense = await system_snapshot(connection, AccountKind.SUSPENSE, amount.currency)
    intended = move_entry(EntryKind.RESERVE, ref, amount, payer_id, suspense.account_id)
    if await _repeat(connection, intended):
        return
    payer = await snapshot(connection, payer_id, for_update=True)
    entry = plan_reserve(payer, suspense, amount, ref)
    await _write(connection, entry, [payer, suspense], now)


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
    requested = Closure(ClosureKind.POSTED, to_account_id)
    if not check_closing(await closure_of(connection, reservation.ref), requested):
        return False
    currency = reservation.amount.currency
    suspense = await system_snapshot(connection, AccountKind.SUSPENSE, currency)
    to_account = await snapshot(connection, to_account_id)
    entry = plan_post(reservation, suspense, to_account)
    await _write(connection, entry, [suspense, to_account], now)
    return True


async def post_to_settlement(connection: Connection, reservation: Reservation, now: int) -> bool:
    settlement = system_account_name(AccountKind.SETTLEMENT, reservation.amount.currency)
    return await post(connection, reservation, settlement, now)


async def void(connection: Connection, reservation: Reservation, now: int) -> bool:
    """Release a reservation back to its payer; False if it already was (a retry)."""
    requested = Closure(ClosureKind.VOIDED, reservation.payer_account_id)
    if not check_closing(await closure_of(connection, reservation.ref), requested):
        return False
    currency = reservation.amount.currency
    suspense = await system_snapshot(connection, AccountKind.SUSPENSE, currency)
    payer = await snapshot(connection, reservation.payer_account_id)
    entry = plan_void(reservation, suspense, payer)
    await _write(connection, entry, [suspense, payer], now)
    return True


async def credit_inbound(
    connection: Connection, to_account_id: str, amount: Money, ref: str, now: int
) -> None:
    """Money that arrived through the router: settlement -> a merchant or customer."""
    settlement = await system_snapshot(connection, AccountKind.SETTLEMENT, amount.currency)
    intended = move_entry(
        EntryKind.CREDIT_INBOUND, ref, amount, settlement.account_id, to_account_id
    )
    if await _repeat(connection, intended):
        return
    to_account = await snapshot(connection, to_account_id)
    entry = plan_credit_inbound(settlement, to_account, amount, ref)
    await _write(connection, entry, [settlement, to_account], now)


async def deposit(
    connection: Connection, account_id: str, amount: Money, ref: str, now: int
) -> None:
    """Money entering from outside (cash in, a bank transfer): funding -> the account."""
    funding = await system_snapshot(connection, AccountKind.FUNDING, amount.currency)
    intended = move_entry(EntryKind.DEPOSIT, ref, amount, funding.account_id, account_id)
    if await _repeat(connection, intended):
        return
    account = await snapshot(connection, account_id)
    entry = plan_deposit(account, funding, amount, ref)
    await _write(connection, entry, [funding, account], now)


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
