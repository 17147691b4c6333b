"""Public keys as the recipes use them: imported once per point, validated, bounded.

A directory key is imported into a `cryptography` object once per (x, y) and kept in a
bounded cache; an ephemeral key of a sealed part is imported each time and never cached
(it is new every time, and would only push the directory's keys out). A point is accepted
only with both coordinates below the field prime and on the curve. A record whose JWK is
no such point (one that nobody validated) fails the recipes with their own opaque codes,
never with a crash.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Final

import pytest

from semops.core.encoding import b64url_decode, b64url_encode
from semops.core.errors import SemopsError
from semops.core.limits import PUBLIC_KEY_CACHE_ENTRIES
from semops.crypto import (
    KeyRing,
    KeyUse,
    PrivateKey,
    derive_key,
    open_sealed,
    seal_for,
    sign_message,
    verify_message,
)
from semops.crypto import keys as keys_module
from semops.crypto.keys import p256_point

NOW: Final = 1_790_000_000
P256_PRIME: Final = 2**256 - 2**224 + 2**192 + 2**96 - 1
P256_B: Final = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B


def _key(owner: str, use: KeyUse, label: str) -> PrivateKey:
    return derive_key(
        owner, use, hashlib.sha384(f"SEMOPS public key TEST {label}".encode()).digest()
    )


SIGNER: Final = _key("bank-a", KeyUse.SIGN, "sig")
RECIPIENT: Final = _key("bank-b", KeyUse.ENCRYPT, "enc")


def _coordinate(value: int) -> str:
    return b64url_encode(value.to_bytes(32, "big"))


def _small_point() -> tuple[int, int]:
    """A point on P-256 with a small x, so that x + p still fits in 32 bytes."""
    for x in range(1, 1000):
        rhs = (x**3 - 3 * x + P256_B) % P256_PRIME
        y = pow(rhs, (P256_PRIME + 1) // 4, P256_PRIME)  # p = 3 mod 4: a square root
        if y * y % P256_PRIME == rhs:
            return x, y
    raise AssertionError("no small point")


def _code(call: Any) -> str:
    with pytest.raises(SemopsError) as refused:
        call()
    return refused.value.code


def test_a_record_gives_its_point_as_one_cached_object() -> None:
    record = SIGNER.public_record(0, 1)
    again = SIGNER.public_record(2, 3)
    assert record.public_key() is again.public_key()  # the same (x, y): imported once
    assert record.public_key().public_numbers() == SIGNER.key.public_key().public_numbers()


def test_the_cache_is_bounded() -> None:
    assert keys_module._cached_point.cache_info().maxsize == PUBLIC_KEY_CACHE_ENTRIES


def test_opening_sealed_parts_does_not_fill_the_cache_with_ephemeral_keys() -> None:
    record = RECIPIENT.public_record(NOW - 60, NOW + 60)
    tokens = [seal_for({"v": 1, "n": number}, record) for number in range(20)]
    before = keys_module._cached_point.cache_info().currsize
    for number, token in enumerate(tokens):
        assert open_sealed(token, RECIPIENT) == {"v": 1, "n": number}
    assert keys_module._cached_point.cache_info().currsize == before


def test_a_point_on_the_curve_is_accepted_and_its_coordinates_plus_p_are_not() -> None:
    x, y = _small_point()
    assert p256_point(_coordinate(x), _coordinate(y)).public_numbers().x == x
    with pytest.raises(ValueError, match="prime"):
        p256_point(_coordinate(x + P256_PRIME), _coordinate(y))
    with pytest.raises(ValueError, match="prime"):
        p256_point(_coordinate(x), _coordinate(2**256 - 1))


@pytest.mark.parametrize(
    ("x", "y"),
    [
        (_coordinate(0), _coordinate(0)),
        (_coordinate(1), _coordinate(1)),
        (_coordinate(5), _coordinate(5)),
        ("A" * 42, "A" * 43),
        ("A" * 43 + "=", "A" * 43),
        (b64url_encode(bytes(33)), "A" * 43),
        (None, "A" * 43),
        (7, "A" * 43),
    ],
    ids=["zero", "one-one", "five-five", "short", "padded", "33-bytes", "none", "int"],
)
def test_anything_but_a_point_is_a_value_error(x: Any, y: Any) -> None:
    with pytest.raises(ValueError):
        p256_point(x, y)


@pytest.mark.parametrize(
    "jwk_change",
    [
        {"y": "x"},
        {"x": _coordinate(P256_PRIME)},
        {"x": None},
    ],
    ids=["not-base64url-point", "x-is-p", "x-none"],
)
def test_a_record_that_is_no_point_fails_the_recipes_opaquely(jwk_change: dict[str, Any]) -> None:
    signer = SIGNER.public_record(NOW - 60, NOW + 60)
    bad_signer = dataclasses.replace(signer, jwk={**signer.jwk, **jwk_change})
    token = sign_message({"v": 1}, SIGNER)
    assert _code(lambda: verify_message(token, KeyRing([bad_signer]), NOW)) == "signature_invalid"
    recipient = RECIPIENT.public_record(NOW - 60, NOW + 60)
    bad_recipient = dataclasses.replace(recipient, jwk={**recipient.jwk, **jwk_change})
    assert _code(lambda: seal_for({"v": 1}, bad_recipient)) == "validation_failed"


def test_a_record_without_coordinates_fails_the_recipes_opaquely() -> None:
    signer = SIGNER.public_record(NOW - 60, NOW + 60)
    bad = dataclasses.replace(signer, jwk={"kty": "EC", "crv": "P-256"})
    token = sign_message({"v": 1}, SIGNER)
    assert _code(lambda: verify_message(token, KeyRing([bad]), NOW)) == "signature_invalid"


def test_a_decoded_coordinate_round_trips() -> None:
    jwk = SIGNER.public_record(0, 1).jwk
    point = p256_point(jwk["x"], jwk["y"]).public_numbers()
    assert b64url_decode(jwk["x"]) == point.x.to_bytes(32, "big")
    assert b64url_decode(jwk["y"]) == point.y.to_bytes(32, "big")
