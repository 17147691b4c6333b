"""The decisions of a processor's double-entry ledger: which entry an operation writes.

Theory of operation
-------------------
Every account's balance is the sum of its postings, and postings only ever arrive inside an
`Entry`: at least two postings in one currency whose signed amounts sum to exactly zero
(positive is money into the account, negative money out of it). Entries are never changed
or deleted; a correction is a new entry. So, per currency, the balances of all accounts sum
to zero at every moment, and no operation can create or lose a minor unit. An entry that
would break this is a bug, not a refusal: `Entry` checks itself with `assert` and the
process crashes before corrupt state is written (TigerBeetle style).

Accounts and limits. Customer and merchant accounts are *limited*: after an entry that takes
money out, the balance must be at least `-overdraft_minor` (0 unless configured), and a
blocked one can receive but not send. Per currency the processor keeps exactly one of each
*system* account: `suspense` (money reserved for transfers in flight; never below zero),
`settlement` (its position against the router; unbounded either way) and `funding` (the
outside world; it goes negative by exactly the money customers hold, so the trial balance
still sums to zero). Limits are checked only on the accounts an entry debits: an account
already below its floor may always receive. No decision reads a system account's balance
(`SystemAccount` carries none): every payment moves suspense and settlement, so a shell
that had to read or lock them per entry would serialise every payment on two rows. The
one limit a system account has, suspense never below zero, holds by construction (a
reservation is closed once, with exactly its own amount) and is checked over the whole
ledger (`check_invariants`; the database shell when it folds system postings).

Operations. Each writes one two-posting entry, identified by `entry_id_for(ref, kind)`:

    reserve         payer (customer/merchant)  -> suspense      funds checked
    post            suspense -> settlement (routed) or merchant/customer (on-us)
    void            suspense -> payer
    credit_inbound  settlement -> merchant/customer  (payee side, or a refund coming back)
    deposit         funding -> customer/merchant
    withdraw        customer/merchant -> funding    funds checked

A reservation is therefore itself money in the ledger, not a flag beside it: the payer's
balance drops at `reserve`, and the suspense balance is exactly the sum of the open
reservations. A refund sent by a merchant is an ordinary reserve/post from the merchant's
account to settlement. A reservation is closed exactly once: posting or voiding again with
the *same* outcome is an idempotent no-op, a different outcome is `transfer_state_conflict`
(`check_closing`). Any other operation repeated with the same reference finds its stored
entry: the same content is a no-op, different content is `idempotency_conflict`
(`check_repeat`).

Checks run in a fixed order, so the same request always gets the same answer: the reference
and amount (`check_request`) -> a stored entry for this reference (repeat or conflict) ->
the accounts exist -> their kinds -> their currencies -> the new balances are representable
-> the debited account is not blocked -> its funds. Operating errors raise `SemopsError` and
change nothing.

Two faces of the same decisions. The database shell loads the customer or merchant account
an operation touches, calls a `plan_*` function with its snapshot, writes the returned
entry's postings and the new balance in one transaction, and calls `check_limits` again on
the balance as written before committing ("check before write and again after read"). The
in-memory `LedgerState` in `semops.ledger.state` calls exactly the same functions.
System accounts are chosen by the caller by kind and currency, so a wrong one handed to a
`plan_*` function is a programming error and an `assert`; the customer-chosen accounts get
operating errors. Everything here is pure: ids are derived from the caller's reference, and
no clock, randomness or I/O is involved.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace
from typing import Final

from semops.core.errors import E, SemopsError
from semops.core.ids import check_id
from semops.core.limits import BALANCE_ABS_MAX_MINOR
from semops.core.money import Money, check_payment_amount
from semops.ledger.model import (
    LIMITED_KINDS,
    AccountKind,
    AccountSnapshot,
    AccountStatus,
    Closure,
    Entry,
    EntryKind,
    Posting,
    Reservation,
    SystemAccount,
    entry_id_for,
)

__all__ = [
    "POST_TARGET_KINDS",
    "apply_entry",
    "check_closing",
    "check_limits",
    "check_repeat",
    "check_request",
    "move_entry",
    "plan_credit_inbound",
    "plan_deposit",
    "plan_post",
    "plan_reserve",
    "plan_void",
    "plan_withdraw",
    "replay_balances",
]

# A reservation is posted to the settlement account (the payee is at another processor) or
# straight to a customer or merchant here (on-us); never to suspense or funding.
POST_TARGET_KINDS: Final = frozenset(LIMITED_KINDS | {AccountKind.SETTLEMENT})


# --- Building and checking entries --------------------------------------------------------


def move_entry(
    kind: EntryKind, ref: str, amount: Money, from_account_id: str, to_account_id: str
) -> Entry:
    """The entry moving `amount` from one account to another, without any check of the
    accounts: what an operation *would* write, to compare a retry with the stored entry."""
    return Entry(
        entry_id=entry_id_for(ref, kind),
        kind=kind,
        transfer_ref=ref,
        currency=amount.currency,
        postings=(
            Posting(from_account_id, -amount.amount_minor),
            Posting(to_account_id, amount.amount_minor),
        ),
    )


def check_request(ref: str, amount: Money | None = None) -> None:
    """The first checks, before any account is read: a well-formed reference and a payable
    amount (1..AMOUNT_MAX_MINOR minor units)."""
    check_id(ref)
    if amount is not None:
        if not isinstance(amount, Money):
            raise SemopsError(E.AMOUNT_INVALID, "an amount is a Money value")
        check_payment_amount(amount.amount_minor)


def check_repeat(stored: Entry, intended: Entry) -> None:
    """A retried operation found its stored entry: the same content is a no-op (nothing is
    written); different content under the same reference is refused."""
    assert stored.entry_id == intended.entry_id, "compare entries of the same operation"
    if stored != intended:
        raise SemopsError(
            E.IDEMPOTENCY_CONFLICT,
            f"{intended.kind} {intended.transfer_ref} was already made with different content",
        )


def check_closing(previous: Closure | None, requested: Closure) -> bool:
    """Whether closing a reservation still has to be written.

    True: it is open, plan the entry. False: the very same closure already happened, so this
    is a retry and nothing is written. A different closure (post after void, void after
    post, post to another account) is `transfer_state_conflict`.
    """
    if previous is None:
        return True
    if previous == requested:
        return False
    raise SemopsError(
        E.TRANSFER_STATE_CONFLICT,
        f"the reservation was already {previous.kind} to {previous.to_account_id}",
    )


def apply_entry(
    accounts: Mapping[str, AccountSnapshot], entry: Entry, *, only_loaded: bool = False
) -> dict[str, AccountSnapshot]:
    """The accounts with the entry's postings added to their balances.

    Every account the entry touches must be in `accounts` (unless `only_loaded`: then the
    postings to others are left out) and in the entry's currency (the caller loaded the
    wrong rows otherwise: an assert). A balance that would leave the representable range is
    refused with `amount_out_of_range`; nothing is changed.
    """
    after = dict(accounts)
    for posting in entry.postings:
        account = after.get(posting.account_id)
        if account is None and only_loaded:
            continue
        assert account is not None, f"{entry.entry_id}: account {posting.account_id} not loaded"
        assert account.currency == entry.currency, (
            f"{entry.entry_id}: {entry.currency} posting to {account.currency} account"
        )
        balance_minor = account.balance_minor + posting.amount_minor
        if abs(balance_minor) > BALANCE_ABS_MAX_MINOR:
            raise SemopsError(
                E.AMOUNT_OUT_OF_RANGE,
                f"the balance of {account.account_id} would leave the representable range",
            )
        after[posting.account_id] = replace(account, balance_minor=balance_minor)
    return after


def check_limits(
    entry: Entry,
    accounts_after: Mapping[str, AccountSnapshot],
    system_ids: Collection[str] = (),
) -> None:
    """Refuse an entry whose debited customer or merchant account may not send this much.

    `accounts_after` holds the entry's accounts with the entry applied, except those named
    in `system_ids` (system accounts have no limit per entry: module docstring); a debited
    account in neither was not loaded, a bug (an assert). Called on the planned
    balances before writing and on the balances as written before committing. Only debited
    accounts are checked, so money can always arrive. A blocked limited account that sends
    is `account_blocked`; one that ends below `-overdraft` is `insufficient_funds`.
    """
    for posting in entry.postings:
        if posting.amount_minor > 0:
            continue
        account = accounts_after.get(posting.account_id)
        if account is None:
            assert posting.account_id in system_ids, f"{posting.account_id} not loaded"
        elif account.kind in LIMITED_KINDS:
            if account.status is AccountStatus.BLOCKED:
                raise SemopsError(E.ACCOUNT_BLOCKED, f"account {account.account_id} is blocked")
            if account.balance_minor < -account.overdraft_minor:
                raise SemopsError(
                    E.INSUFFICIENT_FUNDS,
                    f"account {account.account_id} cannot cover {-posting.amount_minor}",
                )


def replay_balances(entries: Iterable[Entry]) -> dict[str, int]:
    """Every account's balance from scratch: the sum of its postings (audit and tests)."""
    balances: dict[str, int] = {}
    for entry in entries:
        for posting in entry.postings:
            balances[posting.account_id] = (
                balances.get(posting.account_id, 0) + posting.amount_minor
            )
    return balances


# --- Account checks ------------------------------------------------------------------------


def _require_party(
    account: AccountSnapshot | SystemAccount,
    kinds: frozenset[AccountKind],
    currency: str,
    role: str,
) -> None:
    """A customer-chosen account: the wrong kind or currency is an operating error."""
    if account.kind not in kinds:
        allowed = ", ".join(sorted(kinds))
        raise SemopsError(
            E.VALIDATION_FAILED,
            f"the {role} account {account.account_id} is a {account.kind} account "
            f"(expected {allowed})",
        )
    if account.currency != currency:
        raise SemopsError(
            E.CURRENCY_MISMATCH,
            f"the {role} account {account.account_id} holds {account.currency}, not {currency}",
        )


def _require_system(account: SystemAccount, kind: AccountKind, currency: str) -> None:
    """A system account is picked by the caller by kind and currency: a wrong one is a bug."""
    assert account.kind is kind, f"expected the {kind} account, got {account.kind}"
    assert account.currency == currency, f"expected the {currency} {kind} account"


def _planned(entry: Entry, *accounts: AccountSnapshot | SystemAccount) -> Entry:
    """The entry, if its customer or merchant account may take it: the new balance is
    representable and, if debited, within its limits. System accounts are not checked."""
    assert {p.account_id for p in entry.postings} == {a.account_id for a in accounts}, entry
    parties = {
        account.account_id: account
        for account in accounts
        if isinstance(account, AccountSnapshot) and account.kind in LIMITED_KINDS
    }
    others = {account.account_id for account in accounts} - parties.keys()
    check_limits(entry, apply_entry(parties, entry, only_loaded=True), others)
    return entry


# --- One planning function per operation ---------------------------------------------------


def plan_reserve(payer: AccountSnapshot, suspense: SystemAccount, amount: Money, ref: str) -> Entry:
    """Hold `amount` of the payer's money in suspense for transfer `ref`."""
    check_request(ref, amount)
    _require_party(payer, LIMITED_KINDS, amount.currency, "payer")
    _require_system(suspense, AccountKind.SUSPENSE, amount.currency)
    entry = move_entry(EntryKind.RESERVE, ref, amount, payer.account_id, suspense.account_id)
    return _planned(entry, payer, suspense)


def plan_post(
    reservation: Reservation, suspense: SystemAccount, to_account: AccountSnapshot | SystemAccount
) -> Entry:
    """Complete a reservation: exactly the reserved amount, suspense -> `to_account`."""
    amount = reservation.amount
    _require_party(to_account, POST_TARGET_KINDS, amount.currency, "receiving")
    _require_system(suspense, AccountKind.SUSPENSE, amount.currency)
    entry = move_entry(
        EntryKind.POST, reservation.ref, amount, suspense.account_id, to_account.account_id
    )
    return _planned(entry, suspense, to_account)


def plan_void(reservation: Reservation, suspense: SystemAccount, payer: AccountSnapshot) -> Entry:
    """Release a reservation: exactly the reserved amount, suspense -> back to the payer."""
    amount = reservation.amount
    assert payer.account_id == reservation.payer_account_id, "void to the reserving payer"
    assert payer.currency == amount.currency, "the payer's currency was checked at reserve"
    _require_system(suspense, AccountKind.SUSPENSE, amount.currency)
    entry = move_entry(
        EntryKind.VOID, reservation.ref, amount, suspense.account_id, payer.account_id
    )
    return _planned(entry, suspense, payer)


def plan_credit_inbound(
    settlement: SystemAccount, to_account: AccountSnapshot, amount: Money, ref: str
) -> Entry:
    """Money arriving through the router: settlement -> a merchant or customer here."""
    check_request(ref, amount)
    _require_party(to_account, LIMITED_KINDS, amount.currency, "receiving")
    _require_system(settlement, AccountKind.SETTLEMENT, amount.currency)
    entry = move_entry(
        EntryKind.CREDIT_INBOUND, ref, amount, settlement.account_id, to_account.account_id
    )
    return _planned(entry, settlement, to_account)


def plan_deposit(
    account: AccountSnapshot, funding: SystemAccount, amount: Money, ref: str
) -> Entry:
    """Money entering the system from outside: funding -> the account."""
    check_request(ref, amount)
    _require_party(account, LIMITED_KINDS, amount.currency, "deposit")
    _require_system(funding, AccountKind.FUNDING, amount.currency)
    entry = move_entry(EntryKind.DEPOSIT, ref, amount, funding.account_id, account.account_id)
    return _planned(entry, funding, account)


def plan_withdraw(
    account: AccountSnapshot, funding: SystemAccount, amount: Money, ref: str
) -> Entry:
    """Money leaving the system: the account -> funding, if the account can cover it."""
    check_request(ref, amount)
    _require_party(account, LIMITED_KINDS, amount.currency, "withdrawal")
    _require_system(funding, AccountKind.FUNDING, amount.currency)
    entry = move_entry(EntryKind.WITHDRAW, ref, amount, account.account_id, funding.account_id)
    return _planned(entry, account, funding)
