"""Keys and the key ring: how a key is made from entropy, named, published and looked up.

Key derivation is pinned to FIPS 186-5 A.2.1 and the kid to "<owner>:<16 chars of the RFC
7638 thumbprint>", both recomputed here independently. A public JWK is accepted only as
exactly {kty, crv, x, y} on P-256 with a point on the curve. The ring refuses unknown,
revoked, out-of-period and misused keys, each with its own code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from semops.core.encoding import b64url_decode, b64url_encode
from semops.core.errors import SemopsError
from semops.core.limits import KEY_SEED_BYTES, KID_MAX_CHARS
from semops.crypto.keyring import KeyRing
from semops.crypto.keys import (
    KeyStatus,
    KeyUse,
    PrivateKey,
    PublicKeyRecord,
    check_kid,
    check_public_jwk,
    derive_key,
    derive_private_key,
    make_kid,
    private_key_for,
    public_jwk,
    thumbprint,
)

# SEC 2 secp256r1: the group order n and the field prime p.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_PRIME = 2**256 - 2**224 + 2**192 + 2**96 - 1
NOW = 1_800_000_000


def seed(label: str) -> bytes:
    return hashlib.sha384(f"semops key test {label}".encode()).digest()


def code_of(action: Any) -> str:
    with pytest.raises(SemopsError) as caught:
        action()
    return caught.value.code


def private_value(key: ec.EllipticCurvePrivateKey) -> int:
    return key.private_numbers().private_value


SIGNER = derive_key("bank-a", KeyUse.SIGN, seed("bank-a sig"))
JWK = public_jwk(SIGNER.key)


# --- Derivation -----------------------------------------------------------------------------


def test_derivation_is_fips_186_5_a_2_1() -> None:
    # d = (c mod (n - 1)) + 1, with c the seed read as a big-endian integer.
    for label in ("one", "two", "three"):
        raw = seed(label)
        expected = int.from_bytes(raw, "big") % (P256_ORDER - 1) + 1
        assert private_value(derive_private_key(raw)) == expected


@pytest.mark.parametrize(
    ("raw", "scalar"),
    [(b"\x00" * KEY_SEED_BYTES, 1), (b"\xff" * KEY_SEED_BYTES, None)],
    ids=["all-zero", "all-ones"],
)
def test_every_seed_gives_a_scalar_in_range(raw: bytes, scalar: int | None) -> None:
    value = private_value(derive_private_key(raw))
    assert 1 <= value < P256_ORDER
    if scalar is not None:
        assert value == scalar


@settings(max_examples=25, deadline=None)
@given(raw=st.binary(min_size=KEY_SEED_BYTES, max_size=KEY_SEED_BYTES))
def test_derivation_is_deterministic(raw: bytes) -> None:
    first, second = derive_private_key(raw), derive_private_key(raw)
    assert private_value(first) == private_value(second)
    assert public_jwk(first) == public_jwk(second)


@settings(max_examples=25, deadline=None)
@given(
    one=st.binary(min_size=KEY_SEED_BYTES, max_size=KEY_SEED_BYTES),
    other=st.binary(min_size=KEY_SEED_BYTES, max_size=KEY_SEED_BYTES),
)
def test_different_seeds_give_different_keys(one: bytes, other: bytes) -> None:
    if int.from_bytes(one, "big") % (P256_ORDER - 1) == int.from_bytes(other, "big") % (
        P256_ORDER - 1
    ):
        return  # the same residue: only for seeds that differ by a multiple of n - 1
    assert public_jwk(derive_private_key(one)) != public_jwk(derive_private_key(other))


@pytest.mark.parametrize("length", [0, 16, 32, KEY_SEED_BYTES - 1, KEY_SEED_BYTES + 1, 64])
def test_a_seed_of_the_wrong_length_is_refused(length: int) -> None:
    with pytest.raises(ValueError, match="exactly"):
        derive_private_key(b"\x01" * length)


def test_derived_key_is_named_for_its_owner_and_use() -> None:
    key = derive_key("mno-b", KeyUse.ENCRYPT, seed("mno-b enc"))
    assert key.owner == "mno-b"
    assert key.use is KeyUse.ENCRYPT
    assert key.kid == make_kid("mno-b", public_jwk(key.key))
    assert isinstance(key.key.curve, ec.SECP256R1)


def test_a_key_on_another_curve_is_refused() -> None:
    other = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError, match="P-256"):
        private_key_for("bank-a", KeyUse.SIGN, other)
    with pytest.raises(ValueError, match="P-256"):
        public_jwk(other)


# --- Public JWK and kid ---------------------------------------------------------------------


def test_public_jwk_has_exactly_kty_crv_x_y() -> None:
    assert set(JWK) == {"kty", "crv", "x", "y"}
    assert JWK["kty"] == "EC"
    assert JWK["crv"] == "P-256"
    assert len(b64url_decode(JWK["x"])) == len(b64url_decode(JWK["y"])) == 32


def test_public_jwk_is_the_public_point_of_the_key() -> None:
    numbers = SIGNER.key.public_key().public_numbers()
    assert int.from_bytes(b64url_decode(JWK["x"]), "big") == numbers.x
    assert int.from_bytes(b64url_decode(JWK["y"]), "big") == numbers.y
    assert public_jwk(SIGNER.key.public_key()) == JWK


def test_thumbprint_is_rfc_7638() -> None:
    canonical = json.dumps(
        {"crv": JWK["crv"], "kty": JWK["kty"], "x": JWK["x"], "y": JWK["y"]},
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    assert thumbprint(JWK) == b64url_encode(hashlib.sha256(canonical).digest())


def test_kid_is_owner_and_sixteen_thumbprint_characters() -> None:
    kid = make_kid("bank-a", JWK)
    assert re.fullmatch(r"bank-a:[A-Za-z0-9_-]{16}", kid)
    assert kid == "bank-a:" + thumbprint(JWK)[:16]
    assert SIGNER.kid == kid


def test_kid_is_stable_and_differs_per_key_and_owner() -> None:
    assert make_kid("bank-a", JWK) == make_kid("bank-a", dict(JWK))
    assert make_kid("bank-a", JWK) == derive_key("bank-a", KeyUse.SIGN, seed("bank-a sig")).kid
    other = public_jwk(derive_private_key(seed("other")))
    assert make_kid("bank-a", other) != make_kid("bank-a", JWK)
    assert make_kid("bank-b", JWK).split(":")[1] == make_kid("bank-a", JWK).split(":")[1]


@pytest.mark.parametrize(
    "kid", ["bank-a:abc", "a", "k" * KID_MAX_CHARS, "bank.a~x_y-z:0"], ids=repr
)
def test_well_formed_kid_is_accepted(kid: str) -> None:
    assert check_kid(kid) == kid


@pytest.mark.parametrize(
    "kid",
    ["", "k" * (KID_MAX_CHARS + 1), "bank a:x", "bank/a", "bank-a:x\n", "bank-a:é", None, 7],
    ids=repr,
)
def test_malformed_kid_is_key_unknown(kid: Any) -> None:
    assert code_of(lambda: check_kid(kid)) == "key_unknown"


def test_check_public_jwk_accepts_and_normalises_a_public_key() -> None:
    assert check_public_jwk(JWK) == JWK
    assert list(check_public_jwk(dict(reversed(list(JWK.items()))))) == ["crv", "kty", "x", "y"]


def _coordinate(value: int, size: int = 32) -> str:
    return b64url_encode(value.to_bytes(size, "big"))


_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _non_canonical(text: str) -> str:
    """The same bytes with a padding bit set in the last character."""
    return text[:-1] + _B64URL[_B64URL.index(text[-1]) ^ 1]


@pytest.mark.parametrize(
    "jwk",
    [
        pytest.param(JWK | {"d": _coordinate(private_value(SIGNER.key))}, id="private-member-d"),
        pytest.param(JWK | {"kid": "bank-a:x"}, id="extra-kid"),
        pytest.param(JWK | {"use": "sig"}, id="extra-use"),
        pytest.param({k: v for k, v in JWK.items() if k != "y"}, id="missing-y"),
        pytest.param(JWK | {"kty": "RSA"}, id="kty-RSA"),
        pytest.param(JWK | {"kty": "OKP", "crv": "Ed25519"}, id="kty-OKP"),
        pytest.param(JWK | {"crv": "P-384"}, id="crv-P-384"),
        pytest.param(JWK | {"crv": "secp256k1"}, id="crv-secp256k1"),
        pytest.param(JWK | {"y": JWK["x"]}, id="point-not-on-curve"),
        pytest.param(JWK | {"x": _coordinate(0), "y": _coordinate(0)}, id="point-zero"),
        pytest.param(JWK | {"x": _coordinate(P256_PRIME)}, id="x-equals-p"),
        pytest.param(JWK | {"x": JWK["x"][:-2]}, id="x-short"),
        pytest.param(JWK | {"x": JWK["x"] + "="}, id="x-padded"),
        pytest.param(JWK | {"y": _non_canonical(JWK["y"])}, id="y-non-canonical"),
        pytest.param(JWK | {"x": 5}, id="x-not-a-string"),
        pytest.param([JWK], id="not-a-dict"),
        pytest.param(None, id="none"),
    ],
)
def test_check_public_jwk_refuses_anything_but_a_public_p256_point(jwk: Any) -> None:
    assert code_of(lambda: check_public_jwk(jwk)) == "validation_failed"


def test_check_public_jwk_refuses_a_zero_padded_coordinate() -> None:
    # RFC 7518 6.2.1.2: a coordinate is exactly the curve's size (32 bytes). A padded one is
    # the same point in another encoding, with another thumbprint and so another kid.
    padded = JWK | {"x": b64url_encode(b"\x00" + b64url_decode(JWK["x"]))}
    assert code_of(lambda: check_public_jwk(padded)) == "validation_failed"


def test_private_key_repr_shows_no_key_material() -> None:
    secret = private_value(SIGNER.key)
    shown = [repr(SIGNER), str(SIGNER), f"{SIGNER}", f"{SIGNER!r}"]
    for text in shown:
        assert SIGNER.kid in text
        assert str(secret) not in text
        assert f"{secret:x}" not in text
        assert _coordinate(secret) not in text
        assert "private_value" not in text


def test_public_record_carries_the_public_half_only() -> None:
    record = SIGNER.public_record(10, 20, KeyStatus.REVOKED)
    assert record == PublicKeyRecord(
        kid=SIGNER.kid,
        owner="bank-a",
        use=KeyUse.SIGN,
        jwk=JWK,
        not_before=10,
        not_after=20,
        status=KeyStatus.REVOKED,
    )
    assert "d" not in record.jwk
    assert SIGNER.public_record(10, 20).status is KeyStatus.ACTIVE


def test_key_objects_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SIGNER.owner = "bank-b"  # type: ignore[misc]
    record = SIGNER.public_record(0, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.status = KeyStatus.REVOKED  # type: ignore[misc]


def test_key_uses_and_statuses_have_stable_wire_values() -> None:
    assert [use.value for use in KeyUse] == ["sig", "enc"]
    assert [status.value for status in KeyStatus] == ["active", "revoked"]


# --- The key ring ---------------------------------------------------------------------------

NOT_BEFORE = NOW - 1000
NOT_AFTER = NOW + 1000


def record_of(
    key: PrivateKey, status: KeyStatus = KeyStatus.ACTIVE, not_after: int = NOT_AFTER
) -> PublicKeyRecord:
    return key.public_record(NOT_BEFORE, not_after, status)


ENCRYPTER = derive_key("bank-a", KeyUse.ENCRYPT, seed("bank-a enc"))
RING = KeyRing([record_of(SIGNER), record_of(ENCRYPTER)])


def test_ring_resolves_a_usable_key() -> None:
    assert RING.resolve(SIGNER.kid, KeyUse.SIGN, NOW) == record_of(SIGNER)
    assert RING.resolve(ENCRYPTER.kid, KeyUse.ENCRYPT, NOW) == record_of(ENCRYPTER)


def test_ring_refuses_an_unknown_kid() -> None:
    stranger = derive_key("bank-a", KeyUse.SIGN, seed("stranger"))
    assert code_of(lambda: RING.resolve(stranger.kid, KeyUse.SIGN, NOW)) == "key_unknown"
    assert code_of(lambda: RING.resolve("no such kid!", KeyUse.SIGN, NOW)) == "key_unknown"
    assert code_of(lambda: RING.resolve(SIGNER.kid + "\n", KeyUse.SIGN, NOW)) == "key_unknown"


def test_ring_refuses_a_revoked_key_even_inside_its_period() -> None:
    ring = KeyRing([record_of(SIGNER, KeyStatus.REVOKED)])
    assert code_of(lambda: ring.resolve(SIGNER.kid, KeyUse.SIGN, NOW)) == "key_revoked"


@pytest.mark.parametrize(
    ("now", "code"),
    [
        (NOT_BEFORE - 1, "key_expired"),
        (NOT_BEFORE, None),
        (NOT_AFTER - 1, None),
        (NOT_AFTER, "key_expired"),
        (NOT_AFTER + 10**6, "key_expired"),
    ],
)
def test_ring_accepts_a_key_from_not_before_until_just_before_not_after(
    now: int, code: str | None
) -> None:
    if code is None:
        assert RING.resolve(SIGNER.kid, KeyUse.SIGN, now).kid == SIGNER.kid
    else:
        assert code_of(lambda: RING.resolve(SIGNER.kid, KeyUse.SIGN, now)) == code


def test_ring_refuses_a_key_for_the_other_use() -> None:
    assert code_of(lambda: RING.resolve(SIGNER.kid, KeyUse.ENCRYPT, NOW)) == "key_wrong_use"
    assert code_of(lambda: RING.resolve(ENCRYPTER.kid, KeyUse.SIGN, NOW)) == "key_wrong_use"


def test_ring_says_revoked_before_expired() -> None:
    ring = KeyRing([record_of(SIGNER, KeyStatus.REVOKED, not_after=NOW)])
    assert code_of(lambda: ring.resolve(SIGNER.kid, KeyUse.SIGN, NOW)) == "key_revoked"


def test_ring_refuses_two_different_records_under_one_kid() -> None:
    revoked = record_of(SIGNER, KeyStatus.REVOKED)
    code = code_of(lambda: KeyRing([record_of(SIGNER), revoked]))
    assert code == "directory_invalid"
    hijack = dataclasses.replace(record_of(ENCRYPTER), kid=SIGNER.kid, use=KeyUse.SIGN)
    assert code_of(lambda: KeyRing([record_of(SIGNER), hijack])) == "directory_invalid"


def test_ring_accepts_the_same_record_twice_once() -> None:
    ring = KeyRing([record_of(SIGNER), record_of(SIGNER)])
    assert len(ring) == 1


def test_with_records_returns_a_new_ring_and_leaves_the_old_one_alone() -> None:
    newer = derive_key("bank-a", KeyUse.SIGN, seed("bank-a sig 2"))
    grown = RING.with_records([record_of(newer), record_of(SIGNER, KeyStatus.REVOKED)])
    assert len(RING) == 2
    assert newer.kid not in RING
    assert RING.resolve(SIGNER.kid, KeyUse.SIGN, NOW).status is KeyStatus.ACTIVE
    assert len(grown) == 3
    assert newer.kid in grown
    assert code_of(lambda: grown.resolve(SIGNER.kid, KeyUse.SIGN, NOW)) == "key_revoked"


def test_ring_iterates_its_records() -> None:
    assert sorted(record.kid for record in RING) == sorted([SIGNER.kid, ENCRYPTER.kid])
    assert SIGNER.kid in RING
    assert "other" not in RING
    assert len(KeyRing()) == 0
