"""The JWS recipe's verdicts on payloads, and reading claims before verification.

`verify_message` keeps one opaque `signature_invalid` for everything up to and including
the signature check, so a forger learns nothing about where a token failed. Once the
signature holds, the signer really sent those bytes: a payload that is not strict JSON (a
float, a duplicate claim, a bare value) is then `malformed`, which hides nothing.

`read_unverified_claims` reads the claims of a token whose key is not known yet (a
registration carries the certificate of its own signing key). It never verifies anything,
which the tests below make explicit so that no caller mistakes it for verification.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from semops.core.encoding import b64url_decode, b64url_encode, canonical_json
from semops.core.errors import SemopsError
from semops.core.limits import JSON_DEPTH_MAX, MESSAGE_MAX_BYTES
from semops.crypto import (
    KeyRing,
    KeyUse,
    PrivateKey,
    derive_key,
    read_unverified_claims,
    sign_message,
    verify_message,
)
from semops.crypto.jose import P256_ORDER, is_low_s, low_s

NOW: Final = 1_790_000_000


def _key(owner: str, label: str) -> PrivateKey:
    seed = hashlib.sha384(f"SEMOPS jose TEST key {label}".encode()).digest()
    return derive_key(owner, KeyUse.SIGN, seed)


SIGNER: Final = _key("bank-a", "bank-a sig")
STRANGER: Final = _key("bank-x", "not published")
RING: Final = KeyRing([SIGNER.public_record(NOW - 86_400, NOW + 86_400)])
CLAIMS: Final = {"v": 1, "type": "TransferFulfil", "amount_minor": 1250, "note": "ok"}


def raw_jws(payload: bytes, key: PrivateKey = SIGNER) -> str:
    """An ES256 compact JWS over arbitrary payload bytes, under the key's kid."""
    header = json.dumps({"alg": "ES256", "kid": key.kid}, separators=(",", ":")).encode()
    signing_input = b64url_encode(header) + "." + b64url_encode(payload)
    der = key.key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    signature = low_s(r.to_bytes(32, "big") + s.to_bytes(32, "big"))  # as every signer must
    return signing_input + "." + b64url_encode(signature)


def broken(token: str) -> str:
    """The same token with its signature altered (one bit of its first byte)."""
    header, payload, signature = token.split(".")
    first = "B" if signature[0] == "A" else "A"
    return f"{header}.{payload}.{first}{signature[1:]}"


def code_of(action: Any) -> str:
    with pytest.raises(SemopsError) as caught:
        action()
    return caught.value.code


NOT_STRICT_JSON: Final = {
    "float": b'{"v":1,"amount_minor":1250.0}',
    "exponent": b'{"v":1,"amount_minor":1e3}',
    "duplicate-claim": b'{"v":1,"amount_minor":1,"amount_minor":999999}',
    "nan": b'{"v":1,"amount_minor":NaN}',
    "infinity": b'{"v":1,"amount_minor":Infinity}',
    "not-json": b"hello",
    "truncated": b'{"v":1,',
    "invalid-utf8": b'{"v":"\xff"}',
    "utf8-bom": b'\xef\xbb\xbf{"v":1}',
    "too-deep": b'{"a":' * (JSON_DEPTH_MAX + 2) + b"1" + b"}" * (JSON_DEPTH_MAX + 2),
}
NOT_AN_OBJECT: Final = {
    "array": b"[1,2]",
    "number": b"1",
    "string": b'"claims"',
    "null": b"null",
    "true": b"true",
}
ALL_BAD_PAYLOADS: Final = NOT_STRICT_JSON | NOT_AN_OBJECT


def test_a_canonical_payload_verifies_to_its_claims() -> None:
    token = sign_message(CLAIMS, SIGNER)
    verified = verify_message(token, RING, NOW)
    assert verified.claims == CLAIMS
    assert verified.signer.kid == SIGNER.kid
    assert verified.token == token


@pytest.mark.parametrize("payload", list(ALL_BAD_PAYLOADS.values()), ids=list(ALL_BAD_PAYLOADS))
def test_a_validly_signed_payload_that_is_not_a_strict_json_object_is_malformed(
    payload: bytes,
) -> None:
    assert code_of(lambda: verify_message(raw_jws(payload), RING, NOW)) == "malformed"


@pytest.mark.parametrize("payload", list(ALL_BAD_PAYLOADS.values()), ids=list(ALL_BAD_PAYLOADS))
def test_the_same_payload_under_a_broken_signature_is_signature_invalid(payload: bytes) -> None:
    # Before the signature holds, nothing about the payload is revealed.
    token = broken(raw_jws(payload))
    assert code_of(lambda: verify_message(token, RING, NOW)) == "signature_invalid"


@pytest.mark.parametrize("payload", list(ALL_BAD_PAYLOADS.values()), ids=list(ALL_BAD_PAYLOADS))
def test_the_same_payload_under_an_unknown_key_is_key_unknown(payload: bytes) -> None:
    # The key is looked up before the payload is read.
    token = raw_jws(payload, STRANGER)
    assert code_of(lambda: verify_message(token, RING, NOW)) == "key_unknown"


def test_a_validly_signed_payload_over_the_size_limit_is_too_large() -> None:
    claims = {"v": 1, "pad": "x" * 2000}
    token = sign_message(claims, SIGNER)
    assert code_of(lambda: verify_message(token, RING, NOW, max_bytes=len(token) - 1)) == (
        "too_large"
    )
    assert verify_message(token, RING, NOW, max_bytes=len(token)).claims == claims


# --- Reading claims before verification ----------------------------------------------------


def test_unverified_claims_are_the_claims_of_a_well_formed_token() -> None:
    token = sign_message(CLAIMS, SIGNER)
    assert read_unverified_claims(token) == CLAIMS == verify_message(token, RING, NOW).claims


def test_unverified_claims_are_read_without_any_key() -> None:
    # A registration is signed by a key nobody knows yet: its claims must be readable.
    token = sign_message(CLAIMS, STRANGER)
    assert read_unverified_claims(token) == CLAIMS
    assert code_of(lambda: verify_message(token, RING, NOW)) == "key_unknown"


def test_unverified_claims_are_read_even_under_a_broken_signature() -> None:
    # Which is exactly why they must never be trusted before verify_message succeeds.
    token = broken(sign_message(CLAIMS, SIGNER))
    assert read_unverified_claims(token) == CLAIMS
    assert code_of(lambda: verify_message(token, RING, NOW)) == "signature_invalid"


@pytest.mark.parametrize("payload", list(ALL_BAD_PAYLOADS.values()), ids=list(ALL_BAD_PAYLOADS))
def test_unverified_claims_that_are_not_a_strict_json_object_are_signature_invalid(
    payload: bytes,
) -> None:
    # Nothing vouches for an unverified token, so its refusals stay opaque.
    assert code_of(lambda: read_unverified_claims(raw_jws(payload))) == "signature_invalid"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b",
        "a.b.c.d",
        "a.b.c.d.e",
        "eyJ9.e30",
        "eyJhbGciOiJFUzI1NiJ9.e30=.c2ln",  # padded base64url
        "eyJhbGciOiJFUzI1NiJ9.e3+.c2ln",  # standard base64 alphabet
        "eyJhbGciOiJFUzI1NiJ9.ë30.c2ln",  # not ASCII
        None,
        7,
        b"a.e30.c",
    ],
    ids=repr,
)
def test_unverified_claims_of_a_malformed_token_are_signature_invalid(token: Any) -> None:
    assert code_of(lambda: read_unverified_claims(token)) == "signature_invalid"


def test_unverified_claims_are_size_bounded() -> None:
    claims = {"v": 1, "pad": "x" * 2000}
    token = sign_message(claims, SIGNER)
    assert read_unverified_claims(token, max_bytes=len(token)) == claims
    assert code_of(lambda: read_unverified_claims(token, max_bytes=len(token) - 1)) == "too_large"
    huge = "e30." + "A" * MESSAGE_MAX_BYTES + ".c2ln"
    assert code_of(lambda: read_unverified_claims(huge)) == "too_large"


def test_unverified_claims_are_a_fresh_copy_each_time() -> None:
    token = sign_message(CLAIMS, SIGNER)
    first = read_unverified_claims(token)
    first["amount_minor"] = 1
    assert read_unverified_claims(token) == CLAIMS
    assert canonical_json(read_unverified_claims(token)) == canonical_json(CLAIMS)


# --- low-S (no second valid form of one signature) ------------------------------------------


def test_low_s_keeps_a_low_s_and_flips_a_high_one() -> None:
    r = (12345).to_bytes(32, "big")
    low = r + (P256_ORDER // 2).to_bytes(32, "big")
    high = r + (P256_ORDER // 2 + 1).to_bytes(32, "big")
    assert low_s(low) == low and is_low_s(low)
    assert low_s(high) == r + (P256_ORDER - P256_ORDER // 2 - 1).to_bytes(32, "big")
    assert is_low_s(low_s(high)) and not is_low_s(high)


@pytest.mark.parametrize(
    "signature",
    [
        bytes(64),
        b"\x01" * 63,
        (1).to_bytes(32, "big") + bytes(32),
        P256_ORDER.to_bytes(32, "big") * 2,
    ],
    ids=["zero", "short", "s zero", "r and s the order"],
)
def test_signatures_out_of_range_are_not_low_s(signature: bytes) -> None:
    assert not is_low_s(signature)


def test_every_signature_we_make_is_low_s_and_its_high_twin_is_refused() -> None:
    for number in range(32):  # a high s would show half the time
        token = sign_message({**CLAIMS, "note": str(number)}, SIGNER)
        head, body, signature = token.split(".")
        raw = b64url_decode(signature)
        assert is_low_s(raw)
        s = int.from_bytes(raw[32:], "big")
        twin = f"{head}.{body}.{b64url_encode(raw[:32] + (P256_ORDER - s).to_bytes(32, 'big'))}"
        assert code_of(lambda twin=twin: verify_message(twin, RING, NOW)) == "signature_invalid"
