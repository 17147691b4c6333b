"""What a payee side is told about a refund, and when a refund is tried again (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from semops.core.errors import E, all_errors
from semops.core.limits import (
    REFUND_RETRY_DELAY_MAX_S,
    REFUND_RETRY_DELAY_MIN_S,
    REFUND_RETRY_WINDOW_S,
)
from semops.protocol import (
    FINAL_REFUSALS,
    MERCHANT_REFUND_CODES,
    attempt_due,
    is_final_refusal,
    may_retry,
    merchant_refund_code,
    retry_delay_s,
)

CODES = [spec.code for spec in all_errors()]


def test_only_reasons_about_the_payment_itself_fail_a_refund() -> None:
    assert {"refund_not_allowed", "refund_exceeds_paid", "currency_mismatch"} == FINAL_REFUSALS
    for passing in (
        E.PROCESSOR_SUSPENDED,
        E.PROCESSOR_UNKNOWN,
        E.NET_DEBIT_CAP_EXCEEDED,
        E.TRANSFER_EXPIRED,
        E.UNAVAILABLE,
        E.SIGNATURE_INVALID,
    ):
        assert not is_final_refusal(passing.code), passing.code
    assert not is_final_refusal(None)


@given(st.sampled_from([*CODES, "made-up-code", "processor_suspended_at_bank_a"]))
def test_a_merchant_is_only_ever_shown_a_code_that_names_nobody(code: str) -> None:
    shown = merchant_refund_code(code)
    assert shown in MERCHANT_REFUND_CODES
    assert shown == code or shown == E.REFUND_NOT_COMPLETED.code
    assert merchant_refund_code(None) is None


def test_the_payer_sides_state_becomes_a_neutral_code() -> None:
    assert merchant_refund_code("processor_suspended") == "refund_not_completed"
    assert merchant_refund_code("net_debit_cap_exceeded") == "refund_not_completed"
    assert merchant_refund_code("transfer_expired") == "refund_not_completed"
    assert merchant_refund_code("refund_exceeds_paid") == "refund_exceeds_paid"


@given(st.integers(min_value=0, max_value=10 * REFUND_RETRY_WINDOW_S))
def test_the_wait_between_attempts_is_bounded_and_grows(waited_s: int) -> None:
    delay = retry_delay_s(waited_s)
    assert REFUND_RETRY_DELAY_MIN_S <= delay <= REFUND_RETRY_DELAY_MAX_S
    assert retry_delay_s(waited_s + 100) >= delay


def test_a_refund_is_tried_again_within_its_window_only() -> None:
    created = 1_800_000_000
    assert may_retry(created, created)
    assert may_retry(created, created + REFUND_RETRY_WINDOW_S - 1)
    assert not may_retry(created, created + REFUND_RETRY_WINDOW_S)


def test_a_waiting_attempt_is_due_after_its_wait() -> None:
    created = 1_800_000_000
    given_up = created + 400  # waited 400 s: the next wait is 100 s
    assert not attempt_due(created, given_up, given_up + 99)
    assert attempt_due(created, given_up, given_up + 100)
    assert not attempt_due(created, created, created + REFUND_RETRY_DELAY_MIN_S - 1)
    assert attempt_due(created, created, created + REFUND_RETRY_DELAY_MIN_S)
