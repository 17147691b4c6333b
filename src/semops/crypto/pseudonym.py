"""One-time payer references (DESIGN.md §5: the payee side never sees a payer identifier).

The payer processor names the payer to the rest of the network only by
HMAC-SHA-256(reference key, transfer id): different for every transfer, so two payments by
one customer cannot be linked from the payee side, and meaningless without the key, which
never leaves the payer processor. A refund names the original transfer; the payer processor
finds the payer from its own records and can re-derive the reference to check it.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from semops.core.encoding import b64url_encode

REFERENCE_KEY_MIN_BYTES: Final = 32
_DOMAIN: Final = b"semops-payer-ref-v1\x00"


def payer_reference(reference_key: bytes, transfer_id: str) -> str:
    if len(reference_key) < REFERENCE_KEY_MIN_BYTES:
        raise ValueError(f"the reference key must be at least {REFERENCE_KEY_MIN_BYTES} bytes")
    mac = hmac.new(reference_key, _DOMAIN + transfer_id.encode("utf-8"), hashlib.sha256)
    return b64url_encode(mac.digest())
