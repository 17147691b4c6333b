"""The hash lock (DESIGN.md §3) and the one-time payer reference (DESIGN.md §5).

A fulfilment is 32 random bytes; the condition is SHA-256 of them; only the preimage opens
the lock, and anything that is not exactly 32 bytes of canonical base64url is refused as
`fulfilment_invalid`, never as a stray exception. The payer reference is a keyed hash of
the transfer id: one per transfer, unlinkable without the key.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Final

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from semops.core.encoding import b64url_decode, b64url_encode
from semops.core.errors import SemopsError
from semops.core.limits import FULFILMENT_BYTES
from semops.crypto.hashlock import check_fulfilment, condition_for, make_fulfilment
from semops.crypto.pseudonym import REFERENCE_KEY_MIN_BYTES, payer_reference

ENTROPY: Final = hashlib.sha256(b"semops hashlock test").digest()
FULFILMENT: Final = make_fulfilment(ENTROPY)
CONDITION: Final = condition_for(FULFILMENT)

entropy_32 = st.binary(min_size=FULFILMENT_BYTES, max_size=FULFILMENT_BYTES)


def code_of(action: Any) -> str:
    with pytest.raises(SemopsError) as caught:
        action()
    return caught.value.code


# --- Hash lock ------------------------------------------------------------------------------


def test_fulfilment_is_the_entropy_in_base64url() -> None:
    assert b64url_decode(FULFILMENT) == ENTROPY
    assert len(FULFILMENT) == 43
    assert "=" not in FULFILMENT


def test_condition_is_sha256_of_the_fulfilment_bytes() -> None:
    assert b64url_encode(hashlib.sha256(ENTROPY).digest()) == CONDITION
    assert len(CONDITION) == 43


@settings(max_examples=200)
@given(entropy=entropy_32)
def test_every_fulfilment_opens_its_own_condition(entropy: bytes) -> None:
    fulfilment = make_fulfilment(entropy)
    condition = condition_for(fulfilment)
    check_fulfilment(fulfilment, condition)  # does not raise
    assert condition != fulfilment


@settings(max_examples=200)
@given(one=entropy_32, other=entropy_32)
def test_no_other_fulfilment_opens_a_condition(one: bytes, other: bytes) -> None:
    assume(one != other)
    condition = condition_for(make_fulfilment(one))
    assert code_of(lambda: check_fulfilment(make_fulfilment(other), condition)) == (
        "fulfilment_invalid"
    )


def test_the_condition_itself_does_not_open_the_lock() -> None:
    assert code_of(lambda: check_fulfilment(CONDITION, CONDITION)) == "fulfilment_invalid"
    assert code_of(lambda: check_fulfilment(CONDITION, FULFILMENT)) == "fulfilment_invalid"


def _non_canonical(text: str) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return text[:-1] + alphabet[alphabet.index(text[-1]) ^ 1]


MALFORMED: Final = [
    pytest.param("", id="empty"),
    pytest.param(FULFILMENT + "=", id="padded"),
    pytest.param(FULFILMENT[:-1], id="one-char-short"),
    pytest.param(b64url_encode(ENTROPY[:31]), id="31-bytes"),
    pytest.param(b64url_encode(ENTROPY + b"\x00"), id="33-bytes"),
    pytest.param(b64url_encode(ENTROPY * 2), id="64-bytes"),
    pytest.param("A" * 100, id="over-long"),
    pytest.param(FULFILMENT.replace(FULFILMENT[0], "+", 1), id="plus"),
    pytest.param(FULFILMENT.replace(FULFILMENT[0], "/", 1), id="slash"),
    pytest.param(FULFILMENT[:-1] + "é", id="non-ascii"),
    pytest.param(FULFILMENT[:20] + " " + FULFILMENT[21:], id="space"),
    pytest.param(_non_canonical(FULFILMENT), id="non-canonical-bits"),
    pytest.param(None, id="none"),
    pytest.param(ENTROPY, id="bytes"),
    pytest.param(42, id="int"),
]


@pytest.mark.parametrize("bad", MALFORMED)
def test_malformed_fulfilment_is_fulfilment_invalid(bad: Any) -> None:
    assert code_of(lambda: check_fulfilment(bad, CONDITION)) == "fulfilment_invalid"
    assert code_of(lambda: condition_for(bad)) == "fulfilment_invalid"


@pytest.mark.parametrize("bad", MALFORMED)
def test_malformed_condition_is_fulfilment_invalid(bad: Any) -> None:
    assert code_of(lambda: check_fulfilment(FULFILMENT, bad)) == "fulfilment_invalid"


@pytest.mark.parametrize("length", [0, 16, FULFILMENT_BYTES - 1, FULFILMENT_BYTES + 1, 64])
def test_make_fulfilment_needs_exactly_32_bytes(length: int) -> None:
    with pytest.raises(ValueError, match="exactly"):
        make_fulfilment(b"\x07" * length)


# --- One-time payer reference ---------------------------------------------------------------

REFERENCE_KEY: Final = hashlib.sha256(b"semops payer reference key").digest()
OTHER_KEY: Final = hashlib.sha256(b"semops other payer reference key").digest()
TRANSFER: Final = "tr_" + "T" * 22


def test_payer_reference_is_a_keyed_hash_of_the_transfer_id() -> None:
    expected = hmac.new(
        REFERENCE_KEY, b"semops-payer-ref-v1\x00" + TRANSFER.encode(), hashlib.sha256
    ).digest()
    assert payer_reference(REFERENCE_KEY, TRANSFER) == b64url_encode(expected)
    assert len(payer_reference(REFERENCE_KEY, TRANSFER)) == 43


def test_payer_reference_is_stable_for_the_same_key_and_transfer() -> None:
    assert payer_reference(REFERENCE_KEY, TRANSFER) == payer_reference(REFERENCE_KEY, TRANSFER)


@settings(max_examples=100)
@given(one=st.text(min_size=1, max_size=64), other=st.text(min_size=1, max_size=64))
def test_payer_reference_differs_per_transfer(one: str, other: str) -> None:
    assume(one != other)
    assert payer_reference(REFERENCE_KEY, one) != payer_reference(REFERENCE_KEY, other)


def test_payer_reference_differs_per_key() -> None:
    assert payer_reference(REFERENCE_KEY, TRANSFER) != payer_reference(OTHER_KEY, TRANSFER)


def test_payer_reference_does_not_contain_the_transfer_id() -> None:
    assert TRANSFER not in payer_reference(REFERENCE_KEY, TRANSFER)
    assert payer_reference(REFERENCE_KEY, TRANSFER) != b64url_encode(
        hashlib.sha256(TRANSFER.encode()).digest()
    )


def test_a_short_reference_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        payer_reference(b"k" * (REFERENCE_KEY_MIN_BYTES - 1), TRANSFER)
    assert payer_reference(b"k" * REFERENCE_KEY_MIN_BYTES, TRANSFER)
