"""The payment state machines: the tables are the contract every service builds on.

The expected tables below are written out a second time, as plain stored strings, on
purpose: a change to a machine has to be made here too, deliberately, and a rename of a
stored value fails. Around them sit the properties that make the machines safe -- every
pair is either listed or refused with `state_transition_invalid`, terminal states never
move, nothing voids on a timeout, the router's COMMITTED is absorbing, a request is paid at
most once -- checked exhaustively and by random walks.
"""

from __future__ import annotations

import ast
import inspect
from collections import deque
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semops.core.errors import E, SemopsError
from semops.protocol import states
from semops.protocol.states import (
    MACHINES,
    ORDER,
    PAYEE_TRANSFER,
    PAYER_TRANSFER,
    REFUND,
    REQUEST,
    ROUTER_TRANSFER,
    OrderEvent,
    OrderState,
    PayeeTransferEvent,
    PayeeTransferState,
    PayerTransferEvent,
    PayerTransferState,
    RefundEvent,
    RefundState,
    RequestEvent,
    RequestState,
    RouterTransferEvent,
    RouterTransferState,
    StateMachine,
)

Machine = StateMachine[Any, Any]
Triple = tuple[str, str, str]

# --- The contract, written out independently ----------------------------------------------

EXPECTED_TABLES: dict[str, set[Triple]] = {
    "request": {
        ("open", "transfer_reserved", "reserved"),
        ("open", "expire", "expired"),
        ("open", "cancel", "cancelled"),
        ("reserved", "transfer_committed", "paid"),
        ("reserved", "transfer_aborted", "open"),
        ("paid", "refund_partial", "partially_refunded"),
        ("paid", "refund_full", "refunded"),
        ("partially_refunded", "refund_partial", "partially_refunded"),
        ("partially_refunded", "refund_full", "refunded"),
    },
    "order": {
        ("created", "send", "sent"),
        ("created", "abandon", "abandoned"),
        ("sent", "receipt", "completed"),
        ("sent", "declined", "failed"),
        ("sent", "no_answer", "pending"),
        ("pending", "receipt", "completed"),
        ("pending", "declined", "failed"),
        ("pending", "send", "sent"),
        ("pending", "no_answer", "pending"),
        ("completed", "receipt", "completed"),
        ("failed", "declined", "failed"),
    },
    "payer_transfer": {
        ("reserved", "router_accepted", "prepared"),
        ("reserved", "router_refused", "aborted"),
        ("reserved", "committed", "committed"),
        ("reserved", "aborted", "aborted"),
        ("reserved", "timed_out", "in_doubt"),
        ("prepared", "committed", "committed"),
        ("prepared", "aborted", "aborted"),
        ("prepared", "timed_out", "in_doubt"),
        ("in_doubt", "committed", "committed"),
        ("in_doubt", "aborted", "aborted"),
        ("in_doubt", "timed_out", "in_doubt"),
        ("committed", "committed", "committed"),
        ("aborted", "aborted", "aborted"),
    },
    "router_transfer": {
        ("reserved", "fulfilled", "committed"),
        ("reserved", "rejected", "aborted"),
        ("reserved", "expired", "aborted"),
        ("committed", "fulfilled", "committed"),
        ("aborted", "rejected", "aborted"),
        ("aborted", "expired", "aborted"),
    },
    "payee_transfer": {
        ("received", "accept", "accepted"),
        ("received", "reject", "rejected"),
        ("received", "aborted", "aborted"),
        ("accepted", "committed", "committed"),
        ("accepted", "aborted", "aborted"),
        ("accepted", "timed_out", "in_doubt"),
        ("in_doubt", "committed", "committed"),
        ("in_doubt", "aborted", "aborted"),
        ("in_doubt", "timed_out", "in_doubt"),
        ("committed", "committed", "committed"),
        ("aborted", "aborted", "aborted"),
        ("rejected", "aborted", "rejected"),
    },
    "refund": {
        ("requested", "send", "sent"),
        ("requested", "cancel", "cancelled"),
        ("sent", "accepted", "completed"),
        ("sent", "rejected", "failed"),
        ("sent", "timed_out", "in_doubt"),
        ("in_doubt", "accepted", "completed"),
        ("in_doubt", "rejected", "failed"),
        ("in_doubt", "timed_out", "in_doubt"),
        ("sent", "retry", "requested"),
        ("in_doubt", "retry", "requested"),
        ("completed", "accepted", "completed"),
        ("failed", "rejected", "failed"),
    },
}

EXPECTED_INITIAL: dict[str, str] = {
    "request": "open",
    "order": "created",
    "payer_transfer": "reserved",
    "router_transfer": "reserved",
    "payee_transfer": "received",
    "refund": "requested",
}

EXPECTED_TERMINAL: dict[str, set[str]] = {
    "request": {"expired", "cancelled", "refunded"},
    "order": {"completed", "failed", "abandoned"},
    "payer_transfer": {"committed", "aborted"},
    "router_transfer": {"committed", "aborted"},
    "payee_transfer": {"committed", "aborted", "rejected"},
    "refund": {"completed", "failed", "cancelled"},
}

# Stored in databases: a rename, removal or addition must be a deliberate act.
EXPECTED_STATE_VALUES: dict[type[StrEnum], set[str]] = {
    RequestState: {
        "open",
        "reserved",
        "paid",
        "partially_refunded",
        "refunded",
        "expired",
        "cancelled",
    },
    OrderState: {"created", "sent", "pending", "completed", "failed", "abandoned"},
    PayerTransferState: {"reserved", "prepared", "in_doubt", "committed", "aborted"},
    RouterTransferState: {"reserved", "committed", "aborted"},
    PayeeTransferState: {"received", "accepted", "rejected", "in_doubt", "committed", "aborted"},
    RefundState: {"requested", "sent", "in_doubt", "completed", "failed", "cancelled"},
}

EXPECTED_EVENT_VALUES: dict[type[StrEnum], set[str]] = {
    RequestEvent: {
        "transfer_reserved",
        "transfer_committed",
        "transfer_aborted",
        "expire",
        "cancel",
        "refund_partial",
        "refund_full",
    },
    OrderEvent: {"send", "receipt", "declined", "no_answer", "abandon"},
    PayerTransferEvent: {"router_accepted", "router_refused", "committed", "aborted", "timed_out"},
    RouterTransferEvent: {"fulfilled", "rejected", "expired"},
    PayeeTransferEvent: {"accept", "reject", "committed", "aborted", "timed_out"},
    RefundEvent: {"send", "accepted", "rejected", "timed_out", "cancel", "retry"},
}

BY_NAME: dict[str, Machine] = {machine.name: machine for machine in MACHINES}
machines = pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.name)


# --- Helpers --------------------------------------------------------------------------------


def members(enum_type: type[StrEnum]) -> list[Any]:
    return list(enum_type)


def expected_next(machine: Machine, state: StrEnum, event: StrEnum) -> str | None:
    for from_state, on_event, to_state in EXPECTED_TABLES[machine.name]:
        if from_state == state.value and on_event == event.value:
            return to_state
    return None


def run(machine: Machine, *events: StrEnum, start: StrEnum | None = None) -> Any:
    state = machine.initial if start is None else start
    for event in events:
        state = machine.next(state, event)
    return state


def assert_refused(machine: Machine, state: StrEnum, event: StrEnum) -> None:
    with pytest.raises(SemopsError) as caught:
        machine.next(state, event)
    assert caught.value.code == "state_transition_invalid"
    assert caught.value.spec is E.STATE_TRANSITION_INVALID


def successors(machine: Machine, state: StrEnum) -> set[Any]:
    return {machine.next(state, event) for event in machine.allowed_events(state)}


def reachable(machine: Machine, starts: Iterable[StrEnum]) -> set[Any]:
    seen: set[Any] = set(starts)
    queue = deque(seen)
    while queue:
        for target in successors(machine, queue.popleft()) - seen:
            seen.add(target)
            queue.append(target)
    return seen


def aborting_pairs(machine: Machine, target: StrEnum) -> set[tuple[str, str]]:
    """Every (state, event) that moves *into* `target` from a different state."""
    return {
        (state.value, event.value)
        for (state, event), to_state in machine.transitions.items()
        if to_state == target and state != target
    }


# --- The tables themselves ----------------------------------------------------------------


def test_the_six_machines_are_exported_in_a_fixed_order() -> None:
    assert [machine.name for machine in MACHINES] == list(EXPECTED_TABLES)
    assert set(states.__all__) >= {"StateMachine", "MACHINES", *(m.upper() for m in BY_NAME)}
    for name in states.__all__:
        assert hasattr(states, name), name


@machines
def test_table_is_exactly_the_contract(machine: Machine) -> None:
    actual = {(s.value, e.value, t.value) for (s, e), t in machine.transitions.items()}
    assert actual == EXPECTED_TABLES[machine.name]


@machines
def test_initial_and_terminal_states_are_the_contract(machine: Machine) -> None:
    assert machine.initial.value == EXPECTED_INITIAL[machine.name]
    assert {state.value for state in machine.terminal} == EXPECTED_TERMINAL[machine.name]
    assert not machine.is_terminal(machine.initial)


def test_stored_state_values_are_stable() -> None:
    for enum_type, values in EXPECTED_STATE_VALUES.items():
        assert {member.value for member in enum_type} == values, enum_type.__name__
    assert {machine.states for machine in MACHINES} == set(EXPECTED_STATE_VALUES)


def test_event_values_are_stable() -> None:
    for enum_type, values in EXPECTED_EVENT_VALUES.items():
        assert {member.value for member in enum_type} == values, enum_type.__name__
    assert {machine.events for machine in MACHINES} == set(EXPECTED_EVENT_VALUES)


@pytest.mark.parametrize("enum_type", [*EXPECTED_STATE_VALUES, *EXPECTED_EVENT_VALUES])
def test_values_are_lowercase_snake_strings(enum_type: type[StrEnum]) -> None:
    for member in enum_type:
        assert member.value == member.name.lower()
        assert member.value.replace("_", "").isalpha()
        assert member.value.isascii()


@machines
def test_tables_are_read_only(machine: Machine) -> None:
    key = next(iter(machine.transitions))
    with pytest.raises(TypeError):
        machine.transitions[key] = machine.initial  # type: ignore[index]


# --- Every pair is listed or refused ------------------------------------------------------


@machines
def test_every_state_event_pair_is_listed_or_refused(machine: Machine) -> None:
    """Exhaustive over states x events: a listed next state, or the one refusal code."""
    for state in machine.states:
        for event in machine.events:
            wanted = expected_next(machine, state, event)
            if wanted is None:
                assert_refused(machine, state, event)
                assert event not in machine.allowed_events(state)
            else:
                result = machine.next(state, event)
                assert type(result) is machine.states
                assert result.value == wanted
                assert event in machine.allowed_events(state)


@machines
def test_refusal_names_the_machine_state_and_event(machine: Machine) -> None:
    state = next(iter(machine.terminal))
    event = next(e for e in machine.events if e not in machine.allowed_events(state))
    with pytest.raises(SemopsError) as caught:
        machine.next(state, event)
    problem = caught.value.to_problem()
    assert problem["status"] == 409
    assert problem["code"] == "state_transition_invalid"
    assert problem["machine"] == machine.name
    assert problem["state"] == state.value
    assert problem["event"] == event.value
    assert state.value in caught.value.detail
    assert event.value in caught.value.detail


@machines
def test_allowed_events_follow_the_enum_order(machine: Machine) -> None:
    order = members(machine.events)
    for state in machine.states:
        allowed = machine.allowed_events(state)
        assert list(allowed) == sorted(allowed, key=order.index)
        assert set(allowed) == {e for (s, e) in machine.transitions if s == state}


@st.composite
def machine_and_events(draw: st.DrawFn) -> tuple[Machine, list[Any]]:
    machine = draw(st.sampled_from(MACHINES))
    events = draw(st.lists(st.sampled_from(members(machine.events)), max_size=40))
    return machine, events


@settings(max_examples=500)
@given(machine_and_events())
def test_random_walks_only_follow_the_table(walk: tuple[Machine, list[Any]]) -> None:
    """A random sequence of events: each step moves as listed or is refused and changes
    nothing; once terminal, the state never changes."""
    machine, events = walk
    state = machine.initial
    for event in events:
        wanted = expected_next(machine, state, event)
        try:
            result = machine.next(state, event)
        except SemopsError as error:
            assert error.code == "state_transition_invalid"
            assert wanted is None
            continue
        assert result.value == wanted
        if machine.is_terminal(state):
            assert result == state
        state = result


# --- Shape of the graphs ------------------------------------------------------------------


@machines
def test_every_state_is_reachable_from_the_initial_state(machine: Machine) -> None:
    assert reachable(machine, [machine.initial]) == set(members(machine.states))


@machines
def test_every_non_terminal_state_can_reach_a_terminal_state(machine: Machine) -> None:
    for state in machine.states:
        assert reachable(machine, [state]) & machine.terminal, state


@machines
def test_terminal_states_never_move_to_a_different_state(machine: Machine) -> None:
    for state in machine.terminal:
        for event in machine.events:
            try:
                assert machine.next(state, event) == state
            except SemopsError as error:
                assert error.code == "state_transition_invalid"


@machines
def test_is_terminal_matches_the_terminal_set(machine: Machine) -> None:
    for state in machine.states:
        assert machine.is_terminal(state) == (state.value in EXPECTED_TERMINAL[machine.name])


@machines
def test_non_terminal_states_always_have_a_way_forward(machine: Machine) -> None:
    for state in machine.states:
        if not machine.is_terminal(state):
            assert successors(machine, state) - {state}, state


# --- Safety invariants ----------------------------------------------------------------------


def test_payer_never_voids_on_its_own() -> None:
    """Once the router may hold the transfer, only the router's ABORTED voids it."""
    assert aborting_pairs(PAYER_TRANSFER, PayerTransferState.ABORTED) == {
        ("reserved", "router_refused"),
        ("reserved", "aborted"),
        ("prepared", "aborted"),
        ("in_doubt", "aborted"),
    }
    for state in (PayerTransferState.PREPARED, PayerTransferState.IN_DOUBT):
        assert_refused(PAYER_TRANSFER, state, PayerTransferEvent.ROUTER_REFUSED)


def test_payer_timeout_never_leads_to_a_final_outcome() -> None:
    for state in PayerTransferState:
        if PayerTransferEvent.TIMED_OUT in PAYER_TRANSFER.allowed_events(state):
            assert PAYER_TRANSFER.next(state, PayerTransferEvent.TIMED_OUT) == (
                PayerTransferState.IN_DOUBT
            )


@given(
    st.lists(
        st.sampled_from(
            [
                PayerTransferEvent.ROUTER_ACCEPTED,
                PayerTransferEvent.COMMITTED,
                PayerTransferEvent.TIMED_OUT,
            ]
        ),
        max_size=30,
    )
)
def test_payer_without_a_router_abort_never_ends_aborted(events: list[PayerTransferEvent]) -> None:
    state = PAYER_TRANSFER.initial
    for event in events:
        try:
            state = PAYER_TRANSFER.next(state, event)
        except SemopsError as error:
            assert error.code == "state_transition_invalid"
        assert state != PayerTransferState.ABORTED


def test_payee_never_voids_after_giving_out_the_fulfilment() -> None:
    assert aborting_pairs(PAYEE_TRANSFER, PayeeTransferState.ABORTED) == {
        ("received", "aborted"),
        ("accepted", "aborted"),
        ("in_doubt", "aborted"),
    }
    for state in (PayeeTransferState.ACCEPTED, PayeeTransferState.IN_DOUBT):
        assert_refused(PAYEE_TRANSFER, state, PayeeTransferEvent.REJECT)


def test_router_committed_is_absorbing() -> None:
    for event in RouterTransferEvent:
        try:
            result = ROUTER_TRANSFER.next(RouterTransferState.COMMITTED, event)
        except SemopsError as error:
            assert error.code == "state_transition_invalid"
        else:
            assert result == RouterTransferState.COMMITTED
    assert_refused(ROUTER_TRANSFER, RouterTransferState.COMMITTED, RouterTransferEvent.EXPIRED)
    assert_refused(ROUTER_TRANSFER, RouterTransferState.COMMITTED, RouterTransferEvent.REJECTED)


@given(st.lists(st.sampled_from(list(RouterTransferEvent)), max_size=30))
def test_router_once_committed_stays_committed(events: list[RouterTransferEvent]) -> None:
    state = ROUTER_TRANSFER.next(ROUTER_TRANSFER.initial, RouterTransferEvent.FULFILLED)
    for event in events:
        try:
            state = ROUTER_TRANSFER.next(state, event)
        except SemopsError as error:
            assert error.code == "state_transition_invalid"
        assert state == RouterTransferState.COMMITTED


def test_router_refuses_a_fulfilment_after_abort() -> None:
    aborted = run(ROUTER_TRANSFER, RouterTransferEvent.EXPIRED)
    assert aborted == RouterTransferState.ABORTED
    assert_refused(ROUTER_TRANSFER, aborted, RouterTransferEvent.FULFILLED)


@given(st.lists(st.sampled_from(list(RequestEvent)), max_size=40))
def test_request_is_paid_at_most_once(events: list[RequestEvent]) -> None:
    state = REQUEST.initial
    payments = 0
    for event in events:
        try:
            result = REQUEST.next(state, event)
        except SemopsError:
            continue
        payments += result == RequestState.PAID and state != RequestState.PAID
        state = result
    assert payments <= 1


def test_order_failure_needs_a_definite_refusal() -> None:
    assert aborting_pairs(ORDER, OrderState.FAILED) == {
        ("sent", "declined"),
        ("pending", "declined"),
    }
    assert aborting_pairs(ORDER, OrderState.ABANDONED) == {("created", "abandon")}
    for state in OrderState:
        if OrderEvent.NO_ANSWER in ORDER.allowed_events(state):
            assert ORDER.next(state, OrderEvent.NO_ANSWER) == OrderState.PENDING


def test_refund_failure_needs_a_rejection() -> None:
    assert aborting_pairs(REFUND, RefundState.FAILED) == {
        ("sent", "rejected"),
        ("in_doubt", "rejected"),
    }
    assert aborting_pairs(REFUND, RefundState.CANCELLED) == {("requested", "cancel")}
    for state in RefundState:
        if RefundEvent.TIMED_OUT in REFUND.allowed_events(state):
            assert REFUND.next(state, RefundEvent.TIMED_OUT) == RefundState.IN_DOUBT


# --- Concrete paths: REQUEST ----------------------------------------------------------------

RQ, RQE = RequestState, RequestEvent


def test_request_happy_path_then_partial_and_full_refunds() -> None:
    assert run(REQUEST, RQE.TRANSFER_RESERVED, RQE.TRANSFER_COMMITTED) == RQ.PAID
    assert (
        run(
            REQUEST,
            RQE.TRANSFER_RESERVED,
            RQE.TRANSFER_COMMITTED,
            RQE.REFUND_PARTIAL,
            RQE.REFUND_PARTIAL,
            RQE.REFUND_FULL,
        )
        == RQ.REFUNDED
    )
    assert run(REQUEST, RQE.REFUND_FULL, start=RQ.PAID) == RQ.REFUNDED


def test_request_aborted_transfer_reopens_it_and_it_may_then_expire_or_be_paid() -> None:
    reopened = run(REQUEST, RQE.TRANSFER_RESERVED, RQE.TRANSFER_ABORTED)
    assert reopened == RQ.OPEN
    assert run(REQUEST, RQE.EXPIRE, start=reopened) == RQ.EXPIRED
    assert run(REQUEST, RQE.TRANSFER_RESERVED, RQE.TRANSFER_COMMITTED, start=reopened) == RQ.PAID


def test_request_reserved_cannot_expire_be_cancelled_or_reserved_twice() -> None:
    for event in (RQE.EXPIRE, RQE.CANCEL, RQE.TRANSFER_RESERVED):
        assert_refused(REQUEST, RQ.RESERVED, event)


def test_request_paid_cannot_be_paid_again_expire_or_be_cancelled() -> None:
    for event in (RQE.TRANSFER_RESERVED, RQE.TRANSFER_COMMITTED, RQE.EXPIRE, RQE.CANCEL):
        assert_refused(REQUEST, RQ.PAID, event)


@pytest.mark.parametrize("dead", [RQ.EXPIRED, RQ.CANCELLED, RQ.REFUNDED])
def test_request_in_a_terminal_state_cannot_be_reserved(dead: RequestState) -> None:
    assert REQUEST.allowed_events(dead) == ()
    assert_refused(REQUEST, dead, RQE.TRANSFER_RESERVED)


def test_request_cannot_be_refunded_before_it_is_paid() -> None:
    for state in (RQ.OPEN, RQ.RESERVED):
        assert_refused(REQUEST, state, RQE.REFUND_PARTIAL)
        assert_refused(REQUEST, state, RQE.REFUND_FULL)


def test_request_open_can_only_be_abandoned_by_expiry_or_cancel() -> None:
    assert run(REQUEST, RQE.CANCEL) == RQ.CANCELLED
    assert_refused(REQUEST, RQ.OPEN, RQE.TRANSFER_COMMITTED)
    assert_refused(REQUEST, RQ.OPEN, RQE.TRANSFER_ABORTED)


# --- Concrete paths: ORDER ------------------------------------------------------------------

OS, OE = OrderState, OrderEvent


def test_order_happy_path_and_decline() -> None:
    assert run(ORDER, OE.SEND, OE.RECEIPT) == OS.COMPLETED
    assert run(ORDER, OE.SEND, OE.DECLINED) == OS.FAILED


def test_order_unanswered_becomes_pending_then_retries_with_the_same_id() -> None:
    assert run(ORDER, OE.SEND, OE.NO_ANSWER) == OS.PENDING
    assert run(ORDER, OE.SEND, OE.NO_ANSWER, OE.NO_ANSWER) == OS.PENDING
    assert run(ORDER, OE.SEND, OE.NO_ANSWER, OE.SEND, OE.RECEIPT) == OS.COMPLETED
    assert run(ORDER, OE.SEND, OE.NO_ANSWER, OE.RECEIPT) == OS.COMPLETED
    assert run(ORDER, OE.SEND, OE.NO_ANSWER, OE.DECLINED) == OS.FAILED


def test_order_only_a_never_sent_order_can_be_abandoned() -> None:
    assert run(ORDER, OE.ABANDON) == OS.ABANDONED
    for state in (OS.SENT, OS.PENDING, OS.COMPLETED, OS.FAILED):
        assert_refused(ORDER, state, OE.ABANDON)


def test_order_duplicate_outcomes_are_harmless_but_contradictions_are_refused() -> None:
    assert run(ORDER, OE.RECEIPT, start=OS.COMPLETED) == OS.COMPLETED
    assert run(ORDER, OE.DECLINED, start=OS.FAILED) == OS.FAILED
    assert_refused(ORDER, OS.COMPLETED, OE.DECLINED)
    assert_refused(ORDER, OS.FAILED, OE.RECEIPT)
    assert_refused(ORDER, OS.COMPLETED, OE.SEND)
    assert_refused(ORDER, OS.FAILED, OE.SEND)


def test_order_sent_is_not_resent_without_first_being_pending() -> None:
    assert_refused(ORDER, OS.SENT, OE.SEND)
    assert_refused(ORDER, OS.CREATED, OE.RECEIPT)
    assert_refused(ORDER, OS.CREATED, OE.NO_ANSWER)


# --- Concrete paths: PAYER_TRANSFER ---------------------------------------------------------

PS, PE = PayerTransferState, PayerTransferEvent


def test_payer_happy_path() -> None:
    assert run(PAYER_TRANSFER, PE.ROUTER_ACCEPTED, PE.COMMITTED) == PS.COMMITTED


def test_payer_outcome_may_overtake_the_router_answer() -> None:
    assert run(PAYER_TRANSFER, PE.COMMITTED) == PS.COMMITTED
    assert run(PAYER_TRANSFER, PE.ABORTED) == PS.ABORTED


def test_payer_synchronous_refusal_aborts() -> None:
    assert run(PAYER_TRANSFER, PE.ROUTER_REFUSED) == PS.ABORTED


def test_payer_in_doubt_keeps_asking_until_the_router_decides() -> None:
    for first in ((), (PE.ROUTER_ACCEPTED,)):
        doubt = run(PAYER_TRANSFER, *first, PE.TIMED_OUT)
        assert doubt == PS.IN_DOUBT
        assert run(PAYER_TRANSFER, PE.TIMED_OUT, PE.TIMED_OUT, start=doubt) == PS.IN_DOUBT
        assert run(PAYER_TRANSFER, PE.COMMITTED, start=doubt) == PS.COMMITTED
        assert run(PAYER_TRANSFER, PE.ABORTED, start=doubt) == PS.ABORTED


def test_payer_duplicates_are_harmless_and_contradictions_refused() -> None:
    assert run(PAYER_TRANSFER, PE.COMMITTED, start=PS.COMMITTED) == PS.COMMITTED
    assert run(PAYER_TRANSFER, PE.ABORTED, start=PS.ABORTED) == PS.ABORTED
    assert_refused(PAYER_TRANSFER, PS.COMMITTED, PE.ABORTED)
    assert_refused(PAYER_TRANSFER, PS.ABORTED, PE.COMMITTED)
    assert_refused(PAYER_TRANSFER, PS.COMMITTED, PE.TIMED_OUT)
    assert_refused(PAYER_TRANSFER, PS.PREPARED, PE.ROUTER_ACCEPTED)


# --- Concrete paths: ROUTER_TRANSFER --------------------------------------------------------

RS, RE = RouterTransferState, RouterTransferEvent


def test_router_paths() -> None:
    assert run(ROUTER_TRANSFER, RE.FULFILLED) == RS.COMMITTED
    assert run(ROUTER_TRANSFER, RE.REJECTED) == RS.ABORTED
    assert run(ROUTER_TRANSFER, RE.EXPIRED) == RS.ABORTED
    assert run(ROUTER_TRANSFER, RE.FULFILLED, RE.FULFILLED) == RS.COMMITTED
    assert run(ROUTER_TRANSFER, RE.REJECTED, RE.EXPIRED) == RS.ABORTED
    assert run(ROUTER_TRANSFER, RE.EXPIRED, RE.REJECTED) == RS.ABORTED


# --- Concrete paths: PAYEE_TRANSFER ---------------------------------------------------------

YS, YE = PayeeTransferState, PayeeTransferEvent


def test_payee_paths() -> None:
    assert run(PAYEE_TRANSFER, YE.ACCEPT, YE.COMMITTED) == YS.COMMITTED
    assert run(PAYEE_TRANSFER, YE.ACCEPT, YE.ABORTED) == YS.ABORTED
    assert run(PAYEE_TRANSFER, YE.ACCEPT, YE.TIMED_OUT, YE.TIMED_OUT) == YS.IN_DOUBT
    assert run(PAYEE_TRANSFER, YE.ACCEPT, YE.TIMED_OUT, YE.COMMITTED) == YS.COMMITTED
    assert run(PAYEE_TRANSFER, YE.ACCEPT, YE.TIMED_OUT, YE.ABORTED) == YS.ABORTED
    assert run(PAYEE_TRANSFER, YE.REJECT) == YS.REJECTED
    assert run(PAYEE_TRANSFER, YE.REJECT, YE.ABORTED) == YS.REJECTED
    assert run(PAYEE_TRANSFER, YE.ABORTED) == YS.ABORTED


def test_payee_refusals() -> None:
    assert_refused(PAYEE_TRANSFER, YS.RECEIVED, YE.COMMITTED)  # never committed unaccepted
    assert_refused(PAYEE_TRANSFER, YS.RECEIVED, YE.TIMED_OUT)
    assert_refused(PAYEE_TRANSFER, YS.REJECTED, YE.ACCEPT)
    assert_refused(PAYEE_TRANSFER, YS.REJECTED, YE.COMMITTED)
    assert_refused(PAYEE_TRANSFER, YS.ACCEPTED, YE.ACCEPT)
    assert_refused(PAYEE_TRANSFER, YS.COMMITTED, YE.ABORTED)
    assert_refused(PAYEE_TRANSFER, YS.ABORTED, YE.COMMITTED)


# --- Concrete paths: REFUND -----------------------------------------------------------------

FS, FE = RefundState, RefundEvent


def test_refund_paths() -> None:
    assert run(REFUND, FE.SEND, FE.ACCEPTED) == FS.COMPLETED
    assert run(REFUND, FE.SEND, FE.REJECTED) == FS.FAILED
    assert run(REFUND, FE.SEND, FE.TIMED_OUT, FE.TIMED_OUT, FE.ACCEPTED) == FS.COMPLETED
    assert run(REFUND, FE.SEND, FE.TIMED_OUT, FE.REJECTED) == FS.FAILED
    assert run(REFUND, FE.CANCEL) == FS.CANCELLED
    assert run(REFUND, FE.ACCEPTED, start=FS.COMPLETED) == FS.COMPLETED
    # A payer side that cannot take it now: a new attempt, then the money goes back.
    assert run(REFUND, FE.SEND, FE.TIMED_OUT, FE.RETRY, FE.SEND, FE.ACCEPTED) == FS.COMPLETED
    assert run(REFUND, FE.SEND, FE.RETRY, FE.SEND, FE.REJECTED) == FS.FAILED


def test_refund_refusals() -> None:
    for state in (FS.SENT, FS.IN_DOUBT, FS.COMPLETED, FS.FAILED):
        assert_refused(REFUND, state, FE.CANCEL)  # once sent it may already be executed
    assert_refused(REFUND, FS.REQUESTED, FE.ACCEPTED)
    assert_refused(REFUND, FS.SENT, FE.SEND)
    assert_refused(REFUND, FS.COMPLETED, FE.REJECTED)
    assert_refused(REFUND, FS.CANCELLED, FE.SEND)
    for state in (FS.REQUESTED, FS.COMPLETED, FS.FAILED, FS.CANCELLED):
        assert_refused(REFUND, state, FE.RETRY)  # only an attempt on its way is retried


# --- The StateMachine class -----------------------------------------------------------------


class Light(StrEnum):
    ON = "on"
    OFF = "off"
    BROKEN = "broken"


class Switch(StrEnum):
    FLIP = "flip"
    SMASH = "smash"


def test_state_machine_basics() -> None:
    machine = StateMachine[Light, Switch](
        "light",
        {
            (Light.OFF, Switch.FLIP): Light.ON,
            (Light.ON, Switch.FLIP): Light.OFF,
            (Light.ON, Switch.SMASH): Light.BROKEN,
        },
        initial=Light.OFF,
        terminal={Light.BROKEN},
    )
    assert machine.states is Light
    assert machine.events is Switch
    assert machine.next(Light.OFF, Switch.FLIP) is Light.ON
    assert machine.allowed_events(Light.ON) == (Switch.FLIP, Switch.SMASH)
    assert machine.allowed_events(Light.BROKEN) == ()
    assert machine.is_terminal(Light.BROKEN)
    assert not machine.is_terminal(Light.ON)
    assert_refused(machine, Light.OFF, Switch.SMASH)
    assert "light" in repr(machine)


def test_state_machine_copies_its_table() -> None:
    table = {(Light.OFF, Switch.FLIP): Light.ON, (Light.ON, Switch.SMASH): Light.BROKEN}
    machine = StateMachine[Light, Switch]("light", table, Light.OFF, {Light.BROKEN})
    table[(Light.OFF, Switch.SMASH)] = Light.BROKEN
    assert_refused(machine, Light.OFF, Switch.SMASH)


@pytest.mark.parametrize(
    ("table", "initial", "terminal", "complaint"),
    [
        ({}, Light.OFF, {Light.BROKEN}, "at least one transition"),
        (
            {(Light.BROKEN, Switch.FLIP): Light.ON, (Light.OFF, Switch.FLIP): Light.BROKEN},
            Light.OFF,
            {Light.BROKEN},
            "terminal broken must not move",
        ),
        ({(Light.OFF, Switch.FLIP): Light.BROKEN}, Light.BROKEN, {Light.BROKEN}, "initial"),
        ({(Light.OFF, Switch.FLIP): Light.ON}, Light.OFF, set(), "non-empty"),
        ({(Light.OFF, Switch.FLIP): Light.ON}, Light.OFF, {"on"}, "non-empty"),
        (
            {(Light.OFF, Switch.FLIP): Light.ON, (Light.ON, "flip"): Light.OFF},
            Light.OFF,
            {Light.ON},
            "mixed",
        ),
        ({(Light.OFF, Switch.FLIP): "on"}, Light.OFF, {Light.ON}, "mixed"),
    ],
)
def test_state_machine_refuses_a_malformed_table(
    table: Any, initial: Light, terminal: Any, complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        StateMachine[Light, Switch]("light", table, initial, terminal)


@pytest.mark.parametrize(
    ("machine", "state", "event"),
    [
        # States of different machines share strings; a mix-up must not silently match.
        (PAYEE_TRANSFER, PayerTransferState.ABORTED, PayeeTransferEvent.ABORTED),
        (PAYEE_TRANSFER, PayeeTransferState.ACCEPTED, PayerTransferEvent.COMMITTED),
        (ROUTER_TRANSFER, PayerTransferState.RESERVED, RouterTransferEvent.FULFILLED),
        (REQUEST, "open", RequestEvent.TRANSFER_RESERVED),
        (REQUEST, RequestState.OPEN, "transfer_reserved"),
    ],
)
def test_next_refuses_values_of_another_type(machine: Machine, state: Any, event: Any) -> None:
    with pytest.raises(TypeError, match=machine.name):
        machine.next(state, event)


def test_module_is_pure() -> None:
    """No I/O, clock or randomness: the only imports are typing helpers and the errors."""
    tree = ast.parse(inspect.getsource(states))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported == {
        "__future__",
        "collections.abc",
        "enum",
        "types",
        "typing",
        "semops.core.errors",
    }
