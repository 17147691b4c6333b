"""Key pairs and their public records.

Every SEMOPS key is ECDSA/ECDH on P-256 (DESIGN.md §4: verifies fast, passes X.509 path
validation, exists in every browser's WebCrypto). A key is derived from entropy handed in by
the caller, so the core makes no randomness of its own and test vectors are reproducible.
A key is named by its `kid`, "<owner>:<first 16 chars of the RFC 7638 thumbprint>", which
the directory (or a processor's device registry) maps to a `PublicKeyRecord`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec

from semops.core.encoding import b64url_decode, b64url_encode
from semops.core.errors import E, SemopsError
from semops.core.limits import KEY_SEED_BYTES, KID_MAX_CHARS, PUBLIC_KEY_CACHE_ENTRIES

# The order of the P-256 group (SEC 2, secp256r1 "n") and the prime of its field ("p").
_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_P256_PRIME: Final = 2**256 - 2**224 + 2**192 + 2**96 - 1
_KID_RE: Final = re.compile(r"^[A-Za-z0-9._~:-]+$")
_THUMBPRINT_CHARS_IN_KID: Final = 16
_PUBLIC_JWK_MEMBERS: Final = frozenset({"kty", "crv", "x", "y"})
_COORDINATE_BYTES: Final = 32
_COORDINATE_CHARS: Final = 43  # base64url of 32 bytes, unpadded


class KeyUse(StrEnum):
    SIGN = "sig"
    ENCRYPT = "enc"


class KeyStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


def derive_private_key(seed: bytes) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key from KEY_SEED_BYTES of fresh entropy (FIPS 186-5 A.2.1)."""
    if len(seed) != KEY_SEED_BYTES:
        raise ValueError(f"a key seed is exactly {KEY_SEED_BYTES} bytes")
    scalar = int.from_bytes(seed, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def public_jwk(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The public JWK members {kty, crv, x, y} of a P-256 key."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    if not isinstance(public.curve, ec.SECP256R1):
        raise ValueError("SEMOPS keys are P-256")
    numbers = public.public_numbers()
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": b64url_encode(numbers.x.to_bytes(_COORDINATE_BYTES, "big")),
        "y": b64url_encode(numbers.y.to_bytes(_COORDINATE_BYTES, "big")),
    }


def thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) of a public JWK: the required members
    {crv, kty, x, y} in lexicographic order, no white space (all ASCII for P-256)."""
    members = json.dumps(check_public_jwk(jwk), sort_keys=True, separators=(",", ":"))
    return b64url_encode(hashlib.sha256(members.encode("ascii")).digest())


def make_kid(owner: str, jwk: dict[str, str]) -> str:
    kid = f"{owner}:{thumbprint(jwk)[:_THUMBPRINT_CHARS_IN_KID]}"
    return check_kid(kid)


def check_kid(kid: str) -> str:
    # fullmatch, not match: with match() the pattern's '$' would admit a trailing newline.
    if not isinstance(kid, str) or not 1 <= len(kid) <= KID_MAX_CHARS or not _KID_RE.fullmatch(kid):
        raise SemopsError(E.KEY_UNKNOWN, "the key id is not well-formed")
    return kid


def _is_coordinate(value: Any) -> bool:
    try:
        return len(b64url_decode(value, max_chars=_COORDINATE_CHARS)) == _COORDINATE_BYTES
    except SemopsError:
        return False


def check_public_jwk(jwk: Any) -> dict[str, str]:
    """A public P-256 JWK with exactly {kty, crv, x, y}; private members are refused."""
    if not isinstance(jwk, dict) or set(jwk) != _PUBLIC_JWK_MEMBERS:
        raise SemopsError(E.VALIDATION_FAILED, "a public key is a JWK with kty, crv, x, y only")
    if jwk["kty"] != "EC" or jwk["crv"] != "P-256":
        raise SemopsError(E.VALIDATION_FAILED, "SEMOPS keys are EC P-256")
    # RFC 7518 6.2.1.2: each coordinate is exactly 32 bytes. A zero-padded or non-canonical
    # encoding is the same point under another thumbprint, so another kid for one key.
    if not all(_is_coordinate(jwk[name]) for name in ("x", "y")):
        raise SemopsError(E.VALIDATION_FAILED, "a P-256 coordinate is 32 bytes in base64url")
    try:
        p256_point(jwk["x"], jwk["y"])
    except ValueError as error:
        raise SemopsError(
            E.VALIDATION_FAILED, "the public key is not a valid P-256 point"
        ) from error
    return {name: str(jwk[name]) for name in sorted(_PUBLIC_JWK_MEMBERS)}


def p256_point(x: str, y: str) -> ec.EllipticCurvePublicKey:
    """The P-256 public key at (x, y), both 32-byte base64url coordinates.

    Raises ValueError unless both coordinates are below the field prime and the point is
    on the curve (OpenSSL checks both again). P-256 has cofactor 1: a point on the curve is
    in the group, there is no small subgroup to confine an ECDH secret to. Uncached: for
    the ephemeral keys of sealed parts, which are new each time."""
    try:
        x_bytes = b64url_decode(x, max_chars=_COORDINATE_CHARS)
        y_bytes = b64url_decode(y, max_chars=_COORDINATE_CHARS)
    except SemopsError as error:
        raise ValueError("a P-256 coordinate is 32 bytes in base64url") from error
    if len(x_bytes) != _COORDINATE_BYTES or len(y_bytes) != _COORDINATE_BYTES:
        raise ValueError("a P-256 coordinate is 32 bytes in base64url")
    if max(int.from_bytes(x_bytes, "big"), int.from_bytes(y_bytes, "big")) >= _P256_PRIME:
        raise ValueError("a P-256 coordinate must be below the field prime")
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + x_bytes + y_bytes)


@functools.lru_cache(maxsize=PUBLIC_KEY_CACHE_ENTRIES)
def _cached_point(x: str, y: str) -> ec.EllipticCurvePublicKey:
    """Importing a point validates it on the curve: do it once per key, not per message."""
    return p256_point(x, y)


@dataclass(frozen=True, slots=True)
class PublicKeyRecord:
    """What a directory or device registry says about one public key."""

    kid: str
    owner: str
    use: KeyUse
    jwk: dict[str, str]
    not_before: int
    not_after: int
    status: KeyStatus = KeyStatus.ACTIVE

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The key as a `cryptography` object, imported once per (x, y) and then cached.
        Raises ValueError if the record's JWK is not a P-256 point."""
        x, y = self.jwk.get("x"), self.jwk.get("y")
        if not isinstance(x, str) or not isinstance(y, str):
            raise ValueError("a public key record has the coordinates x and y")
        return _cached_point(x, y)


@dataclass(frozen=True, slots=True)
class PrivateKey:
    """A private key with its kid: the only object that can sign or open sealed parts."""

    kid: str
    owner: str
    use: KeyUse
    key: ec.EllipticCurvePrivateKey

    def __repr__(self) -> str:  # never print key material
        return f"PrivateKey(kid={self.kid!r}, use={self.use.value})"

    def public_record(
        self, not_before: int, not_after: int, status: KeyStatus = KeyStatus.ACTIVE
    ) -> PublicKeyRecord:
        return PublicKeyRecord(
            kid=self.kid,
            owner=self.owner,
            use=self.use,
            jwk=public_jwk(self.key),
            not_before=not_before,
            not_after=not_after,
            status=status,
        )


def private_key_for(owner: str, use: KeyUse, key: ec.EllipticCurvePrivateKey) -> PrivateKey:
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("SEMOPS keys are P-256")
    return PrivateKey(kid=make_kid(owner, public_jwk(key)), owner=owner, use=use, key=key)


def derive_key(owner: str, use: KeyUse, seed: bytes) -> PrivateKey:
    """A named key pair from entropy: `derive_key("bank-a", KeyUse.SIGN, token_bytes(48))`."""
    return private_key_for(owner, use, derive_private_key(seed))
