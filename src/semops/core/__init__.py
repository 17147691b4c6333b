"""Shared foundations: money, ids, bounds, the error registry, canonical encoding, time."""

from semops.core.clock import Clock, FixedClock
from semops.core.encoding import (
    b64url_decode,
    b64url_encode,
    canonical_json,
    digest_of,
    parse_json,
    sha256_b64url,
)
from semops.core.errors import E, ErrorSpec, SemopsError, all_errors, lookup
from semops.core.ids import IdKind, check_id, make_id
from semops.core.money import (
    CURRENCY_SCALES,
    Money,
    check_payment_amount,
    currency_scale,
    format_amount,
    parse_amount,
)

__all__ = [
    "CURRENCY_SCALES",
    "Clock",
    "E",
    "ErrorSpec",
    "FixedClock",
    "IdKind",
    "Money",
    "SemopsError",
    "all_errors",
    "b64url_decode",
    "b64url_encode",
    "canonical_json",
    "check_id",
    "check_payment_amount",
    "currency_scale",
    "digest_of",
    "format_amount",
    "lookup",
    "make_id",
    "parse_amount",
    "parse_json",
    "sha256_b64url",
]
