"""The in-memory ledger: a `LedgerState` value, and operations that return the next one.

Each operation takes a state and returns `(new_state, entry)`, or `(state, None)` when the
request repeats one already done (nothing new is written), or raises the operating error;
the state passed in is never changed, so a refused operation leaves everything as it was.
The decisions themselves are the `plan_*` functions of `semops.ledger.planning` (read its
theory of operation); this module only finds the accounts they need, answers repeats from
the journal, and folds the planned entry into the next state. It is the model the property
tests drive and the reference the database shell must agree with.

A state holds the accounts (with their balances), the open reservations and the journal of
every entry applied, keyed by entry id in the order applied. Whether a reservation was
posted or voided is read from the journal, not kept beside it, so there is one source of
truth; `check_invariants` recomputes everything from the journal and asserts it agrees.
Every operation copies the maps it changes, so it costs O(size of the journal): this is a
model and a demo ledger, not the production store (the database shell keeps the journal in
a table).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TypeAlias

from semops.core.errors import E, SemopsError
from semops.core.money import Money
from semops.ledger.model import (
    LIMITED_KINDS,
    SYSTEM_KINDS,
    AccountKind,
    AccountSnapshot,
    AccountStatus,
    Closure,
    ClosureKind,
    Entry,
    EntryKind,
    Reservation,
    SystemAccount,
    entry_id_for,
)
from semops.ledger.planning import (
    check_closing,
    check_repeat,
    check_request,
    move_entry,
    plan_credit_inbound,
    plan_deposit,
    plan_post,
    plan_reserve,
    plan_void,
    plan_withdraw,
    replay_balances,
)

__all__ = [
    "LedgerState",
    "Outcome",
    "add_account",
    "check_invariants",
    "credit_inbound",
    "customer_money",
    "deposit",
    "open_ledger",
    "post_reserved",
    "reserve",
    "set_account_status",
    "trial_balance",
    "void_reserved",
    "withdraw",
]

# The kinds whose balances are money held for customers and merchants, including money
# reserved for them in flight: what conservation checks compare with deposits - withdrawals.
_CUSTOMER_MONEY_KINDS = frozenset(LIMITED_KINDS | {AccountKind.SUSPENSE})


def _frozen(mapping: dict[str, AccountSnapshot]) -> Mapping[str, AccountSnapshot]:
    return MappingProxyType(mapping)


@dataclass(frozen=True, slots=True)
class LedgerState:
    """Accounts with balances, open reservations (ref -> Reservation) and the journal."""

    accounts: Mapping[str, AccountSnapshot] = field(default_factory=lambda: MappingProxyType({}))
    reservations: Mapping[str, Reservation] = field(default_factory=lambda: MappingProxyType({}))
    journal: Mapping[str, Entry] = field(default_factory=lambda: MappingProxyType({}))
    # (kind, currency) -> account id of the one suspense, settlement and funding account.
    system_ids: Mapping[tuple[AccountKind, str], str] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def account(self, account_id: str) -> AccountSnapshot:
        """The account, or `account_unknown`."""
        account = self.accounts.get(account_id) if isinstance(account_id, str) else None
        if account is None:
            raise SemopsError(E.ACCOUNT_UNKNOWN, "no such account")
        return account

    def balance_of(self, account_id: str) -> int:
        return self.account(account_id).balance_minor

    def system_account(self, kind: AccountKind, currency: str) -> SystemAccount:
        """The suspense, settlement or funding account of a currency the ledger holds (its
        balance: `balance_of`)."""
        account_id = self.system_ids.get((kind, currency))
        assert account_id is not None, f"no {currency} {kind} account"
        return SystemAccount(account_id, kind, currency)

    def closure_of(self, ref: str) -> Closure | None:
        """How the reservation `ref` was closed, read from the journal; None if it was not."""
        for entry_kind, closure_kind in (
            (EntryKind.POST, ClosureKind.POSTED),
            (EntryKind.VOID, ClosureKind.VOIDED),
        ):
            entry = self.journal.get(entry_id_for(ref, entry_kind))
            if entry is not None:
                return Closure(closure_kind, _credited_account(entry))
        return None


Outcome: TypeAlias = tuple[LedgerState, Entry | None]


def _credited_account(entry: Entry) -> str:
    (credited,) = (p.account_id for p in entry.postings if p.amount_minor > 0)
    return credited


def _moved_minor(entry: Entry) -> int:
    return sum(p.amount_minor for p in entry.postings if p.amount_minor > 0)


def _debited_account(entry: Entry) -> str:
    (debited,) = (p.account_id for p in entry.postings if p.amount_minor < 0)
    return debited


# --- Accounts ------------------------------------------------------------------------------


def add_account(state: LedgerState, account: AccountSnapshot) -> LedgerState:
    """Open an account. It starts empty (balances come only from postings); a currency's
    suspense, settlement and funding accounts come before its first limited account."""
    if account.account_id in state.accounts:
        raise ValueError(f"account {account.account_id} already exists")
    if account.balance_minor != 0:
        raise ValueError(f"account {account.account_id}: a new account starts at zero")
    system_ids = dict(state.system_ids)
    if account.kind in SYSTEM_KINDS:
        if (account.kind, account.currency) in system_ids:
            raise ValueError(f"there is already a {account.currency} {account.kind} account")
        system_ids[(account.kind, account.currency)] = account.account_id
    else:
        missing = sorted(k for k in SYSTEM_KINDS if (k, account.currency) not in system_ids)
        if missing:
            raise ValueError(f"open the {account.currency} {', '.join(missing)} accounts first")
    return replace(
        state,
        accounts=_frozen({**state.accounts, account.account_id: account}),
        system_ids=MappingProxyType(system_ids),
    )


def open_ledger(accounts: Iterable[AccountSnapshot]) -> LedgerState:
    """A ledger with these accounts (system accounts are opened first) and no entries."""
    state = LedgerState()
    for account in sorted(accounts, key=lambda account: account.kind not in SYSTEM_KINDS):
        state = add_account(state, account)
    return state


def set_account_status(state: LedgerState, account_id: str, status: AccountStatus) -> LedgerState:
    """Block or unblock a customer or merchant account (system accounts are always open)."""
    account = state.account(account_id)
    if account.kind not in LIMITED_KINDS:
        raise ValueError(f"{account.kind} accounts cannot be blocked")
    changed = replace(account, status=status)
    return replace(state, accounts=_frozen({**state.accounts, account_id: changed}))


# --- Operations ----------------------------------------------------------------------------


def _commit(
    state: LedgerState, entry: Entry, reservations: Mapping[str, Reservation] | None = None
) -> LedgerState:
    """Fold a planned entry into the next state (the planning function already checked it)."""
    assert entry.entry_id not in state.journal, f"{entry.entry_id} is already in the journal"
    accounts = dict(state.accounts)
    for posting in entry.postings:
        account = accounts[posting.account_id]
        accounts[posting.account_id] = replace(
            account, balance_minor=account.balance_minor + posting.amount_minor
        )
    return replace(
        state,
        accounts=_frozen(accounts),
        reservations=state.reservations if reservations is None else reservations,
        journal=MappingProxyType({**state.journal, entry.entry_id: entry}),
    )


def _is_repeat(
    state: LedgerState,
    kind: EntryKind,
    ref: str,
    amount: Money,
    from_account_id: str | None,
    to_account_id: str | None,
) -> bool:
    """True if this exact operation is already in the journal; a different one under the
    same reference and kind is `idempotency_conflict`; False if there is none."""
    stored = state.journal.get(entry_id_for(ref, kind))
    if stored is None:
        return False
    if from_account_id is None or to_account_id is None or from_account_id == to_account_id:
        raise SemopsError(E.IDEMPOTENCY_CONFLICT, f"{kind} {ref} was made with other content")
    check_repeat(stored, move_entry(kind, ref, amount, from_account_id, to_account_id))
    return True


def _reserved_payer(state: LedgerState, ref: str) -> str:
    """The payer of reservation `ref`, open or closed; `transfer_state_conflict` if none."""
    open_reservation = state.reservations.get(ref)
    if open_reservation is not None:
        return open_reservation.payer_account_id
    reserved = state.journal.get(entry_id_for(ref, EntryKind.RESERVE))
    if reserved is None:
        raise SemopsError(E.TRANSFER_STATE_CONFLICT, f"there is no reservation {ref}")
    return _debited_account(reserved)


def reserve(state: LedgerState, payer_id: str, amount: Money, ref: str) -> Outcome:
    """Hold `amount` of the payer's money in suspense for transfer (or refund) `ref`."""
    check_request(ref, amount)
    suspense_id = state.system_ids.get((AccountKind.SUSPENSE, amount.currency))
    if _is_repeat(state, EntryKind.RESERVE, ref, amount, payer_id, suspense_id):
        return state, None
    payer = state.account(payer_id)
    suspense = state.system_account(AccountKind.SUSPENSE, payer.currency)
    entry = plan_reserve(payer, suspense, amount, ref)
    reservations = {**state.reservations, ref: Reservation(ref, payer_id, amount)}
    return _commit(state, entry, MappingProxyType(reservations)), entry


def post_reserved(state: LedgerState, ref: str, to_account_id: str) -> Outcome:
    """Complete reservation `ref`: the reserved amount goes to `to_account_id`
    (settlement for a routed payment, the merchant or customer for an on-us one)."""
    check_request(ref)
    _reserved_payer(state, ref)
    if not check_closing(state.closure_of(ref), Closure(ClosureKind.POSTED, to_account_id)):
        return state, None
    reservation = state.reservations[ref]
    to_account = state.account(to_account_id)
    suspense = state.system_account(AccountKind.SUSPENSE, reservation.amount.currency)
    entry = plan_post(reservation, suspense, to_account)
    return _commit(state, entry, _without(state.reservations, ref)), entry


def void_reserved(state: LedgerState, ref: str) -> Outcome:
    """Release reservation `ref`: the reserved amount goes back to the payer."""
    check_request(ref)
    payer_id = _reserved_payer(state, ref)
    if not check_closing(state.closure_of(ref), Closure(ClosureKind.VOIDED, payer_id)):
        return state, None
    reservation = state.reservations[ref]
    suspense = state.system_account(AccountKind.SUSPENSE, reservation.amount.currency)
    entry = plan_void(reservation, suspense, state.account(payer_id))
    return _commit(state, entry, _without(state.reservations, ref)), entry


def _without(reservations: Mapping[str, Reservation], ref: str) -> Mapping[str, Reservation]:
    return MappingProxyType({key: value for key, value in reservations.items() if key != ref})


def credit_inbound(state: LedgerState, ref: str, to_account_id: str, amount: Money) -> Outcome:
    """Money arriving through the router for `to_account_id` (a payment or a refund)."""
    check_request(ref, amount)
    settlement_id = state.system_ids.get((AccountKind.SETTLEMENT, amount.currency))
    if _is_repeat(state, EntryKind.CREDIT_INBOUND, ref, amount, settlement_id, to_account_id):
        return state, None
    to_account = state.account(to_account_id)
    settlement = state.system_account(AccountKind.SETTLEMENT, to_account.currency)
    entry = plan_credit_inbound(settlement, to_account, amount, ref)
    return _commit(state, entry), entry


def deposit(state: LedgerState, account_id: str, amount: Money, ref: str) -> Outcome:
    """Money entering the system from outside into `account_id`."""
    check_request(ref, amount)
    funding_id = state.system_ids.get((AccountKind.FUNDING, amount.currency))
    if _is_repeat(state, EntryKind.DEPOSIT, ref, amount, funding_id, account_id):
        return state, None
    account = state.account(account_id)
    funding = state.system_account(AccountKind.FUNDING, account.currency)
    entry = plan_deposit(account, funding, amount, ref)
    return _commit(state, entry), entry


def withdraw(state: LedgerState, account_id: str, amount: Money, ref: str) -> Outcome:
    """Money leaving the system from `account_id`, if the account can cover it."""
    check_request(ref, amount)
    funding_id = state.system_ids.get((AccountKind.FUNDING, amount.currency))
    if _is_repeat(state, EntryKind.WITHDRAW, ref, amount, account_id, funding_id):
        return state, None
    account = state.account(account_id)
    funding = state.system_account(AccountKind.FUNDING, account.currency)
    entry = plan_withdraw(account, funding, amount, ref)
    return _commit(state, entry), entry


# --- Whole-ledger views and invariants -----------------------------------------------------


def trial_balance(state: LedgerState) -> dict[str, int]:
    """Per currency, the sum of every account's balance: always exactly zero."""
    totals: dict[str, int] = {}
    for account in state.accounts.values():
        totals[account.currency] = totals.get(account.currency, 0) + account.balance_minor
    return totals


def customer_money(state: LedgerState) -> dict[str, int]:
    """Per currency, the money held for customers and merchants, reserved money included.

    Because the trial balance is zero this equals -(funding + settlement): deposits minus
    withdrawals plus the net money that arrived through the router.
    """
    totals: dict[str, int] = {currency: 0 for _, currency in state.system_ids}
    for account in state.accounts.values():
        if account.kind in _CUSTOMER_MONEY_KINDS:
            totals[account.currency] += account.balance_minor
    return totals


def check_invariants(state: LedgerState) -> None:
    """Recompute everything from the journal and assert the state agrees (audit, tests).

    A failure here is corrupt state, never an operating error: it raises AssertionError.
    """
    for entry in state.journal.values():
        assert sum(p.amount_minor for p in entry.postings) == 0, entry.entry_id
        for posting in entry.postings:
            assert state.accounts[posting.account_id].currency == entry.currency, entry.entry_id
    replayed = replay_balances(state.journal.values())
    assert set(replayed) <= set(state.accounts), "postings to unknown accounts"
    for account in state.accounts.values():
        assert account.balance_minor == replayed.get(account.account_id, 0), account.account_id
        floor = account.floor_minor
        assert floor is None or account.balance_minor >= floor, account.account_id
    _check_reservations(state)
    assert all(total == 0 for total in trial_balance(state).values()), trial_balance(state)


def _check_reservations(state: LedgerState) -> None:
    held: dict[str, int] = {}
    for ref, reservation in state.reservations.items():
        assert reservation.ref == ref, ref
        stored = state.journal.get(entry_id_for(ref, EntryKind.RESERVE))
        assert stored is not None, f"open reservation {ref} has no reserve entry"
        assert _debited_account(stored) == reservation.payer_account_id, ref
        assert stored.currency == reservation.amount.currency, ref
        assert _moved_minor(stored) == reservation.amount.amount_minor, ref
        assert state.closure_of(ref) is None, f"reservation {ref} is open and closed"
        currency = reservation.amount.currency
        held[currency] = held.get(currency, 0) + reservation.amount.amount_minor
    for entry in state.journal.values():
        if entry.kind is EntryKind.RESERVE and entry.transfer_ref not in state.reservations:
            assert state.closure_of(entry.transfer_ref) is not None, entry.entry_id
        if entry.kind in (EntryKind.POST, EntryKind.VOID):
            reserved = state.journal.get(entry_id_for(entry.transfer_ref, EntryKind.RESERVE))
            assert reserved is not None, f"{entry.entry_id} closes no reservation"
            assert _moved_minor(entry) == _moved_minor(reserved), entry.entry_id
            assert entry.currency == reserved.currency, entry.entry_id
            if entry.kind is EntryKind.VOID:
                assert _credited_account(entry) == _debited_account(reserved), entry.entry_id
        if entry.kind is EntryKind.POST:
            void_id = entry_id_for(entry.transfer_ref, EntryKind.VOID)
            assert void_id not in state.journal, f"{entry.transfer_ref} posted and voided"
    for (kind, currency), account_id in state.system_ids.items():
        if kind is AccountKind.SUSPENSE:
            balance = state.accounts[account_id].balance_minor
            assert balance == held.get(currency, 0), f"{currency} suspense != reservations"
