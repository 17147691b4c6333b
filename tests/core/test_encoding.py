"""Canonical JSON, strict JSON parsing, unpadded base64url and content digests.

Two parties that hold the same object must compute the same bytes, and a parser that
accepts something the canonical form cannot express (a float, a duplicate key, a lone
surrogate, a second encoding) would let two parties disagree about what was signed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from semops.core import (
    E,
    SemopsError,
    b64url_decode,
    b64url_encode,
    canonical_json,
    digest_of,
    parse_json,
    sha256_b64url,
)

BIG = 1 << 20
B64URL_ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"

# JSON values as SEMOPS uses them: no floats, string keys. Text excludes lone surrogates
# (hypothesis never generates them), which are refused and tested separately.
json_scalars = st.none() | st.booleans() | st.integers(-(2**62), 2**62) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
json_objects = st.dictionaries(st.text(max_size=10), json_values, max_size=8)
# Keys inside the Basic Multilingual Plane, where code-point order and RFC 8785's UTF-16
# order agree (keys outside it have their own test below).
bmp_text = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs"]), max_size=10)
bmp_keyed_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(bmp_text, children, max_size=5)
    ),
    max_leaves=30,
)

_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _rfc8785_string(text: str) -> str:
    out = []
    for char in text:
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif ord(char) < 0x20:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def rfc8785(value: Any) -> str:
    """RFC 8785 for null, booleans, integers, strings, arrays and objects, written apart
    from the module under test: keys in UTF-16 code-unit order, minimal escapes."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _rfc8785_string(value)
    if isinstance(value, list):
        return "[" + ",".join(rfc8785(item) for item in value) + "]"
    assert isinstance(value, dict)
    keys = sorted(value, key=lambda key: key.encode("utf-16-be"))
    return "{" + ",".join(f"{_rfc8785_string(k)}:{rfc8785(value[k])}" for k in keys) + "}"


def refused(code: str, call: Any, *args: Any, **kwargs: Any) -> SemopsError:
    with pytest.raises(SemopsError) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, caught.value
    return caught.value


def reversed_insertion(value: Any) -> Any:
    """The same JSON value with every object's keys inserted in the opposite order."""
    if isinstance(value, dict):
        return {key: reversed_insertion(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_insertion(item) for item in value]
    return value


# --- canonical_json ------------------------------------------------------------------------


def test_canonical_json_sorts_keys_and_has_no_white_space() -> None:
    value = {"b": 1, "a": [True, None, "x"], "c": {"z": 0, "y": -1}}
    assert canonical_json(value) == b'{"a":[true,null,"x"],"b":1,"c":{"y":-1,"z":0}}'


def test_canonical_json_keeps_non_ascii_as_utf8_instead_of_escaping() -> None:
    assert canonical_json({"name": "Café €"}) == '{"name":"Café €"}'.encode()
    assert canonical_json(["😀"]) == b'["\xf0\x9f\x98\x80"]'


def test_canonical_json_escapes_control_characters_as_rfc_8785_does() -> None:
    # RFC 8785 §3.2.2.2: short escapes where JSON has them, else \u00xx in lowercase hex;
    # '/' and DEL are not escaped.
    assert canonical_json('\u0000\b\f\n\r\t\u001f"\\/\u007f') == (
        b'"\\u0000\\b\\f\\n\\r\\t\\u001f\\"\\\\/\x7f"'
    )


def test_canonical_json_of_scalars() -> None:
    assert canonical_json(None) == b"null"
    assert canonical_json(True) == b"true"
    assert canonical_json(False) == b"false"
    assert canonical_json(0) == b"0"
    assert canonical_json(-(10**15)) == b"-1000000000000000"
    assert canonical_json("") == b'""'
    assert canonical_json({}) == b"{}"
    assert canonical_json([]) == b"[]"


@given(value=json_values)
def test_canonical_json_parses_back_to_the_same_value(value: Any) -> None:
    assert parse_json(canonical_json(value), max_bytes=BIG) == value


@given(value=json_values)
def test_canonical_json_does_not_depend_on_key_insertion_order(value: Any) -> None:
    assert canonical_json(reversed_insertion(value)) == canonical_json(value)


@given(value=bmp_keyed_values)
def test_canonical_json_matches_an_independent_rfc_8785_serialiser(value: Any) -> None:
    assert canonical_json(value) == rfc8785(value).encode("utf-8")


def test_canonical_json_orders_keys_by_utf16_code_units_as_rfc_8785_requires() -> None:
    # U+1F600 is D83D DE00 in UTF-16, so it sorts before U+FFFD (FFFD) in RFC 8785.
    assert canonical_json({"\ufffd": 1, "\U0001f600": 2}) == '{"😀":2,"�":1}'.encode()


@pytest.mark.parametrize(
    "value",
    [
        1.5,
        0.0,
        -0.0,
        float("nan"),
        float("inf"),
        [1, 2, 3.0],
        {"amount": 12.5},
        {"a": {"b": [1, {"c": 0.1}]}},
        [[[[[[1e300]]]]]],
        (1, 2.0),
    ],
)
def test_canonical_json_refuses_floats_at_any_depth(value: Any) -> None:
    refused(E.MALFORMED.code, canonical_json, value)


@pytest.mark.parametrize(
    "value",
    [{1: "a"}, {True: 1}, {None: 1}, {"a": {2: "b"}}, [{(1, 2): 3}], {b"k": 1}],
)
def test_canonical_json_refuses_non_string_keys_at_any_depth(value: Any) -> None:
    refused(E.MALFORMED.code, canonical_json, value)


@pytest.mark.parametrize("value", ["\ud800", {"a": "x\udfffy"}, {"\udc00": 1}, ["ok", ["\ud83d"]]])
def test_canonical_json_refuses_lone_surrogates_as_malformed(value: Any) -> None:
    # Regression: a lone surrogate (which parse_json admits through a \ud800 escape) used to
    # escape as UnicodeEncodeError, which a service would answer with a 500.
    refused(E.MALFORMED.code, canonical_json, value)


# --- parse_json ----------------------------------------------------------------------------


def test_parse_json_accepts_integers_strings_and_structures() -> None:
    text = '{"a": [1, -2, true, false, null, "x\\u00e9"], "b": {"c": 10000000000000000000}}'
    expected = {"a": [1, -2, True, False, None, "xé"], "b": {"c": 10**19}}
    assert parse_json(text, max_bytes=BIG) == expected
    assert parse_json(text.encode(), max_bytes=BIG) == expected


@pytest.mark.parametrize(
    "text", ["1.0", "1e5", "1E5", "-0.5", "[1, 2.0]", '{"a": 1E-3}', '{"a": {"b": [0.0]}}', "0e0"]
)
def test_parse_json_refuses_floats_and_exponents(text: str) -> None:
    refused(E.MALFORMED.code, parse_json, text, max_bytes=BIG)


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "[NaN]", '{"a": Infinity}'])
def test_parse_json_refuses_nan_and_infinity(text: str) -> None:
    refused(E.MALFORMED.code, parse_json, text, max_bytes=BIG)


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "a": 2}',
        '{"a": 1, "a": 1}',
        '{"x": {"a": 1, "b": 2, "a": 3}}',
        '[{"k": 1, "k": 1}]',
    ],
)
def test_parse_json_refuses_duplicate_keys_at_any_depth(text: str) -> None:
    refused(E.MALFORMED.code, parse_json, text, max_bytes=BIG)


def test_parse_json_treats_keys_differing_in_case_as_distinct() -> None:
    assert parse_json('{"a": 1, "A": 2}', max_bytes=BIG) == {"a": 1, "A": 2}


def test_parse_json_refuses_input_over_the_byte_limit_as_too_large() -> None:
    text = '{"k": "' + "x" * 100 + '"}'
    assert parse_json(text, max_bytes=len(text)) == {"k": "x" * 100}
    refused(E.TOO_LARGE.code, parse_json, text, max_bytes=len(text) - 1)
    refused(E.TOO_LARGE.code, parse_json, text.encode(), max_bytes=len(text) - 1)


def test_parse_json_measures_the_limit_in_utf8_bytes_not_characters() -> None:
    text = '"' + "é" * 10 + '"'  # 12 characters, 22 bytes
    refused(E.TOO_LARGE.code, parse_json, text, max_bytes=len(text))
    assert parse_json(text, max_bytes=len(text.encode())) == "é" * 10


def test_parse_json_checks_size_before_validity() -> None:
    # An attacker's oversize garbage gets the cheap answer, without being parsed.
    refused(E.TOO_LARGE.code, parse_json, "{" * 1000, max_bytes=999)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "{",
        "[1,]",
        '{"a":1,}',
        "{'a': 1}",
        '{"a" 1}',
        "{} x",
        "{}{}",
        "01",
        "-",
        "+1",
        "0x10",
        '"unterminated',
        '"tab\there"',  # raw control character inside a string
        '"\\x41"',
        "undefined",
        "True",
        "[1] // comment",
    ],
)
def test_parse_json_refuses_invalid_json_as_malformed(text: str) -> None:
    refused(E.MALFORMED.code, parse_json, text, max_bytes=BIG)


def test_parse_json_refuses_deep_nesting_as_malformed() -> None:
    depth = 100_000
    refused(E.MALFORMED.code, parse_json, "[" * depth + "]" * depth, max_bytes=BIG)
    refused(E.MALFORMED.code, parse_json, '{"a":' * depth + "1" + "}" * depth, max_bytes=BIG)


def test_parse_json_refuses_integers_too_long_to_convert_as_malformed() -> None:
    # CPython refuses int() of more than 4300 digits with ValueError; that is bad input.
    refused(E.MALFORMED.code, parse_json, "1" * 5000, max_bytes=BIG)


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": "\xff"}',  # not UTF-8 at all
        b'{"a": "\xc3"}',  # truncated sequence
        b'{"a": "\xc0\xaf"}',  # overlong encoding of '/'
        b'{"a": "\xed\xa0\x80"}',  # UTF-8-encoded surrogate (CESU-8), not valid UTF-8
        '{"a": 1}'.encode("utf-16"),  # a different encoding, with its BOM
        '{"a": 1}'.encode("utf-16-le"),
        '{"a": 1}'.encode("utf-32"),
        b'\xef\xbb\xbf{"a": 1}',  # UTF-8 with a byte-order mark (RFC 8259 §8.1 forbids it)
    ],
    ids=["invalid", "truncated", "overlong", "cesu8", "utf16", "utf16le", "utf32", "bom"],
)
def test_parse_json_accepts_only_utf8_bytes_without_bom(data: bytes) -> None:
    # Regression: json.loads on bytes guesses UTF-16/32, strips a BOM and lets surrogates
    # through, so the same message could arrive in several byte forms.
    refused(E.MALFORMED.code, parse_json, data, max_bytes=BIG)


def test_parse_json_refuses_text_holding_a_lone_surrogate_as_malformed() -> None:
    # Regression: a str holding a lone surrogate used to escape as UnicodeEncodeError.
    refused(E.MALFORMED.code, parse_json, '"\ud800"', max_bytes=BIG)


@given(value=json_values)
def test_parse_json_gives_the_same_value_for_text_and_bytes(value: Any) -> None:
    text = json.dumps(value, ensure_ascii=False, indent=1)
    assert parse_json(text, max_bytes=BIG) == parse_json(text.encode(), max_bytes=BIG) == value


# --- base64url -----------------------------------------------------------------------------


@given(data=st.binary(max_size=200))
def test_b64url_round_trips_any_bytes(data: bytes) -> None:
    encoded = b64url_encode(data)
    assert b64url_decode(encoded) == data


@given(data=st.binary(max_size=200))
def test_b64url_encoding_is_unpadded_url_safe_and_minimal(data: bytes) -> None:
    encoded = b64url_encode(data)
    assert set(encoded) <= set(B64URL_ALPHABET)
    assert len(encoded) == -(-len(data) * 4 // 3)  # ceil(4n/3): no padding characters
    assert encoded == base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_b64url_known_vectors() -> None:
    assert b64url_encode(b"") == ""
    assert b64url_encode(b"\xfb\xff") == "-_8"
    assert b64url_encode(b"hello") == "aGVsbG8"
    assert b64url_decode("") == b""
    assert b64url_decode("-_8") == b"\xfb\xff"


@pytest.mark.parametrize(
    "text",
    [
        "aGVsbG8=",  # padded
        "AA==",
        "AA=",
        "====",
        "+_8A",  # standard alphabet
        "-/8A",
        "+/+/",
        "A",  # length 1 mod 4 can never be base64
        "AAAAA",
        "AAAAAAAAA",
    ],
)
def test_b64url_refuses_padding_other_alphabets_and_impossible_lengths(text: str) -> None:
    refused(E.MALFORMED.code, b64url_decode, text)


@pytest.mark.parametrize(
    "text",
    ["AB", "AAB", "AAAAAB", "aGVsbG9", "aGVsbG-"],
)
def test_b64url_refuses_non_canonical_trailing_bits(text: str) -> None:
    refused(E.MALFORMED.code, b64url_decode, text)


@given(data=st.binary(min_size=1, max_size=100).filter(lambda d: len(d) % 3 != 0))
def test_b64url_refuses_every_text_whose_unused_bits_are_set(data: bytes) -> None:
    encoded = b64url_encode(data)
    unused_bits = 4 if len(data) % 3 == 1 else 2
    last = B64URL_ALPHABET.index(encoded[-1])
    assert last % (1 << unused_bits) == 0  # the encoder writes zeros there
    for low in range(1, 1 << unused_bits):
        tampered = encoded[:-1] + B64URL_ALPHABET[last + low]
        refused(E.MALFORMED.code, b64url_decode, tampered)


@pytest.mark.parametrize(
    "text",
    [
        "AA AA",
        " AAAA",
        "AAAA\n",
        "AA\tA",
        "AA!A",
        "AAé",
        "AA.A",
        "\uff21\uff21\uff21\uff21",
        "AA\x00A",
    ],
)
def test_b64url_refuses_characters_outside_the_alphabet(text: str) -> None:
    refused(E.MALFORMED.code, b64url_decode, text)


@pytest.mark.parametrize("value", [b"AAAA", None, 1234, ["AAAA"]])
def test_b64url_refuses_anything_but_text(value: Any) -> None:
    refused(E.MALFORMED.code, b64url_decode, value)


def test_b64url_refuses_text_longer_than_the_limit() -> None:
    assert b64url_decode("AAAA", max_chars=4) == b"\x00\x00\x00"
    refused(E.MALFORMED.code, b64url_decode, "AAAAAAAA", max_chars=4)
    refused(E.MALFORMED.code, b64url_decode, "A" * ((1 << 20) + 4))


# --- digests -------------------------------------------------------------------------------


def test_sha256_b64url_known_vector() -> None:
    # SHA-256 of the empty string, FIPS 180-4 test vector, in unpadded base64url.
    assert sha256_b64url(b"") == "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"


def test_digest_of_is_the_sha256_of_the_canonical_bytes() -> None:
    value = {"b": [1, "é"], "a": None}
    expected = hashlib.sha256(b'{"a":null,"b":[1,"\xc3\xa9"]}').digest()
    assert digest_of(value) == b64url_encode(expected)
    assert len(digest_of(value)) == 43


@given(value=json_objects)
def test_digest_of_does_not_depend_on_key_order(value: dict[str, Any]) -> None:
    assert digest_of(reversed_insertion(value)) == digest_of(value)


@given(value=json_objects)
def test_digest_of_survives_a_round_trip_through_the_wire(value: dict[str, Any]) -> None:
    wire = json.dumps(reversed_insertion(value), ensure_ascii=True, indent=2).encode()
    assert digest_of(parse_json(wire, max_bytes=BIG)) == digest_of(value)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"a": 1}, {"a": "1"}),
        ({"a": 1}, {"a": 2}),
        ({"a": True}, {"a": 1}),
        ({"a": None}, {}),
        ([1, 2], [2, 1]),
        ({"a": [1]}, {"a": 1}),
    ],
)
def test_digest_of_tells_different_values_apart(first: Any, second: Any) -> None:
    assert digest_of(first) != digest_of(second)


def test_digest_of_refuses_floats() -> None:
    refused(E.MALFORMED.code, digest_of, {"amount": 12.5})


def test_escaped_lone_surrogate_parses_but_cannot_be_digested() -> None:
    # '\ud800' is legal JSON syntax, so parse_json admits it; the value has no UTF-8 form, so
    # canonicalising it (to sign or fingerprint) is refused as malformed, never a crash.
    value = parse_json('{"a": "\\ud800"}', max_bytes=BIG)
    refused(E.MALFORMED.code, digest_of, value)


def test_canonical_json_refuses_nesting_deeper_than_the_bound() -> None:
    from semops.core.limits import JSON_DEPTH_MAX

    deep: Any = 1
    for _ in range(JSON_DEPTH_MAX + 1):
        deep = [deep]
    refused(E.MALFORMED.code, canonical_json, deep)
    refused(E.MALFORMED.code, parse_json, json.dumps(deep), max_bytes=BIG)
    shallow: Any = 1
    for _ in range(JSON_DEPTH_MAX):
        shallow = [shallow]
    assert parse_json(json.dumps(shallow), max_bytes=BIG) == shallow
