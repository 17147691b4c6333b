"""The hash lock that proves the payee side accepted a payment (DESIGN.md §3).

The payee processor makes a random 32-byte fulfilment per request and publishes only
condition = SHA-256(fulfilment) in the signed request. The router commits a transfer only
when shown the preimage, and the payer's receipt carries it: whoever holds a fulfilment
that hashes to the request's condition holds proof that the payee side accepted.
"""

from __future__ import annotations

import hashlib
import hmac

from semops.core.encoding import b64url_decode, b64url_encode
from semops.core.errors import E, SemopsError
from semops.core.limits import FULFILMENT_BYTES


def make_fulfilment(entropy: bytes) -> str:
    """The fulfilment, base64url, from FULFILMENT_BYTES of fresh entropy."""
    if len(entropy) != FULFILMENT_BYTES:
        raise ValueError(f"a fulfilment is exactly {FULFILMENT_BYTES} random bytes")
    return b64url_encode(entropy)


def condition_for(fulfilment: str) -> str:
    raw = _decode_32(fulfilment)
    return b64url_encode(hashlib.sha256(raw).digest())


def check_fulfilment(fulfilment: str, condition: str) -> None:
    """Raises fulfilment_invalid unless SHA-256(fulfilment) == condition."""
    expected = _decode_32(condition)
    actual = hashlib.sha256(_decode_32(fulfilment)).digest()
    if not hmac.compare_digest(expected, actual):
        raise SemopsError(E.FULFILMENT_INVALID)


def _decode_32(text: str) -> bytes:
    try:
        raw = b64url_decode(text, max_chars=64)
    except SemopsError as error:
        raise SemopsError(E.FULFILMENT_INVALID) from error
    if len(raw) != FULFILMENT_BYTES:
        raise SemopsError(E.FULFILMENT_INVALID)
    return raw
