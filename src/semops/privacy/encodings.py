"""The forms a datum can take when it leaks, and how each form is matched in text.

A value is searched as itself and as the encodings a program would plausibly apply on its
way into a database or a log: JSON escaping (`\\u00e9`), URL encoding, base64 and
base64url (standard alignment, and for longer values any alignment inside a larger
encoded blob), hexadecimal, and for phone numbers the digits alone. Text forms match
case-insensitively (a name written in capitals is the same name); encoded forms match
exactly, except hexadecimal, which has two cases of its own.

Short forms (under `SHORT_FORM_CHARS`) would hit by chance inside random base64 text, so
they match only as whole words: "pin=7319" and `"7319"` are found, "Ab7319xY" is not. An
all-digit form under ten digits never matches inside a longer number (a PIN is not a port
number's tail); a longer one does ("0049 151..." holds the phone "49 151...").
Pure: no I/O.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from dataclasses import dataclass
from typing import Final

# Below this many characters a form matches only as a whole word (see the module doc).
SHORT_FORM_CHARS: Final = 8
# An unaligned base64 core shorter than this could match random base64 by chance.
UNALIGNED_CORE_MIN_CHARS: Final = 12
# Digits-only forms of phone numbers shorter than this are too generic to search.
DIGITS_FORM_MIN_CHARS: Final = 7
# A number this long inside a longer one is still itself ("0049151..." holds "49151...");
# a shorter one may be a timestamp's or a port's digits by chance.
LONG_NUMBER_CHARS: Final = 10

_WORD: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_B64: Final = _WORD | frozenset("+/-_")
_DIGITS: Final = frozenset("0123456789")
_HEX: Final = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True, slots=True)
class Form:
    """One searchable form of a value."""

    text: str  # what is searched for (compared lower-cased when `fold`)
    encoding: str  # how the value was encoded to become this text
    fold: bool  # matched case-insensitively
    # Characters that must not touch a match on either side (empty: none).
    boundary: frozenset[str] = frozenset()

    def matches_at(self, haystack: str, start: int) -> bool:
        """Whether a hit of `text` at `start` respects the boundary rule."""
        if not self.boundary:
            return True
        end = start + len(self.text)
        before = haystack[start - 1] if start > 0 else ""
        after = haystack[end] if end < len(haystack) else ""
        return before not in self.boundary and after not in self.boundary


def _boundary(text: str, alphabet: frozenset[str]) -> frozenset[str]:
    if text.isdigit() and len(text) < LONG_NUMBER_CHARS:
        return _DIGITS if len(text) >= SHORT_FORM_CHARS else _WORD
    return alphabet if len(text) < SHORT_FORM_CHARS else frozenset()


def _b64_core(data: bytes, offset: int, *, urlsafe: bool) -> str:
    """The base64 characters fully determined by `data` when it starts `offset` bytes into
    a larger blob (`offset` 0: the standard alignment)."""
    padded = bytes(offset) + data
    encoded = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(padded).decode()
    first = -(-8 * offset // 6)  # ceil(8 * offset / 6)
    last = (8 * (offset + len(data))) // 6  # exclusive
    return encoded[first:last]


def _encoded_forms(data: bytes) -> list[Form]:
    forms: list[Form] = []
    for urlsafe, name in ((False, "base64"), (True, "base64url")):
        core = _b64_core(data, 0, urlsafe=urlsafe)
        if len(core) < SHORT_FORM_CHARS:
            # Too short to search inside a blob: the whole encoding, standing alone.
            whole = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data)
            core = whole.decode().rstrip("=")
        forms.append(Form(core, name, fold=False, boundary=_boundary(core, _B64)))
        for offset in (1, 2):
            shifted = _b64_core(data, offset, urlsafe=urlsafe)
            if len(shifted) >= UNALIGNED_CORE_MIN_CHARS:
                forms.append(Form(shifted, f"{name} (inside a larger blob)", fold=False))
    hexed = data.hex()
    forms.append(Form(hexed, "hex", fold=True, boundary=_boundary(hexed, _HEX)))
    return forms


def forms_of(value: str | bytes, *, phone: bool = False) -> tuple[Form, ...]:
    """Every form of a value, first the plainest; duplicates (by text) dropped."""
    forms: list[Form] = []
    if isinstance(value, str):
        raw = value
        forms.append(Form(raw, "raw", fold=True, boundary=_boundary(raw, _WORD)))
        escaped = json.dumps(raw)[1:-1]
        forms.append(Form(escaped, "JSON-escaped", True, _boundary(escaped, _WORD)))
        for quoted in (urllib.parse.quote(raw, safe=""), urllib.parse.quote_plus(raw)):
            forms.append(Form(quoted, "URL-encoded", True, _boundary(quoted, _WORD)))
        if phone:
            digits = "".join(ch for ch in raw if ch.isdigit())
            if len(digits) >= DIGITS_FORM_MIN_CHARS:
                forms.append(Form(digits, "digits only", False, _boundary(digits, _WORD)))
        data = raw.encode("utf-8")
    else:
        data = value
    forms.extend(_encoded_forms(data))
    unique: dict[str, Form] = {}
    for form in forms:
        key = form.text.lower() if form.fold else form.text
        seen = unique.get(key)
        if seen is None and form.text:
            unique[key] = form
        elif seen is not None and seen.encoding.startswith("base64") and "url" in form.encoding:
            # The url-safe alphabet changed nothing: both encodings give this text.
            encoding = seen.encoding.replace("base64", "base64/base64url", 1)
            unique[key] = Form(seen.text, encoding, seen.fold, seen.boundary)
    return tuple(unique.values())


# A compact JWS (three parts) or JWE (five parts) whose header is a JSON object.
_PART: Final = r"[A-Za-z0-9_-]"
COMPACT_JOSE: Final = re.compile(
    rf"eyJ{_PART}+\.{_PART}*\.{_PART}*(?:\.{_PART}*\.{_PART}+)?(?!{_PART})"
)


def _b64url_text(part: str) -> str | None:
    try:
        data = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        return data.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


@dataclass(frozen=True, slots=True)
class DecodedToken:
    """A JOSE token found in a text: a JWS's header and payload as text, or an opaque JWE."""

    kind: str  # "JWS" or "JWE"
    texts: tuple[str, ...]  # decoded header and payload (a JWS); nothing for a JWE


def jose_tokens(text: str) -> list[DecodedToken]:
    """Every compact JOSE token in a text, decoded where it can be (a JWE cannot: it is
    sealed to its one recipient by design). Fragments that do not decode are skipped."""
    found: list[DecodedToken] = []
    for match in COMPACT_JOSE.finditer(text):
        parts = match.group(0).split(".")
        if len(parts) == 5:
            found.append(DecodedToken("JWE", ()))
            continue
        header, payload = _b64url_text(parts[0]), _b64url_text(parts[1])
        if header is None or payload is None:
            continue
        found.append(DecodedToken("JWS", (header, payload)))
    return found


def mask(value: str | bytes) -> str:
    """A value as a report may show it: enough to recognise, not enough to reuse."""
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if len(value) <= 6:
        return "•" * len(value)
    return f"{value[:3]}…({len(value)} chars)"


__all__ = ["COMPACT_JOSE", "DecodedToken", "Form", "forms_of", "jose_tokens", "mask"]
