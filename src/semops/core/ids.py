"""Identifiers: a short type prefix and 16 random bytes in base64url.

Ids are made by the party that starts an operation (the wallet makes the order id, the
merchant the request's idempotency key, the payer processor the transfer id) and stored
before the operation is sent, so a retry reuses the same id. The randomness is an argument:
callers in the shell pass `secrets.token_bytes(ID_RANDOM_BYTES)`.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final

from semops.core.encoding import b64url_encode
from semops.core.errors import E, SemopsError
from semops.core.limits import ID_MAX_CHARS, ID_MIN_CHARS, ID_RANDOM_BYTES

# Letters, digits, '_' and '-': safe in URLs, file names, logs and SQL without quoting.
ID_PATTERN: Final = r"^[A-Za-z0-9_-]+$"
_ID_RE: Final = re.compile(ID_PATTERN)


class IdKind(StrEnum):
    REQUEST = "rq"
    ORDER = "or"
    TRANSFER = "tr"
    REFUND = "rf"
    MESSAGE = "ms"
    DIRECTORY = "dr"
    DEVICE_AUTH = "da"


def make_id(kind: IdKind, entropy: bytes) -> str:
    """'tr_' + base64url(entropy): entropy must be ID_RANDOM_BYTES fresh random bytes."""
    if len(entropy) != ID_RANDOM_BYTES:
        raise ValueError(f"an id needs exactly {ID_RANDOM_BYTES} bytes of entropy")
    return f"{kind.value}_{b64url_encode(entropy)}"


def check_id(value: str, *, kind: IdKind | None = None) -> str:
    """An id made here or by another implementation: bounded, URL-safe, right prefix."""
    if not isinstance(value, str) or not ID_MIN_CHARS <= len(value) <= ID_MAX_CHARS:
        raise SemopsError(E.VALIDATION_FAILED, "an id is 8 to 64 URL-safe characters")
    if not _ID_RE.fullmatch(value):  # not match(): '$' would admit a trailing newline
        raise SemopsError(E.VALIDATION_FAILED, "an id uses only letters, digits, '_' and '-'")
    if kind is not None and not value.startswith(kind.value + "_"):
        raise SemopsError(E.VALIDATION_FAILED, f"expected a {kind.name.lower()} id")
    return value
