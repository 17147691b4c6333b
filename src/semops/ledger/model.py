"""The values of the ledger: accounts, postings, entries and reservations.

All of them are frozen. An `Entry` checks its own invariants when it is built (at least two
postings, one currency, signed amounts summing to zero, an id derived from its reference and
kind) with `assert`: an entry that breaks them is corrupt state, and the process must crash
rather than write or trust it. An `AccountSnapshot` or `Reservation` that is malformed is a
`ValueError`: it comes from configuration or from a database row, never from a customer.
See `semops.ledger.planning` for the theory of operation.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from semops.core.limits import (
    ACCOUNT_ID_MAX_CHARS,
    AMOUNT_MAX_MINOR,
    AMOUNT_MIN_MINOR,
    BALANCE_ABS_MAX_MINOR,
    LEDGER_ENTRY_POSTINGS_MAX,
)
from semops.core.money import CURRENCY_SCALES, Money

__all__ = [
    "LIMITED_KINDS",
    "SYSTEM_KINDS",
    "AccountKind",
    "AccountSnapshot",
    "AccountStatus",
    "Closure",
    "ClosureKind",
    "Entry",
    "EntryKind",
    "Posting",
    "Reservation",
    "SystemAccount",
    "entry_id_for",
]


class AccountKind(StrEnum):
    """What an account is for; the kind decides which limit applies to its balance."""

    CUSTOMER = "customer"  # a person's money at the processor: limited
    MERCHANT = "merchant"  # a merchant's money at the processor: limited
    SUSPENSE = "suspense"  # reservations in flight: never below zero
    SETTLEMENT = "settlement"  # the processor's position against the router: unbounded
    FUNDING = "funding"  # the outside world (deposits, withdrawals): unbounded


# Accounts that belong to a customer or merchant: they may go no lower than their overdraft,
# and a blocked one can receive but not send.
LIMITED_KINDS: Final = frozenset({AccountKind.CUSTOMER, AccountKind.MERCHANT})
# Accounts the processor keeps for itself, exactly one of each per currency. The shell picks
# them by (kind, currency), so a wrong one handed to a planning function is a bug (assert).
SYSTEM_KINDS: Final = frozenset({AccountKind.SUSPENSE, AccountKind.SETTLEMENT, AccountKind.FUNDING})


class AccountStatus(StrEnum):
    OPEN = "open"
    BLOCKED = "blocked"  # receives, never sends


class EntryKind(StrEnum):
    """What an entry does. Stored in databases: values never change once released."""

    RESERVE = "reserve"  # payer -> suspense
    POST = "post"  # suspense -> settlement, merchant or customer
    VOID = "void"  # suspense -> payer
    CREDIT_INBOUND = "credit_inbound"  # settlement -> merchant or customer
    DEPOSIT = "deposit"  # funding -> account
    WITHDRAW = "withdraw"  # account -> funding


def entry_id_for(transfer_ref: str, kind: EntryKind) -> str:
    """The one id an entry of this kind for this reference can have.

    Deriving the id (instead of taking a random one) makes "one entry per (reference, kind)"
    a unique key in the database: a retried operation finds its own earlier entry.
    """
    return f"{transfer_ref}:{kind.value}"


def _check_account_id(account_id: str) -> None:
    if not isinstance(account_id, str) or not 1 <= len(account_id) <= ACCOUNT_ID_MAX_CHARS:
        raise ValueError(f"an account id is 1 to {ACCOUNT_ID_MAX_CHARS} characters")


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """One account as read at one moment: what a planning function needs to decide.

    `balance_minor` is the sum of the account's postings when the snapshot was taken.
    `overdraft_minor` (limited kinds only) lets the balance go down to `-overdraft_minor`.
    """

    account_id: str
    kind: AccountKind
    currency: str
    balance_minor: int = 0
    overdraft_minor: int = 0
    status: AccountStatus = AccountStatus.OPEN

    def __post_init__(self) -> None:
        _check_account_id(self.account_id)
        if not isinstance(self.kind, AccountKind) or not isinstance(self.status, AccountStatus):
            raise ValueError("kind and status must be AccountKind and AccountStatus values")
        if self.currency not in CURRENCY_SCALES:
            raise ValueError(f"account {self.account_id}: currency is not supported")
        if type(self.balance_minor) is not int or abs(self.balance_minor) > BALANCE_ABS_MAX_MINOR:
            raise ValueError(f"account {self.account_id}: balance is not a representable int")
        if type(self.overdraft_minor) is not int or not (
            0 <= self.overdraft_minor <= AMOUNT_MAX_MINOR
        ):
            raise ValueError(f"account {self.account_id}: overdraft must be 0..AMOUNT_MAX_MINOR")
        if self.kind in SYSTEM_KINDS and (
            self.overdraft_minor != 0 or self.status is not AccountStatus.OPEN
        ):
            raise ValueError(f"{self.kind} account {self.account_id}: no overdraft, always open")

    @property
    def is_limited(self) -> bool:
        return self.kind in LIMITED_KINDS

    @property
    def floor_minor(self) -> int | None:
        """The lowest balance allowed, or None for the unbounded kinds."""
        if self.kind in LIMITED_KINDS:
            return -self.overdraft_minor
        if self.kind is AccountKind.SUSPENSE:
            return 0
        return None


@dataclass(frozen=True, slots=True)
class SystemAccount:
    """A suspense, settlement or funding account as a decision sees it: which one, not its
    balance. No decision depends on a system balance (every payment moves them, so none is
    read or written per payment): suspense is the sum of the open reservations by
    construction, and that is checked over the whole ledger (`check_invariants`), not per
    entry."""

    account_id: str
    kind: AccountKind
    currency: str

    def __post_init__(self) -> None:
        _check_account_id(self.account_id)
        if self.kind not in SYSTEM_KINDS or self.currency not in CURRENCY_SCALES:
            raise ValueError(f"{self.account_id}: not a system account of a known currency")


@dataclass(frozen=True, slots=True)
class Posting:
    """A signed change to one account's balance: positive money in, negative money out."""

    account_id: str
    amount_minor: int


@dataclass(frozen=True, slots=True)
class Entry:
    """An immutable, balanced set of postings in one currency; corrections are new entries."""

    entry_id: str
    kind: EntryKind
    transfer_ref: str
    currency: str
    postings: tuple[Posting, ...]

    def __post_init__(self) -> None:
        # Asserts, not errors: an unbalanced entry is corrupt state and must never be written
        # or trusted (STYLE.md "Result codes in a fixed order").
        assert isinstance(self.kind, EntryKind), self.kind
        assert self.entry_id == entry_id_for(self.transfer_ref, self.kind), self.entry_id
        assert self.currency in CURRENCY_SCALES, self.currency
        assert isinstance(self.postings, tuple), "postings are a tuple"
        assert 2 <= len(self.postings) <= LEDGER_ENTRY_POSTINGS_MAX, len(self.postings)
        for posting in self.postings:
            assert isinstance(posting, Posting), posting
            assert type(posting.amount_minor) is int, posting
            assert posting.amount_minor != 0, f"{self.entry_id}: a zero posting"
            assert abs(posting.amount_minor) <= AMOUNT_MAX_MINOR, posting
        accounts = [posting.account_id for posting in self.postings]
        assert len(set(accounts)) == len(accounts), f"{self.entry_id}: account posted twice"
        total = sum(posting.amount_minor for posting in self.postings)
        assert total == 0, f"{self.entry_id}: postings sum to {total}, not zero"

    def amount_for(self, account_id: str) -> int:
        """The signed change this entry makes to one account (0 if it does not touch it)."""
        return sum(p.amount_minor for p in self.postings if p.account_id == account_id)


@dataclass(frozen=True, slots=True)
class Reservation:
    """Money held in suspense for one transfer, until it is posted or voided."""

    ref: str
    payer_account_id: str
    amount: Money

    def __post_init__(self) -> None:
        _check_account_id(self.payer_account_id)
        if not isinstance(self.amount, Money) or not (
            AMOUNT_MIN_MINOR <= self.amount.amount_minor <= AMOUNT_MAX_MINOR
        ):
            raise ValueError(f"reservation {self.ref}: amount is not a payable Money")


class ClosureKind(StrEnum):
    POSTED = "posted"
    VOIDED = "voided"


@dataclass(frozen=True, slots=True)
class Closure:
    """How a reservation ended: posted to an account, or voided back to the payer."""

    kind: ClosureKind
    to_account_id: str
