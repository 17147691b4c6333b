"""Canonical bytes for JSON values, and base64url without padding.

Digests and signatures are computed over *canonical* JSON so that two parties who hold the
same object compute the same bytes: keys sorted, no insignificant white space, UTF-8, and
no floats (SEMOPS messages carry integers and strings only). For the values SEMOPS uses
this is exactly RFC 8785 (JSON Canonicalization Scheme).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from semops.core.errors import E, SemopsError
from semops.core.limits import JSON_DEPTH_MAX


def _utf16_order(key: str) -> bytes:
    # RFC 8785 §3.2.3 sorts member names by their UTF-16 code units, not by code points
    # (the two differ for characters above U+FFFF next to U+E000..U+FFFF).
    return key.encode("utf-16-be", errors="surrogatepass")


def _normalise(value: Any, depth: int = 0) -> Any:
    """The value with objects in RFC 8785 member order; refuses floats and deep nesting."""
    if depth > JSON_DEPTH_MAX:
        raise SemopsError(E.MALFORMED, f"JSON nested deeper than {JSON_DEPTH_MAX} levels")
    if isinstance(value, float):
        raise SemopsError(E.MALFORMED, "floats are not allowed in SEMOPS messages")
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise SemopsError(E.MALFORMED, "object keys must be strings")
        # ASCII names sort the same by code point as by UTF-16 code unit (the common case).
        ascii_only = all(key.isascii() for key in value)
        order = sorted(value) if ascii_only else sorted(value, key=_utf16_order)
        return {key: _normalise(value[key], depth + 1) for key in order}
    if isinstance(value, list | tuple):
        return [_normalise(item, depth + 1) for item in value]
    return value


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of a JSON value built from dicts, lists, str, int, bool and None."""
    text = json.dumps(_normalise(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate has no UTF-8 form
        raise SemopsError(E.MALFORMED, "strings must be valid Unicode") from error


def _no_float(text: str) -> Any:
    raise SemopsError(E.MALFORMED, "floats are not allowed in SEMOPS messages")


def _no_constant(text: str) -> Any:
    raise SemopsError(E.MALFORMED, f"{text} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise SemopsError(E.MALFORMED, "duplicate key in JSON object")
        result[key] = value
    return result


def refuse_duplicate_keys(data: bytes) -> None:
    """`malformed` when `data` is JSON with a key twice in one object (parsers disagree on
    which one wins, so a body could mean one thing to a check and another to its use).
    Anything that is not JSON passes: whoever reads it as JSON reports that."""
    try:
        json.loads(data, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError):
        return


def parse_json(data: bytes | str, *, max_bytes: int) -> Any:
    """Strict JSON: size-bounded, UTF-8 only, no floats, no NaN, no duplicate keys."""
    try:
        raw = data.encode("utf-8") if isinstance(data, str) else data
    except UnicodeEncodeError as error:  # a str holding a lone surrogate
        raise SemopsError(E.MALFORMED, "JSON text must be valid Unicode") from error
    if len(raw) > max_bytes:
        raise SemopsError(E.TOO_LARGE, f"JSON larger than {max_bytes} bytes")
    try:
        # Decode strictly here: json.loads on bytes would guess UTF-16/32, skip a BOM and
        # pass encoded surrogates, so one message could arrive in several byte forms. A
        # UnicodeDecodeError is a ValueError; a BOM left in the text is a JSON error.
        value = json.loads(
            raw.decode("utf-8"),
            parse_float=_no_float,
            parse_constant=_no_constant,
            object_pairs_hook=_unique_keys,
        )
    except (ValueError, RecursionError) as error:
        if isinstance(error, SemopsError):  # pragma: no cover - SemopsError is not ValueError
            raise
        raise SemopsError(E.MALFORMED, "not valid JSON") from error
    _check_depth(value)
    return value


def _check_depth(value: Any, depth: int = 0) -> None:
    if depth > JSON_DEPTH_MAX:
        raise SemopsError(E.MALFORMED, f"JSON nested deeper than {JSON_DEPTH_MAX} levels")
    if isinstance(value, dict):
        for item in value.values():
            _check_depth(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_depth(item, depth + 1)


def sha256_b64url(data: bytes) -> str:
    return b64url_encode(hashlib.sha256(data).digest())


def digest_of(value: Any) -> str:
    """SHA-256 of the canonical JSON of a value, base64url: a content fingerprint."""
    return sha256_b64url(canonical_json(value))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, *, max_chars: int = 1 << 20) -> bytes:
    """Strict base64url without padding; refuses other alphabets and over-long input."""
    if not isinstance(text, str) or len(text) > max_chars:
        raise SemopsError(E.MALFORMED, "base64url text is missing or too long")
    if "=" in text or "+" in text or "/" in text or len(text) % 4 == 1:
        raise SemopsError(E.MALFORMED, "not unpadded base64url")
    try:
        decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as error:
        raise SemopsError(E.MALFORMED, "not unpadded base64url") from error
    if b64url_encode(decoded) != text:  # non-canonical trailing bits
        raise SemopsError(E.MALFORMED, "not canonical base64url")
    return decoded
