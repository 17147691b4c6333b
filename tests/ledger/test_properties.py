"""Property tests: random operation sequences never create or lose a minor unit.

`LedgerMachine` drives the ledger with a model written independently (plain dictionaries
and the arithmetic of the design), predicts each operation's answer -- done, or which
error -- and after every step checks the invariants of DESIGN.md §7 against that model and
against a replay of the journal from scratch. The two `@given` tests then state the same
conservation law over arbitrary sequences, and that retrying every operation immediately
changes nothing (idempotency under retries).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from semops.core.errors import E, ErrorSpec, SemopsError
from semops.core.money import Money
from semops.ledger import (
    AccountKind,
    AccountStatus,
    Entry,
    EntryKind,
    LedgerState,
    check_invariants,
    credit_inbound,
    customer_money,
    deposit,
    post_reserved,
    replay_balances,
    reserve,
    set_account_status,
    trial_balance,
    void_reserved,
    withdraw,
)

from .helpers import (
    CURRENCY_OF,
    EUR,
    FUNDING,
    LIMITED,
    SETTLEMENT,
    SHOP,
    SHOP_OVERDRAFT_MINOR,
    SUSPENSE,
    USD,
    chart,
    empty_ledger,
    frozen_copy,
    ref,
)

CURRENCIES = (EUR, USD)
MERCHANTS = tuple(a.account_id for a in chart() if a.kind is AccountKind.MERCHANT)
OVERDRAFT = dict.fromkeys(LIMITED, 0) | {SHOP: SHOP_OVERDRAFT_MINOR}
ALL_ACCOUNTS = tuple(account.account_id for account in chart())
CLOSING = (post_reserved, void_reserved)

limited_accounts = st.sampled_from(LIMITED)
merchants = st.sampled_from(MERCHANTS)
amounts = st.integers(min_value=1, max_value=5_000)


def other(currency: str) -> str:
    return USD if currency == EUR else EUR


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = empty_ledger()
        self.journal: list[Entry] = []
        self.expected = dict.fromkeys(ALL_ACCOUNTS, 0)
        self.blocked: set[str] = set()
        self.open: dict[str, tuple[str, Money]] = {}
        self.closed: dict[str, tuple[EntryKind, str]] = {}
        self.deposited = dict.fromkeys(CURRENCIES, 0)
        self.withdrawn = dict.fromkeys(CURRENCIES, 0)
        self.router_inflow = dict.fromkeys(CURRENCIES, 0)  # in through the router minus out
        self.done: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.refs = 0

    # --- helpers ----------------------------------------------------------------------------

    def next_ref(self, prefix: str) -> str:
        self.refs += 1
        return ref(self.refs, prefix)

    def attempt(
        self, refusal: ErrorSpec | None, operation: Callable[..., Any], *args: Any
    ) -> Entry | None:
        """Run an operation whose answer the model predicted; a refusal changes nothing."""
        if refusal is not None:
            before = frozen_copy(self.state)
            with pytest.raises(SemopsError) as caught:
                operation(self.state, *args)
            assert caught.value.code == refusal.code, caught.value
            assert frozen_copy(self.state) == before
            return None
        self.state, entry = operation(self.state, *args)
        assert isinstance(entry, Entry)
        self.journal.append(entry)
        self.done.append((operation, args))
        return entry

    def move(self, from_id: str, to_id: str, amount_minor: int) -> None:
        self.expected[from_id] -= amount_minor
        self.expected[to_id] += amount_minor

    def sending_refusal(self, account_id: str, amount: Money) -> ErrorSpec | None:
        """The model's answer for money leaving a limited account, in the documented order."""
        if amount.currency != CURRENCY_OF[account_id]:
            return E.CURRENCY_MISMATCH
        if account_id in self.blocked:
            return E.ACCOUNT_BLOCKED
        if self.expected[account_id] - amount.amount_minor < -OVERDRAFT[account_id]:
            return E.INSUFFICIENT_FUNDS
        return None

    def money(self, account_id: str, amount_minor: int, flip: bool) -> Money:
        currency = CURRENCY_OF[account_id]
        return Money(amount_minor, other(currency) if flip else currency)

    # --- rules ------------------------------------------------------------------------------

    @rule(account_id=limited_accounts, amount_minor=amounts, flip=st.booleans())
    def deposit(self, account_id: str, amount_minor: int, flip: bool) -> None:
        amount = self.money(account_id, amount_minor, flip and amount_minor % 5 == 0)
        refusal = None if amount.currency == CURRENCY_OF[account_id] else E.CURRENCY_MISMATCH
        if self.attempt(refusal, deposit, account_id, amount, self.next_ref("dp")):
            self.move(FUNDING[amount.currency], account_id, amount_minor)
            self.deposited[amount.currency] += amount_minor

    @rule(account_id=limited_accounts, amount_minor=amounts, flip=st.booleans())
    def withdraw(self, account_id: str, amount_minor: int, flip: bool) -> None:
        amount = self.money(account_id, amount_minor, flip and amount_minor % 5 == 0)
        refusal = self.sending_refusal(account_id, amount)
        if self.attempt(refusal, withdraw, account_id, amount, self.next_ref("wd")):
            self.move(account_id, FUNDING[amount.currency], amount_minor)
            self.withdrawn[amount.currency] += amount_minor

    def _reserve(self, payer: str, amount: Money, prefix: str) -> str | None:
        reference = self.next_ref(prefix)
        refusal = self.sending_refusal(payer, amount)
        if self.attempt(refusal, reserve, payer, amount, reference) is None:
            return None
        self.move(payer, SUSPENSE[amount.currency], amount.amount_minor)
        self.open[reference] = (payer, amount)
        return reference

    def _post(self, reference: str, target: str) -> None:
        _, amount = self.open.pop(reference)
        self.attempt(None, post_reserved, reference, target)
        self.move(SUSPENSE[amount.currency], target, amount.amount_minor)
        if target == SETTLEMENT[amount.currency]:
            self.router_inflow[amount.currency] -= amount.amount_minor
        self.closed[reference] = (EntryKind.POST, target)

    @rule(payer=limited_accounts, amount_minor=amounts, flip=st.booleans())
    def reserve(self, payer: str, amount_minor: int, flip: bool) -> None:
        self._reserve(payer, self.money(payer, amount_minor, flip and amount_minor % 7 == 0), "tr")

    @precondition(lambda self: self.open)
    @rule(data=st.data(), routed=st.booleans())
    def post(self, data: st.DataObject, routed: bool) -> None:
        reference = data.draw(st.sampled_from(sorted(self.open)))
        currency = self.open[reference][1].currency
        on_us = [a for a in LIMITED if CURRENCY_OF[a] == currency]
        target = SETTLEMENT[currency] if routed else data.draw(st.sampled_from(on_us))
        self._post(reference, target)

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def void(self, data: st.DataObject) -> None:
        reference = data.draw(st.sampled_from(sorted(self.open)))
        payer, amount = self.open.pop(reference)
        self.attempt(None, void_reserved, reference)
        self.move(SUSPENSE[amount.currency], payer, amount.amount_minor)
        self.closed[reference] = (EntryKind.VOID, payer)

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def post_to_a_wrong_account(self, data: st.DataObject) -> None:
        reference = data.draw(st.sampled_from(sorted(self.open)))
        currency = self.open[reference][1].currency
        target, refusal = data.draw(
            st.sampled_from(
                [
                    (FUNDING[currency], E.VALIDATION_FAILED),
                    (SUSPENSE[currency], E.VALIDATION_FAILED),
                    (SETTLEMENT[other(currency)], E.CURRENCY_MISMATCH),
                    ("nobody-at-all", E.ACCOUNT_UNKNOWN),
                ]
            )
        )
        self.attempt(refusal, post_reserved, reference, target)

    @precondition(lambda self: self.closed)
    @rule(data=st.data(), same=st.booleans())
    def close_again(self, data: st.DataObject, same: bool) -> None:
        """A re-delivered outcome: the same one is a no-op, another one a conflict."""
        reference = data.draw(st.sampled_from(sorted(self.closed)))
        kind, target = self.closed[reference]
        before = frozen_copy(self.state)
        if kind is EntryKind.POST:
            call: tuple[Any, ...] = (post_reserved, reference, target)
            other_call: tuple[Any, ...] = (void_reserved, reference)
        else:
            call, other_call = (void_reserved, reference), (post_reserved, reference, SHOP)
        if same:
            state, entry = call[0](self.state, *call[1:])
            assert entry is None and state is self.state
        else:
            self.attempt(E.TRANSFER_STATE_CONFLICT, other_call[0], *other_call[1:])
        assert frozen_copy(self.state) == before

    @rule(account_id=limited_accounts, amount_minor=amounts)
    def credit_inbound(self, account_id: str, amount_minor: int) -> None:
        """A routed payment to a merchant here, or a refund arriving for a customer."""
        amount = self.money(account_id, amount_minor, False)
        self.attempt(None, credit_inbound, self.next_ref("ci"), account_id, amount)
        self.move(SETTLEMENT[amount.currency], account_id, amount_minor)
        self.router_inflow[amount.currency] += amount_minor

    @rule(merchant=merchants, amount_minor=amounts)
    def refund_outbound(self, merchant: str, amount_minor: int) -> None:
        """A merchant refund: reserve on the merchant account, post to settlement."""
        amount = self.money(merchant, amount_minor, False)
        reference = self._reserve(merchant, amount, "rf")
        if reference is not None:
            self._post(reference, SETTLEMENT[amount.currency])

    @rule(account_id=limited_accounts, blocked=st.booleans())
    def set_status(self, account_id: str, blocked: bool) -> None:
        status = AccountStatus.BLOCKED if blocked else AccountStatus.OPEN
        self.state = set_account_status(self.state, account_id, status)
        (self.blocked.add if blocked else self.blocked.discard)(account_id)

    @precondition(lambda self: self.done)
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        """A lost reply: the same call again writes nothing and answers 'already done'."""
        operation, args = data.draw(st.sampled_from(self.done))
        state, entry = operation(self.state, *args)
        assert entry is None and state is self.state

    def one_shot_calls(self) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
        """Done calls that carry their whole content (closing a reservation does not)."""
        return [(op, args) for op, args in self.done if op not in CLOSING]

    @precondition(lambda self: self.one_shot_calls())
    @rule(data=st.data())
    def reuse_reference_with_other_content(self, data: st.DataObject) -> None:
        one_shot = self.one_shot_calls()
        operation, args = data.draw(st.sampled_from(one_shot))
        if operation is credit_inbound:
            reference, account_id, amount = args
            changed: tuple[Any, ...] = (reference, account_id, amount + amount)
        else:
            account_id, amount, reference = args
            changed = (account_id, amount + amount, reference)
        self.attempt(E.IDEMPOTENCY_CONFLICT, operation, *changed)

    # --- invariants ---------------------------------------------------------------------------

    @invariant()
    def every_entry_balances(self) -> None:
        for entry in self.journal:
            assert len(entry.postings) >= 2
            assert sum(posting.amount_minor for posting in entry.postings) == 0

    @invariant()
    def balances_are_the_replayed_journal_and_the_model(self) -> None:
        assert list(self.state.journal.values()) == self.journal
        replayed = replay_balances(self.journal)
        for account_id in ALL_ACCOUNTS:
            balance = self.state.balance_of(account_id)
            assert balance == replayed.get(account_id, 0) == self.expected[account_id]

    @invariant()
    def limited_accounts_stay_above_their_floor(self) -> None:
        for account_id in LIMITED:
            assert self.state.balance_of(account_id) >= -OVERDRAFT[account_id]

    @invariant()
    def suspense_is_the_open_reservations(self) -> None:
        assert set(self.state.reservations) == set(self.open)
        for currency in CURRENCIES:
            held = sum(a.amount_minor for _, a in self.open.values() if a.currency == currency)
            assert self.state.balance_of(SUSPENSE[currency]) == held

    @invariant()
    def trial_balance_is_zero(self) -> None:
        assert trial_balance(self.state) == dict.fromkeys(CURRENCIES, 0)

    @invariant()
    def customer_money_is_deposits_minus_withdrawals_plus_router_inflow(self) -> None:
        for currency in CURRENCIES:
            assert customer_money(self.state)[currency] == (
                self.deposited[currency] - self.withdrawn[currency] + self.router_inflow[currency]
            )

    @invariant()
    def the_auditor_agrees(self) -> None:
        check_invariants(self.state)


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# --- conservation over arbitrary sequences ---------------------------------------------------

OPERATIONS = ("deposit", "withdraw", "reserve", "post", "void", "credit", "refund", "block")
operations = st.lists(
    st.tuples(
        st.sampled_from(OPERATIONS),
        st.integers(min_value=0, max_value=50),  # which account / reservation / target
        st.integers(min_value=1, max_value=3_000),  # amount in minor units
        st.booleans(),  # routed or on-us; wrong currency; block or unblock
    ),
    min_size=10,
    max_size=50,
)
Op = tuple[str, int, int, bool]
Call = tuple[Callable[..., Any], tuple[Any, ...]]


def opening_ledger() -> LedgerState:
    """Every customer and merchant starts with 4 000 minor units, so payments can happen."""
    state = empty_ledger()
    for number, account_id in enumerate(LIMITED):
        money = Money(4_000, CURRENCY_OF[account_id])
        state, _ = deposit(state, account_id, money, ref(number, "open"))
    return state


def choose(state: LedgerState, step: int, op: Op) -> Call:
    """The call `op` stands for in this state (a retry repeats the call, not the choice)."""
    name, pick, amount_minor, flag = op
    account_id = LIMITED[pick % len(LIMITED)]
    currency = CURRENCY_OF[account_id]
    amount = Money(amount_minor, other(currency) if flag and name == "deposit" else currency)
    reference = ref(step, "op")
    open_refs = sorted(state.reservations)
    if name in ("post", "void") and open_refs:
        chosen = open_refs[pick % len(open_refs)]
        held = state.reservations[chosen].amount.currency
        on_us = [a for a in LIMITED if CURRENCY_OF[a] == held]
        target = SETTLEMENT[held] if flag else on_us[pick % len(on_us)]
        return (post_reserved, (chosen, target)) if name == "post" else (void_reserved, (chosen,))
    calls: dict[str, Call] = {
        "deposit": (deposit, (account_id, amount, reference)),
        "withdraw": (withdraw, (account_id, amount, reference)),
        "reserve": (reserve, (account_id, amount, reference)),
        "post": (post_reserved, (reference, SETTLEMENT[currency])),  # nothing open: refused
        "void": (void_reserved, (reference,)),
        "credit": (credit_inbound, (reference, account_id, amount)),
        "refund": (reserve, (MERCHANTS[pick % len(MERCHANTS)], amount, reference)),
    }
    if name == "block":
        status = AccountStatus.BLOCKED if flag else AccountStatus.OPEN
        return (lambda s, *args: (set_account_status(s, *args), None), (account_id, status))
    return calls[name]


def execute(state: LedgerState, call: Call) -> LedgerState:
    """Run one call; a refusal is allowed and must leave the state exactly as it was."""
    operation, args = call
    before = frozen_copy(state)
    try:
        new_state, _ = operation(state, *args)
    except SemopsError:
        assert frozen_copy(state) == before
        return state
    assert isinstance(new_state, LedgerState)
    return new_state


def flows(state: LedgerState, currency: str) -> int:
    """Deposits - withdrawals + router inflow, computed from the journal's entry kinds."""
    total = 0
    for entry in state.journal.values():
        if entry.currency != currency:
            continue
        moved = sum(p.amount_minor for p in entry.postings if p.amount_minor > 0)
        routed_out = entry.kind is EntryKind.POST and entry.amount_for(SETTLEMENT[currency]) > 0
        if entry.kind in (EntryKind.DEPOSIT, EntryKind.CREDIT_INBOUND):
            total += moved
        elif entry.kind is EntryKind.WITHDRAW or routed_out:
            total -= moved
    return total


@settings(max_examples=150, deadline=None)
@given(ops=operations)
def test_no_sequence_creates_or_loses_a_minor_unit(ops: list[Op]) -> None:
    state = opening_ledger()
    for step, op in enumerate(ops):
        state = execute(state, choose(state, step, op))
        assert trial_balance(state) == dict.fromkeys(CURRENCIES, 0)
    for currency in CURRENCIES:
        postings = [
            p.amount_minor
            for entry in state.journal.values()
            if entry.currency == currency
            for p in entry.postings
        ]
        assert sum(postings) == 0
        assert customer_money(state)[currency] == flows(state, currency)
        assert customer_money(state)[currency] == -(
            state.balance_of(FUNDING[currency]) + state.balance_of(SETTLEMENT[currency])
        )
    check_invariants(state)


@settings(max_examples=100, deadline=None)
@given(ops=operations)
def test_retrying_every_operation_immediately_changes_nothing(ops: list[Op]) -> None:
    once = twice = opening_ledger()
    for step, op in enumerate(ops):
        once = execute(once, choose(once, step, op))
        call = choose(twice, step, op)
        retried = execute(execute(twice, call), call)
        assert frozen_copy(retried) == frozen_copy(once)
        twice = retried
    check_invariants(twice)
