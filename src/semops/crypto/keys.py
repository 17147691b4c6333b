"""Key pairs and their public records.

Every SEMOPS key is ECDSA/ECDH on P-256 (DESIGN.md §4: verifies fast, passes X.509 path
validation, exists in every browser's WebCrypto). A key is derived from entropy handed in by
the caller, so the core makes no randomness of its own and test vectors are reproducible.
A key is named by its `kid`, "<owner>:<first 16 chars of the RFC 7638 thumbprint>", which
the directory (or a processor's device registry) maps to a `PublicKeyRecord`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from semops.core.encoding import b64url_decode
from semops.core.errors import E, SemopsError
from semops.core.limits import KEY_SEED_BYTES, KID_MAX_CHARS, PUBLIC_KEY_CACHE_ENTRIES

# The order of the P-256 group (SEC 2, secp256r1 "n").
_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
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
    members = ECKey.import_key(public).as_dict(private=False)
    return {name: str(members[name]) for name in sorted(_PUBLIC_JWK_MEMBERS)}


def thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) of a public JWK."""
    members: dict[str, str | list[str]] = dict(check_public_jwk(jwk))
    return str(ECKey.import_key(members).thumbprint())


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
        ECKey.import_key(dict(jwk))
    except Exception as error:  # joserfc raises several types for a bad point
        raise SemopsError(
            E.VALIDATION_FAILED, "the public key is not a valid P-256 point"
        ) from error
    return {name: str(jwk[name]) for name in sorted(_PUBLIC_JWK_MEMBERS)}


@functools.lru_cache(maxsize=PUBLIC_KEY_CACHE_ENTRIES)
def _public_ec_key(x: str, y: str) -> ECKey:
    """Importing a point validates it on the curve: do it once per key, not per message."""
    return ECKey.import_key({"kty": "EC", "crv": "P-256", "x": x, "y": y})


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

    def joserfc_key(self) -> ECKey:
        return _public_ec_key(self.jwk["x"], self.jwk["y"])


@dataclass(frozen=True, slots=True)
class PrivateKey:
    """A private key with its kid: the only object that can sign or open sealed parts."""

    kid: str
    owner: str
    use: KeyUse
    key: ec.EllipticCurvePrivateKey

    def __repr__(self) -> str:  # never print key material
        return f"PrivateKey(kid={self.kid!r}, use={self.use.value})"

    def joserfc_key(self) -> ECKey:
        return ECKey.import_key(self.key)

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
