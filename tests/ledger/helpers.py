"""A small processor's chart of accounts in two currencies, shared by the ledger tests."""

from __future__ import annotations

from typing import Any

import pytest

from semops.core.errors import ErrorSpec, SemopsError
from semops.core.money import Money
from semops.ledger import (
    AccountKind,
    AccountSnapshot,
    LedgerState,
    deposit,
    open_ledger,
)

EUR, USD = "EUR", "USD"
# System accounts, one of each kind per currency.
FUNDING = {EUR: "funding-eur", USD: "funding-usd"}
SETTLEMENT = {EUR: "settlement-eur", USD: "settlement-usd"}
SUSPENSE = {EUR: "suspense-eur", USD: "suspense-usd"}
# Limited accounts. The EUR merchant may overdraw by 500 (to pay refunds before sales).
ALICE, BOB, CAROL = "cust-alice", "cust-bob", "cust-carol-usd"
SHOP, STORE = "merch-shop", "merch-store-usd"
SHOP_OVERDRAFT_MINOR = 500
CURRENCY_OF = {ALICE: EUR, BOB: EUR, CAROL: USD, SHOP: EUR, STORE: USD}
LIMITED = (ALICE, BOB, CAROL, SHOP, STORE)


def chart() -> list[AccountSnapshot]:
    accounts = []
    for currency in (EUR, USD):
        accounts += [
            AccountSnapshot(FUNDING[currency], AccountKind.FUNDING, currency),
            AccountSnapshot(SETTLEMENT[currency], AccountKind.SETTLEMENT, currency),
            AccountSnapshot(SUSPENSE[currency], AccountKind.SUSPENSE, currency),
        ]
    accounts += [
        AccountSnapshot(ALICE, AccountKind.CUSTOMER, EUR),
        AccountSnapshot(BOB, AccountKind.CUSTOMER, EUR),
        AccountSnapshot(CAROL, AccountKind.CUSTOMER, USD),
        AccountSnapshot(SHOP, AccountKind.MERCHANT, EUR, overdraft_minor=SHOP_OVERDRAFT_MINOR),
        AccountSnapshot(STORE, AccountKind.MERCHANT, USD),
    ]
    return accounts


def eur(amount_minor: int) -> Money:
    return Money(amount_minor, EUR)


def usd(amount_minor: int) -> Money:
    return Money(amount_minor, USD)


def ref(number: int, prefix: str = "tr") -> str:
    """A well-formed reference (ids are 8 to 64 URL-safe characters)."""
    return f"{prefix}_{number:08d}"


def empty_ledger() -> LedgerState:
    return open_ledger(chart())


def funded_ledger() -> LedgerState:
    """Alice 10 000, Bob 0, Carol 5 000 USD, the shop 1 000, the store 0 (minor units)."""
    state = empty_ledger()
    for number, (account_id, amount) in enumerate(
        [(ALICE, eur(10_000)), (CAROL, usd(5_000)), (SHOP, eur(1_000))]
    ):
        state, _ = deposit(state, account_id, amount, ref(number, "dp"))
    return state


def frozen_copy(state: LedgerState) -> tuple[dict[str, Any], ...]:
    """Plain copies of every map of a state, to prove a refusal changed nothing."""
    return (
        dict(state.accounts),
        dict(state.reservations),
        dict(state.journal),
        dict(state.system_ids),
    )


def refused(spec: ErrorSpec, call: Any, state: LedgerState, *args: Any) -> SemopsError:
    """Call an operation that must be refused with `spec` and must leave `state` as it was."""
    before = frozen_copy(state)
    with pytest.raises(SemopsError) as caught:
        call(state, *args)
    assert caught.value.code == spec.code, caught.value
    assert frozen_copy(state) == before
    return caught.value
