"""The in-memory ledger: every operation, every refusal, and retries.

Each refusal is checked through `refused`, which also proves the state passed in is exactly
as it was. The payment flows at the end are the ones DESIGN.md §3 describes, written as
ledger operations at one processor.
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import pytest

from semops.core.errors import E, ErrorSpec, SemopsError
from semops.core.limits import AMOUNT_MAX_MINOR
from semops.core.money import Money
from semops.ledger import (
    AccountKind,
    AccountSnapshot,
    AccountStatus,
    Closure,
    ClosureKind,
    EntryKind,
    LedgerState,
    Posting,
    Reservation,
    add_account,
    check_invariants,
    credit_inbound,
    customer_money,
    deposit,
    open_ledger,
    post_reserved,
    reserve,
    set_account_status,
    trial_balance,
    void_reserved,
    withdraw,
)

from .helpers import (
    ALICE,
    BOB,
    CAROL,
    EUR,
    FUNDING,
    SETTLEMENT,
    SHOP,
    SHOP_OVERDRAFT_MINOR,
    STORE,
    SUSPENSE,
    USD,
    chart,
    empty_ledger,
    eur,
    frozen_copy,
    funded_ledger,
    ref,
    refused,
    usd,
)

T1, T2 = ref(1), ref(2)


def balances(state: LedgerState, *account_ids: str) -> tuple[int, ...]:
    return tuple(state.balance_of(account_id) for account_id in account_ids)


# --- Opening a ledger ------------------------------------------------------------------------


def test_a_new_ledger_is_empty_and_balanced() -> None:
    state = empty_ledger()
    assert all(account.balance_minor == 0 for account in state.accounts.values())
    assert state.reservations == {} and state.journal == {}
    assert trial_balance(state) == {EUR: 0, USD: 0}
    assert customer_money(state) == {EUR: 0, USD: 0}
    check_invariants(state)


def test_system_accounts_are_found_by_kind_and_currency() -> None:
    state = empty_ledger()
    assert state.system_account(AccountKind.SUSPENSE, USD).account_id == SUSPENSE[USD]
    assert state.system_account(AccountKind.FUNDING, EUR).account_id == FUNDING[EUR]
    with pytest.raises(AssertionError):
        state.system_account(AccountKind.FUNDING, "JPY")


def test_opening_refuses_a_bad_chart() -> None:
    accounts = chart()
    with pytest.raises(ValueError, match="already exists"):
        open_ledger([*accounts, AccountSnapshot(ALICE, AccountKind.CUSTOMER, EUR)])
    with pytest.raises(ValueError, match="starts at zero"):
        open_ledger([*accounts, AccountSnapshot("cust-rich", AccountKind.CUSTOMER, EUR, 5)])
    with pytest.raises(ValueError, match="already a EUR suspense"):
        open_ledger([*accounts, AccountSnapshot("suspense-2", AccountKind.SUSPENSE, EUR)])
    with pytest.raises(ValueError, match="GBP"):
        open_ledger([*accounts, AccountSnapshot("cust-gbp", AccountKind.CUSTOMER, "GBP")])
    without_funding = [a for a in accounts if a.account_id != FUNDING[USD]]
    with pytest.raises(ValueError, match="funding"):
        open_ledger(without_funding)


def test_accounts_can_be_added_later_once_their_currency_is_set_up() -> None:
    state = add_account(empty_ledger(), AccountSnapshot("cust-dave", AccountKind.CUSTOMER, EUR))
    state, _ = deposit(state, "cust-dave", eur(3), ref(9, "dp"))
    assert state.balance_of("cust-dave") == 3
    check_invariants(state)


def test_unknown_accounts_are_account_unknown() -> None:
    state = empty_ledger()
    for account_id in ("nobody", "", 42):
        with pytest.raises(SemopsError) as caught:
            state.account(account_id)  # type: ignore[arg-type]
        assert caught.value.code == E.ACCOUNT_UNKNOWN.code


# --- deposit and withdraw --------------------------------------------------------------------


def test_deposit_moves_money_in_from_funding() -> None:
    state, entry = deposit(empty_ledger(), BOB, eur(250), ref(1, "dp"))
    assert entry is not None and entry.kind is EntryKind.DEPOSIT
    assert entry.postings == (Posting(FUNDING[EUR], -250), Posting(BOB, 250))
    assert balances(state, BOB, FUNDING[EUR]) == (250, -250)
    assert list(state.journal.values()) == [entry]
    assert customer_money(state) == {EUR: 250, USD: 0}
    check_invariants(state)


def test_withdraw_moves_money_out_to_funding() -> None:
    state, entry = withdraw(funded_ledger(), ALICE, eur(10_000), ref(1, "wd"))
    assert entry is not None and entry.postings == (
        Posting(ALICE, -10_000),
        Posting(FUNDING[EUR], 10_000),
    )
    assert balances(state, ALICE, FUNDING[EUR]) == (0, -1_000)
    check_invariants(state)


@pytest.mark.parametrize(
    ("spec", "account_id", "amount", "reference"),
    [
        (E.ACCOUNT_UNKNOWN, "nobody", eur(1), ref(5, "dp")),
        (E.VALIDATION_FAILED, SETTLEMENT[EUR], eur(1), ref(5, "dp")),
        (E.VALIDATION_FAILED, FUNDING[EUR], eur(1), ref(5, "dp")),
        (E.CURRENCY_MISMATCH, ALICE, usd(1), ref(5, "dp")),
        (E.CURRENCY_MISMATCH, ALICE, Money(1, "GBP"), ref(5, "dp")),
        (E.AMOUNT_OUT_OF_RANGE, ALICE, eur(0), ref(5, "dp")),
        (E.AMOUNT_OUT_OF_RANGE, ALICE, eur(AMOUNT_MAX_MINOR + 1), ref(5, "dp")),
        (E.VALIDATION_FAILED, ALICE, eur(1), "dp-1"),
    ],
    ids=[
        "unknown", "settlement", "funding", "currency", "currency-not-held", "zero", "too-big",
        "bad-ref",
    ],
)  # fmt: skip
def test_deposit_refusals(spec: ErrorSpec, account_id: str, amount: object, reference: str) -> None:
    refused(spec, deposit, funded_ledger(), account_id, amount, reference)


@pytest.mark.parametrize(
    ("spec", "account_id", "amount"),
    [
        (E.INSUFFICIENT_FUNDS, ALICE, eur(10_001)),
        (E.INSUFFICIENT_FUNDS, BOB, eur(1)),
        (E.ACCOUNT_UNKNOWN, "nobody", eur(1)),
        (E.CURRENCY_MISMATCH, CAROL, eur(1)),
        (E.VALIDATION_FAILED, SUSPENSE[EUR], eur(1)),
    ],
    ids=["over-balance", "empty", "unknown", "currency", "suspense"],
)
def test_withdraw_refusals(spec: ErrorSpec, account_id: str, amount: object) -> None:
    refused(spec, withdraw, funded_ledger(), account_id, amount, ref(5, "wd"))


def test_a_blocked_account_receives_but_cannot_withdraw() -> None:
    state = set_account_status(funded_ledger(), ALICE, AccountStatus.BLOCKED)
    refused(E.ACCOUNT_BLOCKED, withdraw, state, ALICE, eur(1), ref(5, "wd"))
    state, _ = deposit(state, ALICE, eur(1), ref(5, "dp"))
    assert state.balance_of(ALICE) == 10_001
    state = set_account_status(state, ALICE, AccountStatus.OPEN)
    state, entry = withdraw(state, ALICE, eur(1), ref(5, "wd"))
    assert entry is not None


def test_status_changes_are_for_limited_accounts_only() -> None:
    state = empty_ledger()
    with pytest.raises(ValueError):
        set_account_status(state, SETTLEMENT[EUR], AccountStatus.BLOCKED)
    with pytest.raises(SemopsError):
        set_account_status(state, "nobody", AccountStatus.BLOCKED)


# --- reserve -----------------------------------------------------------------------------------


def test_reserve_moves_money_to_suspense_and_records_the_reservation() -> None:
    state, entry = reserve(funded_ledger(), ALICE, eur(3_000), T1)
    assert entry is not None and entry.kind is EntryKind.RESERVE
    assert entry.postings == (Posting(ALICE, -3_000), Posting(SUSPENSE[EUR], 3_000))
    assert balances(state, ALICE, SUSPENSE[EUR]) == (7_000, 3_000)
    assert state.reservations == {T1: Reservation(T1, ALICE, eur(3_000))}
    assert state.closure_of(T1) is None
    # Reserved money is still customer money: it has not left the processor.
    assert customer_money(state)[EUR] == 11_000
    check_invariants(state)


@pytest.mark.parametrize(
    ("spec", "payer", "amount"),
    [
        (E.INSUFFICIENT_FUNDS, ALICE, eur(10_001)),
        (E.INSUFFICIENT_FUNDS, SHOP, eur(1_000 + SHOP_OVERDRAFT_MINOR + 1)),
        (E.ACCOUNT_UNKNOWN, "nobody", eur(1)),
        (E.VALIDATION_FAILED, SETTLEMENT[EUR], eur(1)),
        (E.VALIDATION_FAILED, FUNDING[USD], usd(1)),
        (E.CURRENCY_MISMATCH, ALICE, usd(1)),
        (E.AMOUNT_OUT_OF_RANGE, ALICE, eur(0)),
    ],
    ids=["funds", "overdraft", "unknown", "settlement", "funding", "currency", "zero"],
)
def test_reserve_refusals(spec: ErrorSpec, payer: str, amount: object) -> None:
    refused(spec, reserve, funded_ledger(), payer, amount, T1)


def test_reserve_by_a_blocked_payer_is_refused() -> None:
    state = set_account_status(funded_ledger(), ALICE, AccountStatus.BLOCKED)
    refused(E.ACCOUNT_BLOCKED, reserve, state, ALICE, eur(1), T1)


def test_reserved_money_cannot_be_spent_twice() -> None:
    state, _ = reserve(funded_ledger(), ALICE, eur(6_000), T1)
    refused(E.INSUFFICIENT_FUNDS, reserve, state, ALICE, eur(4_001), T2)
    refused(E.INSUFFICIENT_FUNDS, withdraw, state, ALICE, eur(4_001), ref(3, "wd"))
    state, entry = reserve(state, ALICE, eur(4_000), T2)
    assert entry is not None and state.balance_of(ALICE) == 0


def test_a_merchant_reserves_into_its_overdraft() -> None:
    state, _ = reserve(funded_ledger(), SHOP, eur(1_000 + SHOP_OVERDRAFT_MINOR), T1)
    assert state.balance_of(SHOP) == -SHOP_OVERDRAFT_MINOR
    check_invariants(state)


# --- post and void ----------------------------------------------------------------------------


def reserved() -> LedgerState:
    state, _ = reserve(funded_ledger(), ALICE, eur(3_000), T1)
    return state


@pytest.mark.parametrize("target", [SETTLEMENT[EUR], SHOP, BOB])
def test_post_moves_exactly_the_reserved_amount(target: str) -> None:
    state, entry = post_reserved(reserved(), T1, target)
    assert entry is not None and entry.kind is EntryKind.POST
    assert entry.postings == (Posting(SUSPENSE[EUR], -3_000), Posting(target, 3_000))
    assert state.reservations == {}
    assert state.balance_of(SUSPENSE[EUR]) == 0
    assert state.balance_of(ALICE) == 7_000
    assert state.closure_of(T1) == Closure(ClosureKind.POSTED, target)
    check_invariants(state)


def test_void_returns_exactly_the_reserved_amount() -> None:
    state, entry = void_reserved(reserved(), T1)
    assert entry is not None and entry.kind is EntryKind.VOID
    assert entry.postings == (Posting(SUSPENSE[EUR], -3_000), Posting(ALICE, 3_000))
    assert balances(state, ALICE, SUSPENSE[EUR]) == (10_000, 0)
    assert state.closure_of(T1) == Closure(ClosureKind.VOIDED, ALICE)
    check_invariants(state)


def test_a_payer_blocked_after_reserving_still_completes_or_gets_money_back() -> None:
    state = set_account_status(reserved(), ALICE, AccountStatus.BLOCKED)
    posted, entry = post_reserved(state, T1, SETTLEMENT[EUR])
    assert entry is not None and posted.balance_of(SETTLEMENT[EUR]) == 3_000
    voided, entry = void_reserved(state, T1)
    assert entry is not None and voided.balance_of(ALICE) == 10_000


@pytest.mark.parametrize(
    ("spec", "reference", "target"),
    [
        (E.TRANSFER_STATE_CONFLICT, T2, SETTLEMENT[EUR]),
        (E.ACCOUNT_UNKNOWN, T1, "nobody"),
        (E.VALIDATION_FAILED, T1, FUNDING[EUR]),
        (E.VALIDATION_FAILED, T1, SUSPENSE[EUR]),
        (E.CURRENCY_MISMATCH, T1, STORE),
        (E.CURRENCY_MISMATCH, T1, SETTLEMENT[USD]),
        (E.VALIDATION_FAILED, "bad", SHOP),
    ],
    ids=["no-reservation", "unknown", "funding", "suspense", "usd-store", "usd-settle", "ref"],
)
def test_post_refusals(spec: ErrorSpec, reference: str, target: str) -> None:
    refused(spec, post_reserved, reserved(), reference, target)


def test_void_of_an_unknown_reservation_is_refused() -> None:
    refused(E.TRANSFER_STATE_CONFLICT, void_reserved, reserved(), T2)
    refused(E.VALIDATION_FAILED, void_reserved, reserved(), "bad")


# --- idempotency -----------------------------------------------------------------------------


def test_posting_the_same_reservation_twice_writes_one_entry() -> None:
    state, first = post_reserved(reserved(), T1, SETTLEMENT[EUR])
    again, second = post_reserved(state, T1, SETTLEMENT[EUR])
    assert first is not None and second is None
    assert again is state
    assert len([e for e in again.journal.values() if e.kind is EntryKind.POST]) == 1


def test_voiding_twice_writes_one_entry() -> None:
    state, _ = void_reserved(reserved(), T1)
    again, second = void_reserved(state, T1)
    assert second is None and again is state


def test_conflicting_outcomes_are_refused() -> None:
    posted, _ = post_reserved(reserved(), T1, SETTLEMENT[EUR])
    refused(E.TRANSFER_STATE_CONFLICT, void_reserved, posted, T1)
    refused(E.TRANSFER_STATE_CONFLICT, post_reserved, posted, T1, SHOP)
    refused(E.TRANSFER_STATE_CONFLICT, post_reserved, posted, T1, "nobody")
    voided, _ = void_reserved(reserved(), T1)
    refused(E.TRANSFER_STATE_CONFLICT, post_reserved, voided, T1, SETTLEMENT[EUR])


def test_a_repeated_reserve_is_a_no_op_even_after_it_was_closed() -> None:
    state = reserved()
    again, entry = reserve(state, ALICE, eur(3_000), T1)
    assert entry is None and again is state
    voided, _ = void_reserved(state, T1)
    again, entry = reserve(voided, ALICE, eur(3_000), T1)
    assert entry is None and again is voided, "a late retry must not reserve again"


@pytest.mark.parametrize(
    ("payer", "amount"),
    [(ALICE, eur(3_001)), (BOB, eur(3_000)), (CAROL, usd(3_000)), ("nobody", eur(3_000))],
    ids=["amount", "payer", "currency", "unknown-payer"],
)
def test_the_same_reference_with_other_content_is_an_idempotency_conflict(
    payer: str, amount: object
) -> None:
    refused(E.IDEMPOTENCY_CONFLICT, reserve, reserved(), payer, amount, T1)


def test_a_retried_withdrawal_answers_as_before_even_when_funds_are_gone() -> None:
    state, first = withdraw(funded_ledger(), ALICE, eur(10_000), ref(1, "wd"))
    again, second = withdraw(state, ALICE, eur(10_000), ref(1, "wd"))
    assert first is not None and second is None and again is state
    refused(E.IDEMPOTENCY_CONFLICT, withdraw, state, ALICE, eur(9_999), ref(1, "wd"))


def test_deposit_and_credit_retries() -> None:
    state, _ = deposit(empty_ledger(), BOB, eur(10), ref(1, "dp"))
    again, entry = deposit(state, BOB, eur(10), ref(1, "dp"))
    assert entry is None and again is state
    refused(E.IDEMPOTENCY_CONFLICT, deposit, state, ALICE, eur(10), ref(1, "dp"))
    refused(E.IDEMPOTENCY_CONFLICT, deposit, state, BOB, eur(11), ref(1, "dp"))
    refused(E.IDEMPOTENCY_CONFLICT, deposit, state, BOB, usd(10), ref(1, "dp"))
    refused(E.IDEMPOTENCY_CONFLICT, deposit, state, FUNDING[EUR], eur(10), ref(1, "dp"))
    state, _ = credit_inbound(state, T1, SHOP, eur(99))
    again, entry = credit_inbound(state, T1, SHOP, eur(99))
    assert entry is None and again is state
    refused(E.IDEMPOTENCY_CONFLICT, credit_inbound, state, T1, BOB, eur(99))


def test_one_reference_may_carry_one_entry_of_each_kind() -> None:
    state, _ = deposit(empty_ledger(), BOB, eur(10), T1)
    state, entry = withdraw(state, BOB, eur(4), T1)
    assert entry is not None
    state, entry = reserve(state, BOB, eur(6), T1)
    assert entry is not None
    assert len(state.journal) == 3
    check_invariants(state)


# --- credit inbound ----------------------------------------------------------------------------


def test_credit_inbound_moves_money_from_settlement() -> None:
    state, entry = credit_inbound(empty_ledger(), T1, SHOP, eur(1_250))
    assert entry is not None and entry.kind is EntryKind.CREDIT_INBOUND
    assert entry.postings == (Posting(SETTLEMENT[EUR], -1_250), Posting(SHOP, 1_250))
    assert balances(state, SHOP, SETTLEMENT[EUR]) == (1_250, -1_250)
    assert customer_money(state)[EUR] == 1_250
    check_invariants(state)


def test_credit_inbound_reaches_a_blocked_account() -> None:
    state = set_account_status(empty_ledger(), SHOP, AccountStatus.BLOCKED)
    state, entry = credit_inbound(state, T1, SHOP, eur(5))
    assert entry is not None


@pytest.mark.parametrize(
    ("spec", "target", "amount"),
    [
        (E.ACCOUNT_UNKNOWN, "nobody", eur(1)),
        (E.VALIDATION_FAILED, SETTLEMENT[EUR], eur(1)),
        (E.VALIDATION_FAILED, SUSPENSE[EUR], eur(1)),
        (E.CURRENCY_MISMATCH, STORE, eur(1)),
        (E.AMOUNT_OUT_OF_RANGE, SHOP, eur(-1)),
    ],
    ids=["unknown", "settlement", "suspense", "currency", "negative"],
)
def test_credit_inbound_refusals(spec: ErrorSpec, target: str, amount: object) -> None:
    refused(spec, credit_inbound, funded_ledger(), T1, target, amount)


# --- flows (DESIGN.md §3) --------------------------------------------------------------------


def test_routed_payment_payer_side_then_refund_back() -> None:
    state, _ = reserve(funded_ledger(), ALICE, eur(1_200), T1)
    state, _ = post_reserved(state, T1, SETTLEMENT[EUR])
    assert balances(state, ALICE, SETTLEMENT[EUR]) == (8_800, 1_200)
    assert customer_money(state)[EUR] == 11_000 - 1_200
    # The merchant (at another processor) refunds 200: it arrives through the router.
    state, _ = credit_inbound(state, ref(2, "rf"), ALICE, eur(200))
    assert balances(state, ALICE, SETTLEMENT[EUR]) == (9_000, 1_000)
    check_invariants(state)


def test_payee_side_then_merchant_refund_out() -> None:
    state, _ = credit_inbound(empty_ledger(), T1, SHOP, eur(1_200))
    refund = ref(1, "rf")
    state, _ = reserve(state, SHOP, eur(1_200 + SHOP_OVERDRAFT_MINOR), refund)
    state, _ = post_reserved(state, refund, SETTLEMENT[EUR])
    assert balances(state, SHOP, SETTLEMENT[EUR]) == (-SHOP_OVERDRAFT_MINOR, 500)
    check_invariants(state)


def test_on_us_payment_never_touches_settlement() -> None:
    state, _ = reserve(funded_ledger(), ALICE, eur(700), T1)
    state, _ = post_reserved(state, T1, SHOP)
    assert balances(state, ALICE, SHOP, SETTLEMENT[EUR]) == (9_300, 1_700, 0)
    assert customer_money(state)[EUR] == 11_000
    check_invariants(state)


# --- the auditor fails on corrupt state ------------------------------------------------------


def test_check_invariants_catches_a_balance_that_is_not_its_postings() -> None:
    state = funded_ledger()
    bent = replace(state.accounts[BOB], balance_minor=1)
    corrupt = replace(state, accounts=MappingProxyType({**state.accounts, BOB: bent}))
    with pytest.raises(AssertionError):
        check_invariants(corrupt)


def test_check_invariants_catches_a_reservation_that_vanished_without_an_entry() -> None:
    state = reserved()
    corrupt = replace(state, reservations=MappingProxyType({}))
    with pytest.raises(AssertionError):
        check_invariants(corrupt)


def test_check_invariants_catches_a_reservation_without_money_in_suspense() -> None:
    state = funded_ledger()
    phantom = {T1: Reservation(T1, ALICE, eur(5))}
    corrupt = replace(state, reservations=MappingProxyType(phantom))
    with pytest.raises(AssertionError):
        check_invariants(corrupt)


def test_operations_never_change_the_state_they_are_given() -> None:
    state = funded_ledger()
    before = frozen_copy(state)
    reserve(state, ALICE, eur(1), T1)
    deposit(state, BOB, eur(1), T1)
    withdraw(state, ALICE, eur(1), T1)
    credit_inbound(state, T1, SHOP, eur(1))
    assert frozen_copy(state) == before
