"""Ledger values: an entry that does not balance cannot exist, and stored names never change.

`Entry` guards the one invariant everything else rests on -- postings in one currency that
sum to zero -- with asserts, so each malformed entry below must crash (AssertionError), not
produce an error a caller could swallow. Account snapshots and reservations come from
configuration or database rows: malformed ones are ValueErrors.
"""

from __future__ import annotations

from typing import Any

import pytest

from semops.core.limits import (
    ACCOUNT_ID_MAX_CHARS,
    AMOUNT_MAX_MINOR,
    BALANCE_ABS_MAX_MINOR,
    LEDGER_ENTRY_POSTINGS_MAX,
)
from semops.core.money import Money
from semops.ledger import (
    LIMITED_KINDS,
    SYSTEM_KINDS,
    AccountKind,
    AccountSnapshot,
    AccountStatus,
    ClosureKind,
    Entry,
    EntryKind,
    Posting,
    Reservation,
    entry_id_for,
)

REF = "tr_00000001"


def entry(*postings: tuple[str, int], **overrides: Any) -> Entry:
    fields: dict[str, Any] = {
        "entry_id": entry_id_for(REF, EntryKind.DEPOSIT),
        "kind": EntryKind.DEPOSIT,
        "transfer_ref": REF,
        "currency": "EUR",
        "postings": tuple(Posting(account, amount) for account, amount in postings),
    }
    fields.update(overrides)
    return Entry(**fields)


def test_stored_values_never_change() -> None:
    assert {kind.value for kind in AccountKind} == {
        "customer", "merchant", "suspense", "settlement", "funding",
    }  # fmt: skip
    assert {status.value for status in AccountStatus} == {"open", "blocked"}
    assert {kind.value for kind in EntryKind} == {
        "reserve", "post", "void", "credit_inbound", "deposit", "withdraw",
    }  # fmt: skip
    assert {kind.value for kind in ClosureKind} == {"posted", "voided"}
    assert set(AccountKind) == LIMITED_KINDS | SYSTEM_KINDS
    assert not LIMITED_KINDS & SYSTEM_KINDS


def test_entry_id_is_derived_from_reference_and_kind() -> None:
    assert entry_id_for(REF, EntryKind.RESERVE) == "tr_00000001:reserve"
    ids = {entry_id_for(REF, kind) for kind in EntryKind}
    assert len(ids) == len(EntryKind), "one entry per (reference, kind)"


def test_a_balanced_entry_is_built() -> None:
    built = entry(("funding", -250), ("alice", 250))
    assert built.amount_for("alice") == 250
    assert built.amount_for("funding") == -250
    assert built.amount_for("bob") == 0


def test_an_entry_may_have_several_postings_up_to_the_bound() -> None:
    many = [(f"acct-{i}", 1) for i in range(LEDGER_ENTRY_POSTINGS_MAX - 1)]
    built = entry(("source", -(LEDGER_ENTRY_POSTINGS_MAX - 1)), *many)
    assert len(built.postings) == LEDGER_ENTRY_POSTINGS_MAX


@pytest.mark.parametrize(
    ("postings", "overrides"),
    [
        pytest.param([("a", -100), ("b", 99)], {}, id="does-not-sum-to-zero"),
        pytest.param([("a", 100), ("b", 100)], {}, id="money-from-nowhere"),
        pytest.param([("a", 0), ("b", 0)], {}, id="zero-postings"),
        pytest.param([("a", 0)], {}, id="one-posting"),
        pytest.param([], {}, id="no-postings"),
        pytest.param([("a", -5), ("a", 5)], {}, id="same-account-twice"),
        pytest.param([("a", -1), ("b", True)], {}, id="bool-amount"),
        pytest.param([("a", -1.0), ("b", 1.0)], {}, id="float-amount"),
        pytest.param(
            [("a", -(AMOUNT_MAX_MINOR + 1)), ("b", AMOUNT_MAX_MINOR + 1)], {}, id="amount-too-big"
        ),
        pytest.param([("a", -1), ("b", 1)], {"currency": "XXX"}, id="unknown-currency"),
        pytest.param([("a", -1), ("b", 1)], {"entry_id": "random-id"}, id="id-not-derived"),
        pytest.param([("a", -1), ("b", 1)], {"kind": "deposit"}, id="kind-not-an-enum"),
        pytest.param(
            [(f"x{i}", 1) for i in range(LEDGER_ENTRY_POSTINGS_MAX)]
            + [("sink", -LEDGER_ENTRY_POSTINGS_MAX)],
            {},
            id="too-many-postings",
        ),
    ],
)
def test_a_broken_entry_cannot_be_built(
    postings: list[tuple[str, Any]], overrides: dict[str, Any]
) -> None:
    with pytest.raises(AssertionError):
        entry(*postings, **overrides)


def test_postings_must_be_a_tuple_of_postings() -> None:
    with pytest.raises(AssertionError):
        Entry(
            entry_id=entry_id_for(REF, EntryKind.DEPOSIT),
            kind=EntryKind.DEPOSIT,
            transfer_ref=REF,
            currency="EUR",
            postings=[Posting("a", -1), Posting("b", 1)],  # type: ignore[arg-type]
        )


def test_entries_are_immutable() -> None:
    built = entry(("a", -1), ("b", 1))
    with pytest.raises(AttributeError):
        built.postings = ()  # type: ignore[misc]


def test_account_floor_depends_on_kind() -> None:
    floors = {kind: AccountSnapshot("acct-1", kind, "EUR").floor_minor for kind in AccountKind}
    assert floors == {
        AccountKind.CUSTOMER: 0,
        AccountKind.MERCHANT: 0,
        AccountKind.SUSPENSE: 0,
        AccountKind.SETTLEMENT: None,
        AccountKind.FUNDING: None,
    }
    overdrawn = AccountSnapshot("m", AccountKind.MERCHANT, "EUR", overdraft_minor=700)
    assert overdrawn.floor_minor == -700
    assert overdrawn.is_limited
    assert not AccountSnapshot("s", AccountKind.SETTLEMENT, "EUR").is_limited


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"account_id": ""}, id="empty-id"),
        pytest.param({"account_id": "x" * (ACCOUNT_ID_MAX_CHARS + 1)}, id="long-id"),
        pytest.param({"account_id": 7}, id="id-not-a-string"),
        pytest.param({"currency": "XXX"}, id="unknown-currency"),
        pytest.param({"kind": "customer"}, id="kind-not-an-enum"),
        pytest.param({"status": "open"}, id="status-not-an-enum"),
        pytest.param({"balance_minor": 1.5}, id="float-balance"),
        pytest.param({"balance_minor": True}, id="bool-balance"),
        pytest.param({"balance_minor": BALANCE_ABS_MAX_MINOR + 1}, id="balance-too-big"),
        pytest.param({"balance_minor": -BALANCE_ABS_MAX_MINOR - 1}, id="balance-too-small"),
        pytest.param({"overdraft_minor": -1}, id="negative-overdraft"),
        pytest.param({"overdraft_minor": AMOUNT_MAX_MINOR + 1}, id="overdraft-too-big"),
        pytest.param({"kind": AccountKind.SUSPENSE, "overdraft_minor": 1}, id="suspense-overdraft"),
        pytest.param(
            {"kind": AccountKind.FUNDING, "status": AccountStatus.BLOCKED}, id="blocked-funding"
        ),
    ],
)
def test_a_malformed_account_snapshot_is_refused(fields: dict[str, Any]) -> None:
    base: dict[str, Any] = {
        "account_id": "cust-1",
        "kind": AccountKind.CUSTOMER,
        "currency": "EUR",
    }
    with pytest.raises(ValueError):
        AccountSnapshot(**{**base, **fields})


def test_extreme_but_valid_snapshots_are_accepted() -> None:
    AccountSnapshot("f", AccountKind.FUNDING, "EUR", balance_minor=-BALANCE_ABS_MAX_MINOR)
    AccountSnapshot("c", AccountKind.CUSTOMER, "EUR", overdraft_minor=AMOUNT_MAX_MINOR)
    AccountSnapshot("x" * ACCOUNT_ID_MAX_CHARS, AccountKind.CUSTOMER, "JPY")


@pytest.mark.parametrize(
    "amount",
    [Money(0, "EUR"), Money(-5, "EUR"), Money(AMOUNT_MAX_MINOR + 1, "EUR"), 100],
    ids=["zero", "negative", "too-big", "not-money"],
)
def test_a_reservation_holds_a_payable_amount(amount: Any) -> None:
    with pytest.raises(ValueError):
        Reservation(REF, "cust-1", amount)
    assert Reservation(REF, "cust-1", Money(1, "EUR")).amount == Money(1, "EUR")
