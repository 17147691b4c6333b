"""The planning functions the database shell calls with the snapshots it loaded.

Each one must return exactly the two postings the design names, refuse customer-caused
problems with the registered error (in the documented order), and crash on a shell bug
such as handing it the wrong system account. `apply_entry` and `check_limits` are the
"check before write and again after read" halves and are tested on their own.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from semops.core.errors import E, ErrorSpec, SemopsError
from semops.core.limits import AMOUNT_MAX_MINOR, BALANCE_ABS_MAX_MINOR
from semops.core.money import Money
from semops.ledger import (
    AccountKind,
    AccountSnapshot,
    AccountStatus,
    Closure,
    ClosureKind,
    EntryKind,
    Posting,
    Reservation,
    SystemAccount,
    apply_entry,
    check_closing,
    check_limits,
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

from .helpers import eur, ref, usd

REF = ref(1)


def account(
    account_id: str,
    kind: AccountKind = AccountKind.CUSTOMER,
    balance_minor: int = 0,
    currency: str = "EUR",
    **fields: Any,
) -> AccountSnapshot:
    return AccountSnapshot(account_id, kind, currency, balance_minor, **fields)


# System accounts as a decision sees them: which one, never a balance.
SUSPENSE = SystemAccount("suspense", AccountKind.SUSPENSE, "EUR")
SETTLEMENT = SystemAccount("settlement", AccountKind.SETTLEMENT, "EUR")
FUNDING = SystemAccount("funding", AccountKind.FUNDING, "EUR")


def refused_with(spec: ErrorSpec, call: Any, *args: Any) -> None:
    with pytest.raises(SemopsError) as caught:
        call(*args)
    assert caught.value.code == spec.code, caught.value


def postings(*pairs: tuple[str, int]) -> tuple[Posting, ...]:
    return tuple(Posting(account_id, amount) for account_id, amount in pairs)


# --- reserve ---------------------------------------------------------------------------------


def test_reserve_moves_the_amount_from_payer_to_suspense() -> None:
    entry = plan_reserve(account("alice", balance_minor=1_000), SUSPENSE, eur(300), REF)
    assert entry.kind is EntryKind.RESERVE
    assert entry.transfer_ref == REF
    assert entry.entry_id == f"{REF}:reserve"
    assert entry.currency == "EUR"
    assert entry.postings == postings(("alice", -300), ("suspense", 300))


def test_reserve_may_use_every_last_minor_unit() -> None:
    plan_reserve(account("alice", balance_minor=300), SUSPENSE, eur(300), REF)


def test_reserve_one_minor_unit_too_many_is_insufficient_funds() -> None:
    refused_with(
        E.INSUFFICIENT_FUNDS,
        plan_reserve,
        account("alice", balance_minor=299),
        SUSPENSE,
        eur(300),
        REF,
    )


def test_a_merchant_may_reserve_into_its_overdraft_and_no_further() -> None:
    shop = account("shop", AccountKind.MERCHANT, balance_minor=100, overdraft_minor=50)
    plan_reserve(shop, SUSPENSE, eur(150), REF)
    refused_with(E.INSUFFICIENT_FUNDS, plan_reserve, shop, SUSPENSE, eur(151), REF)


@pytest.mark.parametrize(
    ("spec", "payer", "amount", "reference"),
    [
        pytest.param(
            E.VALIDATION_FAILED, account("alice", balance_minor=900), eur(1), "x", id="ref"
        ),
        pytest.param(E.AMOUNT_OUT_OF_RANGE, account("alice"), eur(0), REF, id="zero"),
        pytest.param(E.AMOUNT_OUT_OF_RANGE, account("alice"), eur(-1), REF, id="negative"),
        pytest.param(
            E.AMOUNT_OUT_OF_RANGE, account("alice"), eur(AMOUNT_MAX_MINOR + 1), REF, id="too-big"
        ),
        pytest.param(E.AMOUNT_INVALID, account("alice"), 100, REF, id="not-money"),
        pytest.param(
            E.VALIDATION_FAILED,
            account("settlement", AccountKind.SETTLEMENT, 900),
            eur(1),
            REF,
            id="settlement-as-payer",
        ),
        pytest.param(
            E.CURRENCY_MISMATCH, account("alice", balance_minor=900), usd(1), REF, id="currency"
        ),
        pytest.param(
            E.ACCOUNT_BLOCKED,
            account("alice", balance_minor=900, status=AccountStatus.BLOCKED),
            eur(1),
            REF,
            id="blocked",
        ),
        pytest.param(
            E.ACCOUNT_BLOCKED,
            account("alice", balance_minor=0, status=AccountStatus.BLOCKED),
            eur(1),
            REF,
            id="blocked-before-funds",
        ),
        pytest.param(
            E.CURRENCY_MISMATCH,
            account("alice", balance_minor=0),
            usd(5),
            REF,
            id="currency-before-funds",
        ),
    ],
)
def test_reserve_refusals(
    spec: ErrorSpec, payer: AccountSnapshot, amount: Any, reference: str
) -> None:
    refused_with(spec, plan_reserve, payer, SUSPENSE, amount, reference)


def test_reserve_with_the_wrong_system_account_is_a_bug() -> None:
    alice = account("alice", balance_minor=900)
    with pytest.raises(AssertionError):
        plan_reserve(alice, SETTLEMENT, eur(1), REF)
    with pytest.raises(AssertionError):
        plan_reserve(alice, SystemAccount("s-usd", AccountKind.SUSPENSE, "USD"), eur(1), REF)


# --- post and void ---------------------------------------------------------------------------

RESERVATION = Reservation(REF, "alice", eur(300))
HELD = SUSPENSE


@pytest.mark.parametrize(
    "target",
    [
        SETTLEMENT,
        account("shop", AccountKind.MERCHANT),
        account("bob"),
        account("shop", AccountKind.MERCHANT, status=AccountStatus.BLOCKED),
    ],
    ids=["routed", "on-us-merchant", "on-us-customer", "blocked-receiver"],
)
def test_post_moves_exactly_the_reserved_amount_to_the_target(
    target: AccountSnapshot | SystemAccount,
) -> None:
    entry = plan_post(RESERVATION, HELD, target)
    assert entry.kind is EntryKind.POST
    assert entry.entry_id == f"{REF}:post"
    assert entry.postings == postings(("suspense", -300), (target.account_id, 300))


@pytest.mark.parametrize(
    ("spec", "target"),
    [
        (E.VALIDATION_FAILED, FUNDING),
        (E.VALIDATION_FAILED, SystemAccount("suspense-2", AccountKind.SUSPENSE, "EUR")),
        (E.CURRENCY_MISMATCH, account("store", AccountKind.MERCHANT, currency="USD")),
    ],
    ids=["to-funding", "to-suspense", "currency"],
)
def test_post_refusals(spec: ErrorSpec, target: AccountSnapshot | SystemAccount) -> None:
    refused_with(spec, plan_post, RESERVATION, HELD, target)


def test_void_returns_exactly_the_reserved_amount_to_the_payer_even_when_blocked() -> None:
    alice = account("alice", status=AccountStatus.BLOCKED)
    entry = plan_void(RESERVATION, HELD, alice)
    assert entry.kind is EntryKind.VOID
    assert entry.postings == postings(("suspense", -300), ("alice", 300))


def test_void_to_anyone_but_the_payer_is_a_bug() -> None:
    with pytest.raises(AssertionError):
        plan_void(RESERVATION, HELD, account("bob"))
    with pytest.raises(AssertionError):
        plan_void(RESERVATION, SETTLEMENT, account("alice"))


# --- credit inbound, deposit, withdraw -------------------------------------------------------


def test_credit_inbound_takes_settlement_below_zero() -> None:
    entry = plan_credit_inbound(SETTLEMENT, account("shop", AccountKind.MERCHANT), eur(70), REF)
    assert entry.kind is EntryKind.CREDIT_INBOUND
    assert entry.postings == postings(("settlement", -70), ("shop", 70))


def test_credit_inbound_reaches_a_blocked_account() -> None:
    blocked = account("bob", status=AccountStatus.BLOCKED)
    assert plan_credit_inbound(SETTLEMENT, blocked, eur(1), REF).amount_for("bob") == 1


@pytest.mark.parametrize(
    ("spec", "target", "amount"),
    [
        (E.VALIDATION_FAILED, account("settlement-2", AccountKind.SETTLEMENT), eur(1)),
        (E.VALIDATION_FAILED, account("funding", AccountKind.FUNDING), eur(1)),
        (E.CURRENCY_MISMATCH, account("bob"), usd(1)),
        (E.AMOUNT_OUT_OF_RANGE, account("bob"), eur(0)),
    ],
    ids=["to-settlement", "to-funding", "currency", "zero"],
)
def test_credit_inbound_refusals(spec: ErrorSpec, target: AccountSnapshot, amount: Money) -> None:
    refused_with(spec, plan_credit_inbound, SETTLEMENT, target, amount, REF)


def test_deposit_and_withdraw_move_money_across_the_funding_account() -> None:
    deposit = plan_deposit(account("bob"), FUNDING, eur(40), REF)
    assert deposit.postings == postings(("funding", -40), ("bob", 40))
    withdraw = plan_withdraw(account("bob", balance_minor=40), FUNDING, eur(40), REF)
    assert withdraw.postings == postings(("bob", -40), ("funding", 40))
    assert withdraw.entry_id != deposit.entry_id, "the same reference may serve both kinds"


def test_a_blocked_account_takes_deposits_but_cannot_withdraw() -> None:
    blocked = account("bob", balance_minor=40, status=AccountStatus.BLOCKED)
    plan_deposit(blocked, FUNDING, eur(1), REF)
    refused_with(E.ACCOUNT_BLOCKED, plan_withdraw, blocked, FUNDING, eur(1), REF)


@pytest.mark.parametrize("plan", [plan_deposit, plan_withdraw], ids=["deposit", "withdraw"])
def test_deposit_and_withdraw_refusals(plan: Any) -> None:
    rich = account("bob", balance_minor=10_000)
    settlement = account("settlement", AccountKind.SETTLEMENT, 900)
    refused_with(E.VALIDATION_FAILED, plan, settlement, FUNDING, eur(1), REF)
    refused_with(E.CURRENCY_MISMATCH, plan, rich, FUNDING, usd(1), REF)
    refused_with(E.AMOUNT_OUT_OF_RANGE, plan, rich, FUNDING, eur(0), REF)
    refused_with(E.VALIDATION_FAILED, plan, rich, FUNDING, eur(1), "bad ref!")
    with pytest.raises(AssertionError):
        plan(rich, SETTLEMENT, eur(1), REF)


def test_withdraw_beyond_the_balance_is_insufficient_funds() -> None:
    refused_with(
        E.INSUFFICIENT_FUNDS, plan_withdraw, account("bob", balance_minor=39), FUNDING, eur(40), REF
    )


def test_a_deposit_that_would_overflow_the_balance_column_is_refused() -> None:
    huge = account("bob", balance_minor=BALANCE_ABS_MAX_MINOR - 1)
    refused_with(E.AMOUNT_OUT_OF_RANGE, plan_deposit, huge, FUNDING, eur(2), REF)
    plan_deposit(huge, FUNDING, eur(1), REF)


# --- apply_entry and check_limits ------------------------------------------------------------


FUNDING_ROW = account("funding", AccountKind.FUNDING)


def test_apply_entry_adds_postings_and_leaves_its_input_alone() -> None:
    accounts = {"funding": FUNDING_ROW, "bob": account("bob", balance_minor=5)}
    original = dict(accounts)
    after = apply_entry(accounts, move_entry(EntryKind.DEPOSIT, REF, eur(7), "funding", "bob"))
    assert accounts == original
    assert after["bob"].balance_minor == 12
    assert after["funding"].balance_minor == -7
    assert after["bob"] == replace(original["bob"], balance_minor=12)


def test_apply_entry_on_accounts_that_were_not_loaded_is_a_bug() -> None:
    entry = move_entry(EntryKind.DEPOSIT, REF, eur(7), "funding", "bob")
    with pytest.raises(AssertionError):
        apply_entry({"funding": FUNDING_ROW}, entry)
    assert apply_entry({"bob": account("bob")}, entry, only_loaded=True)["bob"].balance_minor == 7
    usd_bob = account("bob", currency="USD")
    with pytest.raises(AssertionError):
        apply_entry({"funding": FUNDING_ROW, "bob": usd_bob}, entry)


def test_check_limits_lets_money_reach_an_account_already_below_its_floor() -> None:
    # The overdraft was lowered after the account used it: it may still receive.
    below = account("shop", AccountKind.MERCHANT, balance_minor=-100)
    entry = move_entry(EntryKind.CREDIT_INBOUND, REF, eur(10), "settlement", "shop")
    check_limits(entry, apply_entry({"shop": below}, entry, only_loaded=True), {"settlement"})


def test_check_limits_again_after_read_catches_a_concurrent_change() -> None:
    entry = plan_reserve(account("alice", balance_minor=300), SUSPENSE, eur(300), REF)
    # Re-read: another transaction spent 1 meanwhile, then Alice was blocked.
    reread = {"alice": account("alice", balance_minor=-1)}
    refused_with(E.INSUFFICIENT_FUNDS, check_limits, entry, reread)
    reread["alice"] = account("alice", balance_minor=0, status=AccountStatus.BLOCKED)
    refused_with(E.ACCOUNT_BLOCKED, check_limits, entry, reread)


def test_system_accounts_have_no_limit_per_entry() -> None:
    """Suspense below zero is corrupt state found over the whole ledger
    (`check_invariants`, the shell's fold), not a limit of one entry."""
    deep = {
        "settlement": account("settlement", AccountKind.SETTLEMENT, -(10**17)),
        "funding": account("funding", AccountKind.FUNDING, -(10**17)),
        "suspense": account("suspense", AccountKind.SUSPENSE, -1),
        "bob": account("bob", balance_minor=10),
    }
    check_limits(move_entry(EntryKind.CREDIT_INBOUND, REF, eur(1), "settlement", "bob"), deep)
    check_limits(move_entry(EntryKind.DEPOSIT, REF, eur(1), "funding", "bob"), deep)
    check_limits(move_entry(EntryKind.POST, REF, eur(1), "suspense", "bob"), deep)
    check_limits(move_entry(EntryKind.POST, REF, eur(1), "suspense", "bob"), {}, {"suspense"})
    with pytest.raises(AssertionError):  # a debited account neither loaded nor a system one
        check_limits(move_entry(EntryKind.RESERVE, REF, eur(1), "bob", "suspense"), {})


# --- idempotency decisions -------------------------------------------------------------------

POSTED_SETTLEMENT = Closure(ClosureKind.POSTED, "settlement")
POSTED_SHOP = Closure(ClosureKind.POSTED, "shop")
VOIDED = Closure(ClosureKind.VOIDED, "alice")


def test_an_open_reservation_must_be_closed() -> None:
    assert check_closing(None, POSTED_SETTLEMENT) is True
    assert check_closing(None, VOIDED) is True


@pytest.mark.parametrize("closure", [POSTED_SETTLEMENT, POSTED_SHOP, VOIDED])
def test_the_same_closure_again_is_a_no_op(closure: Closure) -> None:
    assert check_closing(closure, Closure(closure.kind, closure.to_account_id)) is False


@pytest.mark.parametrize(
    ("previous", "requested"),
    [
        (POSTED_SETTLEMENT, VOIDED),
        (VOIDED, POSTED_SETTLEMENT),
        (POSTED_SETTLEMENT, POSTED_SHOP),
        (VOIDED, Closure(ClosureKind.VOIDED, "bob")),
    ],
    ids=["void-after-post", "post-after-void", "post-elsewhere", "void-to-another"],
)
def test_a_different_closure_is_a_transfer_state_conflict(
    previous: Closure, requested: Closure
) -> None:
    refused_with(E.TRANSFER_STATE_CONFLICT, check_closing, previous, requested)


def test_check_repeat_accepts_the_same_content_only() -> None:
    stored = move_entry(EntryKind.DEPOSIT, REF, eur(5), "funding", "bob")
    check_repeat(stored, move_entry(EntryKind.DEPOSIT, REF, eur(5), "funding", "bob"))
    for different in (
        move_entry(EntryKind.DEPOSIT, REF, eur(6), "funding", "bob"),
        move_entry(EntryKind.DEPOSIT, REF, eur(5), "funding", "alice"),
        move_entry(EntryKind.DEPOSIT, REF, usd(5), "funding", "bob"),
    ):
        refused_with(E.IDEMPOTENCY_CONFLICT, check_repeat, stored, different)
    with pytest.raises(AssertionError):
        check_repeat(stored, move_entry(EntryKind.WITHDRAW, REF, eur(5), "bob", "funding"))


def test_check_request_runs_before_any_account_is_read() -> None:
    check_request(REF)
    check_request(REF, eur(1))
    refused_with(E.VALIDATION_FAILED, check_request, "short")
    refused_with(E.VALIDATION_FAILED, check_request, "x" * 65)
    refused_with(E.VALIDATION_FAILED, check_request, "tr_0000000\n")
    refused_with(E.AMOUNT_INVALID, check_request, REF, 5)


def test_replay_balances_sums_postings_per_account() -> None:
    entries = [
        move_entry(EntryKind.DEPOSIT, ref(1), eur(50), "funding", "bob"),
        move_entry(EntryKind.RESERVE, ref(2), eur(20), "bob", "suspense"),
        move_entry(EntryKind.POST, ref(2), eur(20), "suspense", "settlement"),
    ]
    assert replay_balances(entries) == {"funding": -50, "bob": 30, "suspense": 0, "settlement": 20}
    assert replay_balances([]) == {}
