"""The PIN (DESIGN.md §6): its format, the PIN block bound to one order, the keyed
verification value and the lockout after consecutive failures.

The lockout is checked twice: as the literal sequence a customer lives through, and as a
property over any sequence of right and wrong attempts against a model written here. And
wherever a PIN could leak -- error text, detail, extra fields, problem details -- a test
looks for it.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semops.core.encoding import b64url_decode
from semops.core.errors import SemopsError
from semops.core.limits import PIN_ATTEMPTS_MAX
from semops.crypto.jose import seal_for
from semops.crypto.keys import KeyUse, PrivateKey, PublicKeyRecord, derive_key
from semops.crypto.pin import (
    PIN_BLOCK_VERSION,
    PIN_KEY_MIN_BYTES,
    PinCheck,
    check_pin,
    check_pin_format,
    make_pin_block,
    open_pin_block,
    pin_verification_value,
)

PIN: Final = "905173"
OTHER_PIN: Final = "905174"
CREDENTIAL: Final = "cred-0001"
PIN_KEY: Final = hashlib.sha256(b"semops test pin key").digest()
OTHER_PIN_KEY: Final = hashlib.sha256(b"semops test other pin key").digest()
ORDER_DIGEST: Final = "o" * 43
OTHER_ORDER_DIGEST: Final = "p" * 43


def seed(label: str) -> bytes:
    return hashlib.sha384(f"semops pin test {label}".encode()).digest()


def enc_key(owner: str) -> PrivateKey:
    return derive_key(owner, KeyUse.ENCRYPT, seed(owner))


PAYER_KEY: Final = enc_key("bank-a")
OTHER_KEY: Final = enc_key("bank-c")


def record(key: PrivateKey) -> PublicKeyRecord:
    return key.public_record(0, 2**34)


STORED: Final = pin_verification_value(PIN_KEY, CREDENTIAL, PIN)


def error_of(action: Any) -> SemopsError:
    with pytest.raises(SemopsError) as caught:
        action()
    return caught.value


def shows(error: SemopsError, secret: str) -> bool:
    texts = [str(error), repr(error), error.detail, repr(error.extra), repr(error.to_problem())]
    for cause in (error.__cause__, error.__context__):
        if cause is not None:
            texts += [str(cause), repr(cause)]
    return any(secret in text for text in texts)


# --- Format ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pin", ["0000", "1234", "12345", "123456", "999999"])
def test_four_to_six_ascii_digits_are_a_pin(pin: str) -> None:
    assert check_pin_format(pin) == pin


@pytest.mark.parametrize(
    "pin",
    [
        "12a4",
        "\uff11\uff12\uff13\uff14",  # full-width digits
        "١٢٣٤",  # Arabic-Indic digits
        "123",
        "1234567",
        " 1234",
        "1234 ",
        "1234\n",
        "12 34",
        "+1234",
        "-1234",
        "12.34",
        "",
        1234,
        None,
        b"1234",
        ["1234"],
    ],
    ids=repr,
)
def test_anything_else_is_refused_as_pin_format(pin: Any) -> None:
    error = error_of(lambda: check_pin_format(pin))
    assert error.code == "pin_format"
    if isinstance(pin, str) and pin.strip():
        assert not shows(error, pin.strip())


# --- The PIN block --------------------------------------------------------------------------


def test_pin_block_opens_to_the_pin_for_its_order() -> None:
    block = make_pin_block(PIN, ORDER_DIGEST, record(PAYER_KEY))
    assert open_pin_block(block, PAYER_KEY, ORDER_DIGEST) == PIN


def test_pin_block_is_sealed_and_different_every_time() -> None:
    first = make_pin_block(PIN, ORDER_DIGEST, record(PAYER_KEY))
    second = make_pin_block(PIN, ORDER_DIGEST, record(PAYER_KEY))
    assert first != second
    assert PIN not in first
    header = b64url_decode(first.split(".")[0]).decode()
    assert PIN not in header
    assert ORDER_DIGEST not in header


def test_pin_block_for_another_order_is_pin_block_mismatch() -> None:
    block = make_pin_block(PIN, ORDER_DIGEST, record(PAYER_KEY))
    error = error_of(lambda: open_pin_block(block, PAYER_KEY, OTHER_ORDER_DIGEST))
    assert error.code == "pin_block_mismatch"
    assert not shows(error, PIN)


def test_pin_block_for_another_processor_is_seal_invalid() -> None:
    block = make_pin_block(PIN, ORDER_DIGEST, record(PAYER_KEY))
    error = error_of(lambda: open_pin_block(block, OTHER_KEY, ORDER_DIGEST))
    assert error.code == "seal_invalid"
    assert not shows(error, PIN)


def test_pin_block_cannot_be_sealed_to_or_opened_with_a_signing_key() -> None:
    signing = derive_key("bank-a", KeyUse.SIGN, seed("bank-a sig"))
    assert error_of(lambda: make_pin_block(PIN, ORDER_DIGEST, record(signing))).code == (
        "key_wrong_use"
    )
    block = make_pin_block(PIN, ORDER_DIGEST, record(PAYER_KEY))
    assert error_of(lambda: open_pin_block(block, signing, ORDER_DIGEST)).code == "key_wrong_use"


@pytest.mark.parametrize("pin", ["123", "12a4", "1234567", "\uff11\uff12\uff13\uff14"])
def test_a_malformed_pin_is_never_sealed(pin: str) -> None:
    error = error_of(lambda: make_pin_block(pin, ORDER_DIGEST, record(PAYER_KEY)))
    assert error.code == "pin_format"
    assert not shows(error, pin)


@pytest.mark.parametrize(
    "claims",
    [
        {"v": PIN_BLOCK_VERSION, "pin": PIN},
        {"v": PIN_BLOCK_VERSION, "pin": PIN, "order_digest": ORDER_DIGEST, "amount": 5},
        {"v": 2, "pin": PIN, "order_digest": ORDER_DIGEST},
        {"v": "1", "pin": PIN, "order_digest": ORDER_DIGEST},
        {"v": True, "pin": PIN, "order_digest": ORDER_DIGEST},
        {"pin": PIN, "order_digest": ORDER_DIGEST},
    ],
    ids=["no-digest", "extra-member", "v2", "v-string", "v-true", "no-version"],
)
def test_a_sealed_object_that_is_not_a_pin_block_is_seal_invalid(claims: dict[str, Any]) -> None:
    block = seal_for(claims, record(PAYER_KEY))
    error = error_of(lambda: open_pin_block(block, PAYER_KEY, ORDER_DIGEST))
    assert error.code == "seal_invalid"
    assert not shows(error, PIN)


@pytest.mark.parametrize("digest", [None, 43, [ORDER_DIGEST], ORDER_DIGEST + " "], ids=repr)
def test_a_pin_block_whose_digest_is_not_the_orders_is_a_mismatch(digest: Any) -> None:
    block = seal_for(
        {"v": PIN_BLOCK_VERSION, "pin": PIN, "order_digest": digest}, record(PAYER_KEY)
    )
    assert error_of(lambda: open_pin_block(block, PAYER_KEY, ORDER_DIGEST)).code == (
        "pin_block_mismatch"
    )


@pytest.mark.parametrize("pin", ["12a4", "123", 1234, None], ids=repr)
def test_a_pin_block_holding_a_malformed_pin_is_pin_format(pin: Any) -> None:
    block = seal_for(
        {"v": PIN_BLOCK_VERSION, "pin": pin, "order_digest": ORDER_DIGEST}, record(PAYER_KEY)
    )
    assert error_of(lambda: open_pin_block(block, PAYER_KEY, ORDER_DIGEST)).code == "pin_format"


# --- The PIN verification value -------------------------------------------------------------


def test_verification_value_is_hmac_sha256_of_credential_and_pin() -> None:
    expected = hmac.new(
        PIN_KEY, b"semops-pin-v1\x00" + CREDENTIAL.encode() + b"\x00" + PIN.encode(), "sha256"
    ).digest()
    assert expected == STORED
    assert len(STORED) == 32
    assert pin_verification_value(PIN_KEY, CREDENTIAL, PIN) == STORED


def test_verification_value_differs_per_credential_key_and_pin() -> None:
    values = {
        STORED,
        pin_verification_value(PIN_KEY, "cred-0002", PIN),
        pin_verification_value(OTHER_PIN_KEY, CREDENTIAL, PIN),
        pin_verification_value(PIN_KEY, CREDENTIAL, OTHER_PIN),
    }
    assert len(values) == 4


def test_verification_value_does_not_contain_the_pin() -> None:
    assert PIN.encode() not in STORED
    assert PIN not in STORED.hex()


def test_a_short_pin_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        pin_verification_value(b"k" * (PIN_KEY_MIN_BYTES - 1), CREDENTIAL, PIN)
    assert len(pin_verification_value(b"k" * PIN_KEY_MIN_BYTES, CREDENTIAL, PIN)) == 32


def test_a_malformed_pin_has_no_verification_value() -> None:
    assert error_of(lambda: pin_verification_value(PIN_KEY, CREDENTIAL, "12a4")).code == (
        "pin_format"
    )


# --- Checking a PIN and the lockout ---------------------------------------------------------


def attempt(pin: str, state: PinCheck | None = None) -> PinCheck:
    failures, locked = (state.failures, state.locked) if state else (0, False)
    return check_pin(PIN_KEY, CREDENTIAL, pin, STORED, failures, locked)


def test_the_right_pin_passes() -> None:
    result = attempt(PIN)
    assert result.ok
    assert result == PinCheck(0, False, None)


def test_the_customer_lockout_sequence() -> None:
    first = attempt(OTHER_PIN)
    assert not first.ok
    assert first.error is not None
    assert first.error.code == "pin_invalid"
    assert (first.failures, first.locked) == (1, False)
    assert first.error.extra == {"attempts_remaining": 2}

    second = attempt(OTHER_PIN, first)
    assert second.error is not None
    assert second.error.code == "pin_invalid"
    assert (second.failures, second.locked) == (2, False)
    assert second.error.extra == {"attempts_remaining": 1}

    third = attempt(OTHER_PIN, second)
    assert third.error is not None
    assert third.error.code == "pin_locked"
    assert (third.failures, third.locked) == (3, True)

    after = attempt(PIN, third)  # the right PIN no longer helps
    assert after.error is not None
    assert after.error.code == "pin_locked"
    assert after.locked


def test_a_right_pin_before_the_lock_resets_the_count() -> None:
    state = attempt(OTHER_PIN, attempt(OTHER_PIN))
    assert state.failures == 2
    reset = attempt(PIN, state)
    assert reset == PinCheck(0, False, None)
    again = attempt(OTHER_PIN, reset)
    assert again.error is not None
    assert again.error.code == "pin_invalid"
    assert again.failures == 1


def test_a_locked_credential_is_refused_without_comparing() -> None:
    # Even a stored value that no PIN matches gives pin_locked, not pin_invalid.
    result = check_pin(PIN_KEY, CREDENTIAL, PIN, b"\x00" * 32, 3, True)
    assert result.error is not None
    assert result.error.code == "pin_locked"
    assert result.failures == 3


def test_the_pin_of_another_credential_or_key_is_wrong() -> None:
    other_credential = check_pin(PIN_KEY, "cred-0002", PIN, STORED, 0, False)
    other_key = check_pin(OTHER_PIN_KEY, CREDENTIAL, PIN, STORED, 0, False)
    assert other_credential.error is not None
    assert other_credential.error.code == "pin_invalid"
    assert other_key.error is not None
    assert other_key.error.code == "pin_invalid"


@settings(max_examples=200, deadline=None)
@given(attempts=st.lists(st.booleans(), max_size=12))
def test_locked_exactly_when_three_consecutive_failures_happened(attempts: list[bool]) -> None:
    state: PinCheck | None = None
    run = 0  # the model: consecutive failures, and whether the lock has fallen
    locked = False
    for right in attempts:
        state = attempt(PIN if right else OTHER_PIN, state)
        if not locked:
            run = 0 if right else run + 1
            locked = run >= PIN_ATTEMPTS_MAX
        assert state.locked == locked
        if locked:
            assert state.error is not None
            assert state.error.code == "pin_locked"
        elif right:
            assert state.ok
            assert state.failures == 0
        else:
            assert state.error is not None
            assert state.error.code == "pin_invalid"
            assert state.failures == run
            assert state.error.extra["attempts_remaining"] == PIN_ATTEMPTS_MAX - run


def test_the_attempts_limit_can_be_set() -> None:
    result = check_pin(PIN_KEY, CREDENTIAL, OTHER_PIN, STORED, 0, False, attempts_max=1)
    assert result.locked
    assert result.error is not None
    assert result.error.code == "pin_locked"


# --- The PIN never shows --------------------------------------------------------------------


def test_no_error_about_a_pin_shows_the_pin() -> None:
    wrong = "246801"
    state = attempt(wrong)
    errors = []
    for _ in range(PIN_ATTEMPTS_MAX):
        assert state.error is not None
        errors.append(state.error)
        state = attempt(wrong, state)
    errors.append(error_of(lambda: check_pin_format("24680x")))
    block = make_pin_block(wrong, ORDER_DIGEST, record(PAYER_KEY))
    errors.append(error_of(lambda: open_pin_block(block, PAYER_KEY, OTHER_ORDER_DIGEST)))
    errors.append(error_of(lambda: open_pin_block(block, OTHER_KEY, ORDER_DIGEST)))
    for error in errors:
        for secret in (wrong, PIN, "24680"):
            assert not shows(error, secret), error
    assert {error.code for error in errors} == {
        "pin_invalid",
        "pin_locked",
        "pin_format",
        "pin_block_mismatch",
        "seal_invalid",
    }


def test_a_pin_check_result_does_not_show_the_pin() -> None:
    for state in (attempt(PIN), attempt("246801")):
        assert "246801" not in repr(state)
        assert PIN not in repr(state)
