"""The forms a leak takes and how they are matched: every encoding the check claims to
search is found, and short values do not match by chance inside other data."""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest

from semops.privacy import Corpus, Place, forms_of, jose_tokens, mask


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _found(text: str, value: str | bytes, *, phone: bool = False) -> list[str]:
    corpus = Corpus()
    corpus.add(text, Place("here"))
    return [hit.encoding for form in forms_of(value, phone=phone) for hit in corpus.search(form)]


NAME = "Zelda Quixotic-Payer"
PHONE = "+4915199990001"
ACCOUNT = "ac_ZJ6t0GONjsuyf4EG0DCevw"


@pytest.mark.parametrize(
    ("text", "value", "encoding"),
    [
        (f"name={NAME};", NAME, "raw"),
        (f'{{"n": "{NAME.upper()}"}}', NAME, "raw, other case"),
        (json.dumps({"shop": "Corner Café"}), "Corner Café", "JSON-escaped"),
        (f"q={urllib.parse.quote(PHONE, safe='')}", PHONE, "URL-encoded"),
        (f"q={urllib.parse.quote_plus(NAME)}", NAME, "URL-encoded"),
        (base64.b64encode(ACCOUNT.encode()).decode(), ACCOUNT, "base64"),
        (_b64url(ACCOUNT.encode()), ACCOUNT, "base64url"),
        (ACCOUNT.encode().hex(), ACCOUNT, "hex"),
        (ACCOUNT.encode().hex().upper(), ACCOUNT, "hex"),
    ],
)
def test_each_form_is_found(text: str, value: str, encoding: str) -> None:
    assert any(encoding in found for found in _found(text, value)), _found(text, value)


def test_a_phone_is_found_by_its_digits_alone() -> None:
    assert "digits only" in _found("tel 004915199990001", PHONE, phone=True)
    assert "digits only" in _found("tel=4915199990001", PHONE, phone=True)


@pytest.mark.parametrize("offset", [0, 1, 2, 3, 4, 5])
def test_a_value_is_found_inside_a_larger_base64_blob_at_any_alignment(offset: int) -> None:
    blob = b"p" * offset + json.dumps({"payer": ACCOUNT}).encode() + b"tail"
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        assert _found(encode(blob).decode(), ACCOUNT), (offset, encode)


def test_binary_secrets_are_searched_in_their_text_encodings() -> None:
    secret = bytes(range(7, 39))
    for text in (base64.b64encode(secret).decode(), _b64url(secret), secret.hex().upper()):
        assert _found(f"x {text} y", secret)


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ('{"pin": "7319"}', True),
        ("pin=7319&x=1", True),
        ("NzMxOQ==", True),  # base64 of the PIN, standing alone
        ("port 47319", False),  # a PIN is not the tail of a number
        ("2026-11-27T14:07:31.973190Z", False),
        ("Ab7319xY", False),  # nor a fragment of random base64 text
        ("eyJhbGciOi.xNzMxOQy", False),
    ],
)
def test_short_values_match_only_as_whole_words(text: str, hit: bool) -> None:
    assert bool(_found(text, "7319")) is hit


def _jws(claims: dict[str, object]) -> str:
    header = _b64url(b'{"alg":"ES256","kid":"bank-a:abc"}')
    return f"{header}.{_b64url(json.dumps(claims).encode())}.c2lnbmF0dXJl"


def test_jws_payloads_are_opened_even_nested_and_jwe_is_counted_as_opaque() -> None:
    inner = _jws({"payer_name": NAME})
    outer = _jws({"t": "PaymentOrder", "request": inner})
    jwe = "eyJhbGciOiJFQ0RILUVTIn0.a2V5.aXY.Y2lwaGVy.dGFn"
    corpus = Corpus()
    corpus.add(f"row: {outer} and {jwe}", Place("orders.token"))
    assert corpus.tokens.decoded == 2 and corpus.tokens.opaque == 1
    hits = {(hit.place.via, hit.encoding) for form in forms_of(NAME) for hit in corpus.search(form)}
    assert ("JWS payload > JWS payload", "raw") in hits
    kinds = [token.kind for token in jose_tokens(f"{outer} {jwe}")]
    assert kinds == ["JWS", "JWE"]


def test_a_report_never_shows_a_whole_secret() -> None:
    assert mask("7319") == "••••"
    assert mask(ACCOUNT) == "ac_…(25 chars)"
    assert mask(b"\x00" * 32) == "<32 bytes>"
