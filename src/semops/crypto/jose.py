"""The four recipes: sign, verify, seal, open. The only code that uses key material.

- `sign_message(claims, key)` -> compact JWS (RFC 7515), ES256, protected header
  {"alg", "kid"} and nothing else. The payload is canonical JSON, so every party that
  re-encodes a message gets the same bytes.
- `verify_message(token, ring, now)` -> the verified claims and the signer's key record.
  The header is parsed strictly *before* any key is touched: exactly {"alg", "kid"}, alg
  exactly ES256 (no "none", no HMAC confusion, no embedded "jwk"/"jku"/"x5u", no "crit").
  Any malformed or tampered token gives one opaque error, `signature_invalid`, so nothing
  about where it failed becomes an oracle; only the key lookup (unknown, revoked, expired,
  wrong use) has its own codes, since the directory is public. A payload whose signature
  holds but which is not strict JSON is `malformed`: its signer sent it, nothing is hidden.
- ECDSA signatures are *low-S* both ways: (r, s) and (r, n - s) verify alike, so a third
  party could turn one valid token into a second, different one (malleability: another
  token id for the same message, a replay cache keyed on bytes fooled). Signing always
  produces s <= n/2 (`low_s`; OpenSSL does not), and verification refuses s > n/2 under
  the same opaque `signature_invalid`, before the signature is even checked.
- `seal_for(claims, recipient)` -> compact JWE (RFC 7516), ECDH-ES+A256KW with A256GCM,
  addressed to exactly one recipient key named by kid. The ephemeral key carries no
  sender identity, so a sealed part does not say who sealed it.
- `open_sealed(token, key)` -> the claims; every failure is `seal_invalid`.

ECDSA nonces, JWE ephemeral keys, content keys and IVs come from OpenSSL's CSPRNG, as they
must; everything else the core needs at random is passed in by the caller.
"""

from __future__ import annotations

from typing import Any, Final

from joserfc import jwe, jws
from joserfc.errors import JoseError

from semops.core.encoding import b64url_decode, b64url_encode, canonical_json, parse_json
from semops.core.errors import E, SemopsError
from semops.core.limits import MESSAGE_MAX_BYTES, SEALED_MAX_BYTES
from semops.crypto.keyring import KeyRing
from semops.crypto.keys import KeyUse, PrivateKey, PublicKeyRecord

SIGNING_ALGORITHM: Final = "ES256"
KEY_WRAP_ALGORITHM: Final = "ECDH-ES+A256KW"
CONTENT_ALGORITHM: Final = "A256GCM"
_JWS_HEADER_MEMBERS: Final = frozenset({"alg", "kid"})
_JWE_HEADER_MEMBERS: Final = frozenset({"alg", "enc", "kid", "epk"})
_HEADER_MAX_BYTES: Final = 1024
# The order of P-256's base point (SEC 2, FIPS 186-5): s must be at most half of it.
P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_HALF_ORDER: Final = P256_ORDER // 2
_ES256_SIGNATURE_BYTES: Final = 64  # r || s, 32 bytes each (RFC 7518 §3.4)


class VerifiedMessage:
    """Claims whose signature checked out, with the key record that signed them."""

    __slots__ = ("claims", "signer", "token")

    def __init__(self, claims: dict[str, Any], signer: PublicKeyRecord, token: str) -> None:
        self.claims = claims
        self.signer = signer
        self.token = token

    @property
    def signer_owner(self) -> str:
        return self.signer.owner


def sign_message(
    claims: dict[str, Any], key: PrivateKey, *, max_bytes: int = MESSAGE_MAX_BYTES
) -> str:
    if key.use is not KeyUse.SIGN:
        raise SemopsError(E.KEY_WRONG_USE, "this key is not a signing key")
    header = {"alg": SIGNING_ALGORITHM, "kid": key.kid}
    signed = jws.serialize_compact(
        header, canonical_json(claims), key.joserfc_key(), algorithms=[SIGNING_ALGORITHM]
    )
    signing_input, _, signature = signed.rpartition(".")
    token = f"{signing_input}.{b64url_encode(low_s(b64url_decode(signature)))}"
    if len(token) > max_bytes:
        raise SemopsError(E.TOO_LARGE, f"the signed message exceeds {max_bytes} bytes")
    return token


def low_s(signature: bytes) -> bytes:
    """The ES256 signature r || s with s replaced by n - s when s > n/2 (both verify)."""
    assert len(signature) == _ES256_SIGNATURE_BYTES, "an ES256 signature is 64 bytes"
    r, s = signature[:32], int.from_bytes(signature[32:], "big")
    if s > P256_HALF_ORDER:
        s = P256_ORDER - s
    return r + s.to_bytes(32, "big")


def is_low_s(signature: bytes) -> bool:
    """Whether an ES256 signature is r || s, 64 bytes, with 0 < r < n and 0 < s <= n/2."""
    if len(signature) != _ES256_SIGNATURE_BYTES:
        return False
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    return 0 < r < P256_ORDER and 0 < s <= P256_HALF_ORDER


def _split_compact(token: str, parts: int, max_bytes: int, error: SemopsError) -> list[str]:
    if not isinstance(token, str):
        raise error
    if len(token) > max_bytes:
        raise SemopsError(E.TOO_LARGE, f"message larger than {max_bytes} bytes")
    pieces = token.split(".")
    if len(pieces) != parts or not token.isascii():
        raise error
    return pieces


def _parse_header(encoded: str, allowed: frozenset[str], error: SemopsError) -> dict[str, Any]:
    try:
        header = parse_json(
            b64url_decode(encoded, max_chars=_HEADER_MAX_BYTES * 2), max_bytes=_HEADER_MAX_BYTES
        )
    except SemopsError as cause:
        raise error from cause
    if not isinstance(header, dict) or not set(header) <= allowed:
        raise error
    return header


def read_unverified_kid(token: str) -> str:
    """The kid a JWS claims, for routing a lookup only; never trust it before verifying."""
    error = SemopsError(E.SIGNATURE_INVALID)
    header_part = _split_compact(token, 3, MESSAGE_MAX_BYTES, error)[0]
    header = _parse_header(header_part, _JWS_HEADER_MEMBERS, error)
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise error
    return kid


def read_unverified_claims(token: str, *, max_bytes: int = MESSAGE_MAX_BYTES) -> dict[str, Any]:
    """The claims of a JWS *before* verification, for a message that carries the
    certificate of its own signing key (a registration). The caller must check that
    certificate against the root and then verify the token with its key."""
    error = SemopsError(E.SIGNATURE_INVALID)
    payload_part = _split_compact(token, 3, max_bytes, error)[1]
    try:
        claims = parse_json(b64url_decode(payload_part, max_chars=max_bytes), max_bytes=max_bytes)
    except SemopsError as cause:
        raise error from cause
    if not isinstance(claims, dict):
        raise error
    return claims


def verify_message(
    token: str, ring: KeyRing, now: int, *, max_bytes: int = MESSAGE_MAX_BYTES
) -> VerifiedMessage:
    error = SemopsError(E.SIGNATURE_INVALID)
    header_part, payload_part, signature_part = _split_compact(token, 3, max_bytes, error)
    header = _parse_header(header_part, _JWS_HEADER_MEMBERS, error)
    if header != {"alg": SIGNING_ALGORITHM, "kid": header.get("kid")} or not isinstance(
        header["kid"], str
    ):
        raise error
    record = ring.resolve(header["kid"], KeyUse.SIGN, now)
    try:
        if not is_low_s(b64url_decode(signature_part, max_chars=_ES256_SIGNATURE_BYTES * 2)):
            raise error  # a high-S twin of a valid signature: refused like any bad one
        jws.deserialize_compact(token, record.joserfc_key(), algorithms=[SIGNING_ALGORITHM])
        payload = b64url_decode(payload_part, max_chars=max_bytes)
    except (JoseError, SemopsError, ValueError) as cause:
        raise error from cause
    # The signature holds: the signer really sent these bytes, so there is nothing left to
    # hide and a payload that is not strict JSON (a float, a duplicate claim) is `malformed`.
    claims = parse_json(payload, max_bytes=max_bytes)
    if not isinstance(claims, dict):
        raise SemopsError(E.MALFORMED, "the signed payload is not a JSON object")
    return VerifiedMessage(claims, record, token)


def seal_for(claims: dict[str, Any], recipient: PublicKeyRecord) -> str:
    if recipient.use is not KeyUse.ENCRYPT:
        raise SemopsError(E.KEY_WRONG_USE, "the recipient key is not an encryption key")
    header = {"alg": KEY_WRAP_ALGORITHM, "enc": CONTENT_ALGORITHM, "kid": recipient.kid}
    token = jwe.encrypt_compact(
        header,
        canonical_json(claims),
        recipient.joserfc_key(),
        algorithms=[KEY_WRAP_ALGORITHM, CONTENT_ALGORITHM],
    )
    if len(token) > SEALED_MAX_BYTES:
        raise SemopsError(E.TOO_LARGE, "the sealed part exceeds the size limit")
    return token


def open_sealed(
    token: str, key: PrivateKey, *, max_bytes: int = SEALED_MAX_BYTES
) -> dict[str, Any]:
    error = SemopsError(E.SEAL_INVALID)
    if key.use is not KeyUse.ENCRYPT:
        raise SemopsError(E.KEY_WRONG_USE, "this key is not an encryption key")
    header_part = _split_compact(token, 5, max_bytes, error)[0]
    header = _parse_header(header_part, _JWE_HEADER_MEMBERS, error)
    if (
        header.get("alg") != KEY_WRAP_ALGORITHM
        or header.get("enc") != CONTENT_ALGORITHM
        or header.get("kid") != key.kid
        or "epk" not in header
    ):
        raise error
    try:
        opened = jwe.decrypt_compact(
            token, key.joserfc_key(), algorithms=[KEY_WRAP_ALGORITHM, CONTENT_ALGORITHM]
        )
        plaintext = opened.plaintext
        if plaintext is None:
            raise error
        claims = parse_json(plaintext, max_bytes=max_bytes)
    except (JoseError, SemopsError, ValueError, KeyError) as cause:  # KeyError: unknown epk crv
        raise error from cause
    if not isinstance(claims, dict):
        raise error
    return claims
