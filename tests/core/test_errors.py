"""The error registry: stable, unique codes and numbers, and RFC 9457 problem details.

Codes are a public API (clients branch on them), so the full list of (number, code) pairs
is pinned here: renaming a code, reusing a number or dropping an entry fails this file.
Adding an error means adding its pair below, deliberately.
"""

from __future__ import annotations

import re

import pytest

from semops.core import E, ErrorSpec, SemopsError, all_errors, lookup
from semops.core.errors import PROBLEM_TYPE_PREFIX

PINNED_REGISTRY: list[tuple[int, str]] = [
    (1001, "malformed"),
    (1002, "validation_failed"),
    (1003, "too_large"),
    (1010, "amount_invalid"),
    (1011, "currency_unknown"),
    (1012, "currency_mismatch"),
    (1013, "amount_out_of_range"),
    (1020, "token_invalid"),
    (1030, "not_found"),
    (1040, "unauthenticated"),
    (1041, "forbidden"),
    (1050, "url_not_allowed"),
    (1051, "name_not_allowed"),
    (1052, "name_confusable"),
    (1070, "idempotency_key_required"),
    (1071, "login_throttled"),
    (2001, "signature_invalid"),
    (2002, "key_unknown"),
    (2003, "key_revoked"),
    (2004, "key_expired"),
    (2005, "key_wrong_use"),
    (2006, "signer_mismatch"),
    (2010, "seal_invalid"),
    (2020, "message_expired"),
    (2021, "message_not_yet_valid"),
    (2022, "version_unsupported"),
    (2023, "message_type_unexpected"),
    (2030, "idempotency_conflict"),
    (2031, "replay"),
    (3001, "request_expired"),
    (3002, "request_already_paid"),
    (3003, "request_not_payable"),
    (3004, "order_mismatch"),
    (3010, "pin_block_mismatch"),
    (3011, "pin_invalid"),
    (3012, "pin_locked"),
    (3013, "pin_format"),
    (3020, "device_unknown"),
    (3021, "device_revoked"),
    (3022, "activation_invalid"),
    (3030, "insufficient_funds"),
    (3031, "limit_exceeded"),
    (3032, "net_debit_cap_exceeded"),
    (3033, "account_unknown"),
    (3034, "account_blocked"),
    (3040, "fulfilment_invalid"),
    (3041, "transfer_expired"),
    (3042, "transfer_rejected"),
    (3043, "transfer_state_conflict"),
    (3050, "refund_exceeds_paid"),
    (3051, "refund_not_allowed"),
    (3060, "state_transition_invalid"),
    (3070, "refund_not_completed"),
    (4001, "processor_unknown"),
    (4002, "processor_suspended"),
    (4010, "certificate_invalid"),
    (4011, "tls_peer_mismatch"),
    (4012, "tls_peer_not_allowed"),
    (4013, "certificate_revoked"),
    (4014, "registrations_pending_full"),
    (4015, "registration_decided"),
    (4016, "revocations_full"),
    (4020, "directory_invalid"),
    (5001, "internal"),
    (5002, "unavailable"),
    (5003, "timeout"),
]

SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
REGISTERED = [value for name, value in vars(E).items() if isinstance(value, ErrorSpec)]


def test_registry_is_exactly_the_pinned_list_of_numbers_and_codes() -> None:
    assert [(spec.number, spec.code) for spec in all_errors()] == PINNED_REGISTRY


def test_error_codes_are_unique() -> None:
    codes = [spec.code for spec in all_errors()]
    assert len(codes) == len(set(codes))


def test_error_numbers_are_unique() -> None:
    numbers = [spec.number for spec in all_errors()]
    assert len(numbers) == len(set(numbers))


def test_every_entry_of_the_e_namespace_is_registered_and_named_after_its_code() -> None:
    assert sorted(REGISTERED, key=lambda spec: spec.number) == list(all_errors())
    for name, value in vars(E).items():
        if isinstance(value, ErrorSpec):
            assert name == value.code.upper()


def test_all_errors_is_ordered_by_number() -> None:
    numbers = [spec.number for spec in all_errors()]
    assert numbers == sorted(numbers)


@pytest.mark.parametrize("spec", all_errors(), ids=lambda spec: spec.code)
def test_every_code_is_lowercase_snake_case(spec: ErrorSpec) -> None:
    assert SNAKE_CASE.fullmatch(spec.code), spec.code


@pytest.mark.parametrize("spec", all_errors(), ids=lambda spec: spec.code)
def test_every_number_is_in_one_of_the_documented_groups(spec: ErrorSpec) -> None:
    assert 1000 < spec.number < 6000
    assert spec.number // 1000 in (1, 2, 3, 4, 5)


@pytest.mark.parametrize("spec", all_errors(), ids=lambda spec: spec.code)
def test_every_http_status_is_a_client_or_server_error(spec: ErrorSpec) -> None:
    assert 400 <= spec.http_status <= 599


@pytest.mark.parametrize("spec", all_errors(), ids=lambda spec: spec.code)
def test_input_security_and_payment_errors_answer_4xx_and_internal_errors_5xx(
    spec: ErrorSpec,
) -> None:
    group = spec.number // 1000
    if group in (1, 2, 3):
        assert 400 <= spec.http_status <= 499
    if group == 5:
        assert 500 <= spec.http_status <= 599


@pytest.mark.parametrize("spec", all_errors(), ids=lambda spec: spec.code)
def test_every_title_is_a_short_single_line_sentence(spec: ErrorSpec) -> None:
    assert spec.title
    assert spec.title == spec.title.strip()
    assert "\n" not in spec.title
    assert spec.title[0].isupper()
    assert len(spec.title) <= 80


def test_lookup_returns_the_entry_for_a_code_and_refuses_unknown_codes() -> None:
    assert lookup("signature_invalid") is E.SIGNATURE_INVALID
    for spec in all_errors():
        assert lookup(spec.code) is spec
    with pytest.raises(KeyError):
        lookup("no_such_code")
    with pytest.raises(KeyError):
        lookup("SIGNATURE_INVALID")


def test_problem_type_is_a_urn_made_from_the_code() -> None:
    assert PROBLEM_TYPE_PREFIX == "urn:semops:error:"
    assert E.REPLAY.problem_type == "urn:semops:error:replay"


@pytest.mark.parametrize("spec", all_errors(), ids=lambda spec: spec.code)
def test_to_problem_has_the_rfc_9457_members_and_the_code(spec: ErrorSpec) -> None:
    problem = SemopsError(spec, "what happened").to_problem()
    assert problem == {
        "type": PROBLEM_TYPE_PREFIX + spec.code,
        "title": spec.title,
        "status": spec.http_status,
        "detail": "what happened",
        "code": spec.code,
    }
    assert type(problem["status"]) is int


def test_detail_defaults_to_the_title() -> None:
    error = SemopsError(E.NOT_FOUND)
    assert error.detail == E.NOT_FOUND.title
    assert error.to_problem()["detail"] == E.NOT_FOUND.title


def test_to_problem_adds_the_instance_only_when_given() -> None:
    error = SemopsError(E.NOT_FOUND, "no such transfer")
    assert "instance" not in error.to_problem()
    assert error.to_problem("/transfers/tr_x")["instance"] == "/transfers/tr_x"


def test_to_problem_carries_extra_members_but_never_lets_them_override_standard_ones() -> None:
    error = SemopsError(
        E.VALIDATION_FAILED,
        "amount is missing",
        field="amount",
        status=200,
        code="ok",
        type="about:blank",
        title="fine",
    )
    problem = error.to_problem()
    assert problem["field"] == "amount"
    assert problem["status"] == 422
    assert problem["code"] == "validation_failed"
    assert problem["type"] == "urn:semops:error:validation_failed"
    assert problem["title"] == E.VALIDATION_FAILED.title
    assert problem["detail"] == "amount is missing"


def test_to_problem_does_not_let_extra_members_override_the_instance() -> None:
    error = SemopsError(E.NOT_FOUND, instance="/elsewhere")
    assert error.to_problem("/transfers/tr_x")["instance"] == "/transfers/tr_x"


def test_semops_error_exposes_its_code_and_reads_well_in_logs() -> None:
    error = SemopsError(E.INSUFFICIENT_FUNDS, "balance too low")
    assert error.code == "insufficient_funds"
    assert error.spec is E.INSUFFICIENT_FUNDS
    assert str(error) == "insufficient_funds: balance too low"


def test_semops_error_is_not_a_value_error() -> None:
    # Code that catches ValueError around parsing (json, base64, Decimal) must not swallow
    # a SemopsError raised inside and re-wrap it with a different code.
    assert not issubclass(SemopsError, ValueError)
    assert issubclass(SemopsError, Exception)


def test_error_specs_are_immutable() -> None:
    with pytest.raises(AttributeError):
        E.MALFORMED.code = "other"  # type: ignore[misc]
