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

The recipes call `cryptography` directly, not a JOSE library: each then costs about what
its primitives cost (a payment signs, verifies and seals many messages). Only the one
profile of each is implemented, so there is no algorithm negotiation to get wrong; the
tests hold these tokens to two independent implementations (joserfc and jwcrypto), both ways.

ECDSA nonces and JWE ephemeral keys come from OpenSSL's CSPRNG, content keys and IVs from
`cryptography`'s key generator (the operating system's CSPRNG), as they must; everything
else the core needs at random is passed in by the caller.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from semops.core.encoding import b64url_decode, b64url_encode, canonical_json, parse_json
from semops.core.errors import E, SemopsError
from semops.core.limits import MESSAGE_MAX_BYTES, SEALED_MAX_BYTES, SIGNING_HEADER_CACHE_ENTRIES
from semops.crypto.keyring import KeyRing
from semops.crypto.keys import (
    KeyUse,
    PrivateKey,
    PublicKeyRecord,
    p256_point,
    public_jwk,
)

SIGNING_ALGORITHM: Final = "ES256"
KEY_WRAP_ALGORITHM: Final = "ECDH-ES+A256KW"
CONTENT_ALGORITHM: Final = "A256GCM"
_JWS_HEADER_MEMBERS: Final = frozenset({"alg", "kid"})
_JWE_HEADER_MEMBERS: Final = frozenset({"alg", "enc", "kid", "epk"})
_EPK_MEMBERS: Final = frozenset({"kty", "crv", "x", "y"})
_HEADER_MAX_BYTES: Final = 1024
# The order of P-256's base point (SEC 2, FIPS 186-5): s must be at most half of it.
P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_HALF_ORDER: Final = P256_ORDER // 2
_ES256_SIGNATURE_BYTES: Final = 64  # r || s, 32 bytes each (RFC 7518 §3.4)
_SIGNATURE_HASH: Final = ec.ECDSA(hashes.SHA256())
# A256KW wraps a 256-bit content key (RFC 7518 §4.4) into 40 bytes (RFC 3394: one more
# 64-bit block); A256GCM takes a 96-bit IV and gives a 128-bit tag (RFC 7518 §5.3).
_KEY_BYTES: Final = 32
_WRAPPED_KEY_BYTES: Final = 40
_IV_BYTES: Final = 12
_TAG_BYTES: Final = 16
# RFC 7518 §4.6.2 OtherInfo for ECDH-ES+A256KW: AlgorithmID, then PartyUInfo and
# PartyVInfo (empty: the strict header has no apu/apv, as joserfc also leaves them), then
# SuppPubInfo = keydatalen in bits; each length-prefixed by a 32-bit big-endian count.
_CONCAT_KDF_OTHER_INFO: Final = (
    len(KEY_WRAP_ALGORITHM).to_bytes(4, "big")
    + KEY_WRAP_ALGORITHM.encode("ascii")
    + bytes(4)
    + bytes(4)
    + (_KEY_BYTES * 8).to_bytes(4, "big")
)


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


def _header_segment(header: dict[str, Any]) -> str:
    """The protected header as every SEMOPS token has carried it: the members in the order
    given, ASCII-escaped, no white space (byte for byte what joserfc wrote)."""
    return b64url_encode(json.dumps(header, ensure_ascii=True, separators=(",", ":")).encode())


@functools.lru_cache(maxsize=SIGNING_HEADER_CACHE_ENTRIES)
def _jws_header_segment(kid: str) -> str:
    # Every signature under one kid has the same header: encode it once (~5 µs a message).
    return _header_segment({"alg": SIGNING_ALGORITHM, "kid": kid})


def sign_message(
    claims: dict[str, Any], key: PrivateKey, *, max_bytes: int = MESSAGE_MAX_BYTES
) -> str:
    if key.use is not KeyUse.SIGN:
        raise SemopsError(E.KEY_WRONG_USE, "this key is not a signing key")
    signing_input = f"{_jws_header_segment(key.kid)}.{b64url_encode(canonical_json(claims))}"
    r, s = decode_dss_signature(key.key.sign(signing_input.encode("ascii"), _SIGNATURE_HASH))
    signature = low_s(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    token = f"{signing_input}.{b64url_encode(signature)}"
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
    """The claims of a JWS *before* verification: for a message that carries the
    certificate of its own signing key (a registration), or a lookup key read ahead of the
    verification (a payment order's id). The caller must verify the token before trusting
    any of it, and use nothing it read here that the verified message does not repeat."""
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
    """Structure, then key, then signature: each step refuses what the next would trust."""
    error = SemopsError(E.SIGNATURE_INVALID)
    header_part, payload_part, signature_part = _split_compact(token, 3, max_bytes, error)
    header = _parse_header(header_part, _JWS_HEADER_MEMBERS, error)
    if header != {"alg": SIGNING_ALGORITHM, "kid": header.get("kid")} or not isinstance(
        header["kid"], str
    ):
        raise error
    record = ring.resolve(header["kid"], KeyUse.SIGN, now)
    try:
        signature = b64url_decode(signature_part, max_chars=_ES256_SIGNATURE_BYTES * 2)
        if not is_low_s(signature):
            raise error  # a high-S twin of a valid signature: refused like any bad one
        record.public_key().verify(
            encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            ),
            f"{header_part}.{payload_part}".encode("ascii"),
            _SIGNATURE_HASH,
        )
        payload = b64url_decode(payload_part, max_chars=max_bytes)
    except (InvalidSignature, SemopsError, ValueError) as cause:  # ValueError: a bad record
        raise error from cause
    # The signature holds: the signer really sent these bytes, so there is nothing left to
    # hide and a payload that is not strict JSON (a float, a duplicate claim) is `malformed`.
    claims = parse_json(payload, max_bytes=max_bytes)
    if not isinstance(claims, dict):
        raise SemopsError(E.MALFORMED, "the signed payload is not a JSON object")
    return VerifiedMessage(claims, record, token)


def _key_encryption_key(shared_secret: bytes) -> bytes:
    """RFC 7518 §4.6.2: the Concat KDF (NIST SP 800-56A, one SHA-256 round) of Z."""
    return ConcatKDFHash(hashes.SHA256(), _KEY_BYTES, _CONCAT_KDF_OTHER_INFO).derive(shared_secret)


def seal_for(claims: dict[str, Any], recipient: PublicKeyRecord) -> str:
    if recipient.use is not KeyUse.ENCRYPT:
        raise SemopsError(E.KEY_WRONG_USE, "the recipient key is not an encryption key")
    plaintext = canonical_json(claims)
    try:
        recipient_key = recipient.public_key()
    except ValueError as cause:  # a record nobody validated: nothing can be sealed to it
        raise SemopsError(E.VALIDATION_FAILED, "the recipient key is not a P-256 point") from cause
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    kek = _key_encryption_key(ephemeral.exchange(ec.ECDH(), recipient_key))
    epk = public_jwk(ephemeral)
    header = {
        "alg": KEY_WRAP_ALGORITHM,
        "enc": CONTENT_ALGORITHM,
        "kid": recipient.kid,
        # joserfc's member order, so that tokens look as they always have.
        "epk": {"crv": epk["crv"], "x": epk["x"], "y": epk["y"], "kty": epk["kty"]},
    }
    header_part = _header_segment(header)
    # A fresh content key, and a fresh 96-bit IV cut from a second generated key: the
    # library's CSPRNG, so the core itself makes no randomness.
    cek = AESGCM.generate_key(bit_length=_KEY_BYTES * 8)
    iv = AESGCM.generate_key(bit_length=128)[:_IV_BYTES]
    sealed = AESGCM(cek).encrypt(iv, plaintext, header_part.encode("ascii"))
    token = ".".join(
        [
            header_part,
            b64url_encode(aes_key_wrap(kek, cek)),
            b64url_encode(iv),
            b64url_encode(sealed[:-_TAG_BYTES]),
            b64url_encode(sealed[-_TAG_BYTES:]),
        ]
    )
    if len(token) > SEALED_MAX_BYTES:
        raise SemopsError(E.TOO_LARGE, "the sealed part exceeds the size limit")
    return token


def _decode_exactly(text: str, size: int) -> bytes:
    decoded = b64url_decode(text, max_chars=(size * 4 + 2) // 3)
    if len(decoded) != size:
        raise SemopsError(E.SEAL_INVALID)
    return decoded


def open_sealed(
    token: str, key: PrivateKey, *, max_bytes: int = SEALED_MAX_BYTES
) -> dict[str, Any]:
    """Structure, then the ephemeral key, then the key unwrap and the GCM tag; all of it
    fails as `seal_invalid` (there is no padding and no second step to tell apart)."""
    error = SemopsError(E.SEAL_INVALID)
    if key.use is not KeyUse.ENCRYPT:
        raise SemopsError(E.KEY_WRONG_USE, "this key is not an encryption key")
    header_part, wrapped_part, iv_part, ciphertext_part, tag_part = _split_compact(
        token, 5, max_bytes, error
    )
    header = _parse_header(header_part, _JWE_HEADER_MEMBERS, error)
    if (
        header.get("alg") != KEY_WRAP_ALGORITHM
        or header.get("enc") != CONTENT_ALGORITHM
        or header.get("kid") != key.kid
        or "epk" not in header
    ):
        raise error
    epk = header["epk"]
    # Exactly {kty, crv, x, y} of a point on P-256: anything else is no ephemeral key.
    if not isinstance(epk, dict) or set(epk) != _EPK_MEMBERS:
        raise error
    if epk["kty"] != "EC" or epk["crv"] != "P-256":
        raise error
    try:
        ephemeral = p256_point(epk["x"], epk["y"])
        wrapped = _decode_exactly(wrapped_part, _WRAPPED_KEY_BYTES)
        iv = _decode_exactly(iv_part, _IV_BYTES)
        tag = _decode_exactly(tag_part, _TAG_BYTES)
        ciphertext = b64url_decode(ciphertext_part, max_chars=max_bytes)
        kek = _key_encryption_key(key.key.exchange(ec.ECDH(), ephemeral))
        cek = aes_key_unwrap(kek, wrapped)
        plaintext = AESGCM(cek).decrypt(iv, ciphertext + tag, header_part.encode("ascii"))
        claims = parse_json(plaintext, max_bytes=max_bytes)
    except (InvalidTag, InvalidUnwrap, SemopsError, ValueError) as cause:
        raise error from cause
    if not isinstance(claims, dict):
        raise error
    return claims
