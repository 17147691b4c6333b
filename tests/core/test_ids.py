"""Identifiers: '<kind>_' + base64url of 16 random bytes, and the check for foreign ids.

Ids travel in URLs, file names, logs and SQL, so the charset check is a safety property:
anything outside letters, digits, '_' and '-' (a newline above all) must be refused.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from semops.core import E, IdKind, SemopsError, b64url_decode, check_id, make_id
from semops.core.limits import ID_MAX_CHARS, ID_MIN_CHARS, ID_RANDOM_BYTES

kinds = st.sampled_from(list(IdKind))
entropies = st.binary(min_size=ID_RANDOM_BYTES, max_size=ID_RANDOM_BYTES)
ID_CHARSET = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def refused_id(value: object, kind: IdKind | None = None) -> None:
    with pytest.raises(SemopsError) as caught:
        check_id(value, kind=kind)  # type: ignore[arg-type]
    assert caught.value.code == E.VALIDATION_FAILED.code


def test_id_kinds_have_the_pinned_two_letter_prefixes() -> None:
    # Prefixes are on the wire and in stored data: changing one orphans every stored id.
    assert {kind.name: kind.value for kind in IdKind} == {
        "REQUEST": "rq",
        "ORDER": "or",
        "TRANSFER": "tr",
        "REFUND": "rf",
        "MESSAGE": "ms",
        "DIRECTORY": "dr",
        "DEVICE_AUTH": "da",
    }


def test_id_kind_prefixes_are_distinct_lowercase_letters_without_underscore() -> None:
    prefixes = [kind.value for kind in IdKind]
    assert len(set(prefixes)) == len(prefixes)
    for prefix in prefixes:
        assert prefix.isascii()
        assert prefix.isalpha()
        assert prefix.islower()


@given(kind=kinds, entropy=entropies)
def test_make_id_is_prefix_underscore_and_unpadded_base64url_of_the_entropy(
    kind: IdKind, entropy: bytes
) -> None:
    made = make_id(kind, entropy)
    prefix, _, random_part = made.partition("_")
    assert prefix == kind.value
    assert len(random_part) == 22  # 16 bytes in unpadded base64url
    assert b64url_decode(random_part) == entropy
    assert set(made) <= ID_CHARSET
    assert ID_MIN_CHARS <= len(made) <= ID_MAX_CHARS


@given(kind=kinds, entropy=entropies)
def test_made_id_passes_the_check_for_its_own_kind_only(kind: IdKind, entropy: bytes) -> None:
    made = make_id(kind, entropy)
    assert check_id(made) == made
    assert check_id(made, kind=kind) == made
    for other in IdKind:
        if other is not kind:
            refused_id(made, other)


@given(kind=kinds, first=entropies, second=entropies)
def test_make_id_gives_different_ids_for_different_entropy(
    kind: IdKind, first: bytes, second: bytes
) -> None:
    assert (make_id(kind, first) == make_id(kind, second)) == (first == second)


def test_make_id_known_vector() -> None:
    assert make_id(IdKind.TRANSFER, bytes(16)) == "tr_AAAAAAAAAAAAAAAAAAAAAA"
    assert make_id(IdKind.ORDER, b"\xff" * 16) == "or______________________w"


@pytest.mark.parametrize("size", [0, 1, ID_RANDOM_BYTES - 1, ID_RANDOM_BYTES + 1, 32])
def test_make_id_refuses_entropy_of_the_wrong_length(size: int) -> None:
    with pytest.raises(ValueError, match="entropy"):
        make_id(IdKind.ORDER, b"\x01" * size)


def test_check_id_accepts_lengths_from_the_minimum_to_the_maximum() -> None:
    assert check_id("a" * ID_MIN_CHARS) == "a" * ID_MIN_CHARS
    assert check_id("a" * ID_MAX_CHARS) == "a" * ID_MAX_CHARS
    refused_id("a" * (ID_MIN_CHARS - 1))
    refused_id("a" * (ID_MAX_CHARS + 1))
    refused_id("")


def test_check_id_accepts_foreign_ids_in_the_safe_charset_when_no_kind_is_asked() -> None:
    for foreign in ["ABCDEFGH", "12345678", "a-b_c-d_", "--------", "tr_x-y_z"]:
        assert check_id(foreign) == foreign


@pytest.mark.parametrize(
    "value",
    [
        "tr_abcdefgh\n",  # a trailing newline: log and header injection
        "tr_abcdefgh\r\n",
        "\ntr_abcdefgh",
        "tr_abc\ndefgh",
        "tr_abc defgh",
        "tr_abcdefgh ",
        "tr_abc\tdefgh",
        "tr_abc\x00defgh",
        "tr_abc/defgh",
        "tr_abc.defgh",
        "tr_abc+defgh",
        "tr_abc=defgh",
        "tr_abc%2Fdefgh",
        "tr_abc'defgh",
        'tr_abc"defgh',
        "tr_abcdéfgh",  # non-ASCII letter
        "tr_abcdefg\uff11",  # fullwidth digit one
        "tr_abcdefgh\u200b",  # zero-width space
    ],
)
def test_check_id_refuses_characters_outside_letters_digits_underscore_and_dash(
    value: str,
) -> None:
    refused_id(value)
    refused_id(value, IdKind.TRANSFER)


@pytest.mark.parametrize("value", [b"tr_abcdefgh", None, 12345678, ["tr_abcdefgh"]])
def test_check_id_refuses_anything_but_text(value: object) -> None:
    refused_id(value)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("tr_abcdefgh", IdKind.ORDER),
        ("trabcdefgh", IdKind.TRANSFER),  # prefix without the separator
        ("tr-abcdefgh", IdKind.TRANSFER),
        ("TR_abcdefgh", IdKind.TRANSFER),  # prefixes are case-sensitive
        ("xtr_abcdefgh", IdKind.TRANSFER),
        ("abcdefgh_tr", IdKind.TRANSFER),
    ],
)
def test_check_id_refuses_an_id_without_the_asked_kind_prefix(value: str, kind: IdKind) -> None:
    refused_id(value, kind)
