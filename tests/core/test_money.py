"""Money: exact text round-trips, arithmetic that conserves minor units, and refusals.

The refusals are the specification of what an amount is *not*: each one names the error
code a service would answer with, so a change that accepts a float, an exponent or a
foreign digit fails here.
"""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from semops.core import (
    CURRENCY_SCALES,
    E,
    Money,
    SemopsError,
    check_payment_amount,
    currency_scale,
    format_amount,
    parse_amount,
)
from semops.core.limits import (
    AMOUNT_MAX_MINOR,
    AMOUNT_MIN_MINOR,
    AMOUNT_TEXT_MAX_CHARS,
    BALANCE_ABS_MAX_MINOR,
)

CURRENCIES = sorted(CURRENCY_SCALES)
currencies = st.sampled_from(CURRENCIES)
balances = st.integers(min_value=-BALANCE_ABS_MAX_MINOR, max_value=BALANCE_ABS_MAX_MINOR)
# Amounts small enough that a list of them can be summed without leaving the balance range.
summable = st.integers(min_value=-AMOUNT_MAX_MINOR, max_value=AMOUNT_MAX_MINOR)


def refused(code: str, call: object, *args: object, **kwargs: object) -> SemopsError:
    assert callable(call)
    with pytest.raises(SemopsError) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, caught.value
    return caught.value


# --- Currencies and scales ---------------------------------------------------------------


def test_every_supported_currency_is_an_uppercase_iso_code_with_scale_0_2_or_3() -> None:
    for currency, scale in CURRENCY_SCALES.items():
        assert len(currency) == 3
        assert currency.isascii()
        assert currency.isupper()
        assert scale in (0, 2, 3)


@pytest.mark.parametrize(
    ("currency", "scale"), [("EUR", 2), ("USD", 2), ("JPY", 0), ("KRW", 0), ("BHD", 3)]
)
def test_currency_scale_matches_iso_4217_minor_units(currency: str, scale: int) -> None:
    assert currency_scale(currency) == scale


@pytest.mark.parametrize("currency", ["XYZ", "eur", "Eur", "EURO", "", "EU", " EUR", "EUR\n"])
def test_unknown_or_miswritten_currency_is_refused_as_currency_unknown(currency: str) -> None:
    refused(E.CURRENCY_UNKNOWN.code, currency_scale, currency)
    refused(E.CURRENCY_UNKNOWN.code, Money, 100, currency)
    refused(E.CURRENCY_UNKNOWN.code, parse_amount, "1", currency)
    refused(E.CURRENCY_UNKNOWN.code, format_amount, 100, currency)


@pytest.mark.parametrize("currency", [None, 978, b"EUR", ["EUR"], {"EUR": 2}, ("EUR",)])
def test_currency_that_is_not_a_string_is_refused_as_currency_unknown(currency: object) -> None:
    # Regression: an unhashable currency (a JSON list or object) used to escape as a
    # TypeError from the dict look-up, which a service would answer with a 500.
    refused(E.CURRENCY_UNKNOWN.code, currency_scale, currency)
    refused(E.CURRENCY_UNKNOWN.code, Money, 100, currency)


# --- Text round-trips ----------------------------------------------------------------------


@pytest.mark.parametrize("currency", CURRENCIES)
@given(amount_minor=balances)
def test_format_then_parse_returns_the_same_minor_units_in_every_currency(
    currency: str, amount_minor: int
) -> None:
    text = format_amount(amount_minor, currency)
    assert parse_amount(text, currency, allow_negative=True) == amount_minor


@pytest.mark.parametrize("currency", CURRENCIES)
@given(amount_minor=balances)
def test_money_format_then_parse_returns_an_equal_money_in_every_currency(
    currency: str, amount_minor: int
) -> None:
    money = Money(amount_minor, currency)
    assert Money.parse(money.format(), allow_negative=True) == money


@given(currency=currencies, amount_minor=balances)
def test_formatted_amount_has_exactly_the_currency_scale_in_decimals(
    currency: str, amount_minor: int
) -> None:
    text = format_amount(amount_minor, currency)
    scale = CURRENCY_SCALES[currency]
    if scale == 0:
        assert "." not in text
    else:
        assert len(text.split(".")[1]) == scale
    assert len(text) <= AMOUNT_TEXT_MAX_CHARS


@given(currency=currencies, amount_minor=st.integers(min_value=0, max_value=AMOUNT_MAX_MINOR))
def test_parse_accepts_fewer_decimals_than_the_scale_and_means_the_same_amount(
    currency: str, amount_minor: int
) -> None:
    scale = CURRENCY_SCALES[currency]
    units, fraction = divmod(amount_minor, 10**scale)
    if scale == 0:
        return
    # '12.5' EUR is '12.50' EUR: trailing zeros in the fraction may be left out.
    digits = f"{fraction:0{scale}d}".rstrip("0")
    short = f"{units}.{digits}" if digits else f"{units}"
    assert parse_amount(short, currency) == amount_minor


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (1250, "EUR", "12.50"),
        (5, "EUR", "0.05"),
        (-5, "EUR", "-0.05"),
        (0, "EUR", "0.00"),
        (500, "JPY", "500"),
        (-500, "JPY", "-500"),
        (1, "BHD", "0.001"),
        (12345, "KWD", "12.345"),
    ],
)
def test_format_amount_writes_exact_decimal_text(minor: int, currency: str, text: str) -> None:
    assert format_amount(minor, currency) == text
    assert parse_amount(text, currency, allow_negative=True) == minor


def test_money_format_is_amount_one_space_code_and_str_is_the_same() -> None:
    assert Money(1250, "EUR").format() == "12.50 EUR"
    assert str(Money(-5, "EUR")) == "-0.05 EUR"
    assert Money(500, "JPY").format() == "500 JPY"


def test_negative_zero_text_is_zero_when_negatives_are_allowed() -> None:
    assert parse_amount("-0.00", "EUR", allow_negative=True) == 0
    assert format_amount(0, "EUR") == "0.00"


# --- Refused amount text -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency"),
    [
        ("12.345", "EUR"),  # more decimals than the scale
        ("0.001", "USD"),
        ("1.5", "JPY"),  # JPY has no minor unit
        ("1.0", "JPY"),  # not even a zero decimal
        ("1.0001", "BHD"),
        ("1e3", "EUR"),  # exponent
        ("1E3", "EUR"),
        ("+5", "EUR"),  # explicit plus sign
        (" 5", "EUR"),  # surrounding white space
        ("5 ", "EUR"),
        ("5\n", "EUR"),
        ("\t5", "EUR"),
        ("1,000.00", "EUR"),  # group separators
        ("1 000", "EUR"),
        ("1_000", "EUR"),  # Decimal() would accept this
        ("12,50", "EUR"),  # decimal comma
        ("١٢", "EUR"),  # Arabic-Indic digits: Decimal() would accept them
        ("१२", "EUR"),  # Devanagari digits
        ("\uff11\uff12", "EUR"),  # fullwidth digits
        ("12.", "EUR"),  # dot without fraction
        (".5", "EUR"),  # fraction without units
        (".", "EUR"),
        ("", "EUR"),
        ("-", "EUR"),
        ("--5", "EUR"),
        ("5-", "EUR"),
        ("NaN", "EUR"),
        ("Infinity", "EUR"),
        ("inf", "EUR"),
        ("0x10", "EUR"),
        ("1.2.3", "EUR"),
        ("12.50 EUR", "EUR"),  # the currency belongs to Money.parse, not parse_amount
    ],
)
def test_malformed_amount_text_is_refused_as_amount_invalid(text: str, currency: str) -> None:
    refused(E.AMOUNT_INVALID.code, parse_amount, text, currency)
    refused(E.AMOUNT_INVALID.code, parse_amount, text, currency, allow_negative=True)


@pytest.mark.parametrize("text", ["-1", "-0.01", "-0", "-0.00"])
def test_negative_amount_text_is_refused_unless_negatives_are_allowed(text: str) -> None:
    refused(E.AMOUNT_INVALID.code, parse_amount, text, "EUR")
    assert parse_amount(text, "EUR", allow_negative=True) <= 0


def test_amount_text_longer_than_the_limit_is_refused_before_parsing() -> None:
    at_limit = "0" * (AMOUNT_TEXT_MAX_CHARS - 3) + ".01"
    assert len(at_limit) == AMOUNT_TEXT_MAX_CHARS
    assert parse_amount(at_limit, "EUR") == 1
    refused(E.AMOUNT_INVALID.code, parse_amount, "0" + at_limit, "EUR")
    refused(E.AMOUNT_INVALID.code, parse_amount, "1" * 10_000, "EUR")


def test_amount_text_beyond_the_balance_range_is_refused_as_out_of_range() -> None:
    too_many_cents = BALANCE_ABS_MAX_MINOR + 1
    units, cents = divmod(too_many_cents, 100)
    refused(E.AMOUNT_OUT_OF_RANGE.code, parse_amount, f"{units}.{cents:02d}", "EUR")
    refused(E.AMOUNT_OUT_OF_RANGE.code, parse_amount, "9" * AMOUNT_TEXT_MAX_CHARS, "EUR")


@pytest.mark.parametrize("value", [12.5, 1250, b"12.50", None, ["12.50"]])
def test_amount_that_is_not_text_is_refused_by_parse_amount(value: object) -> None:
    refused(E.AMOUNT_INVALID.code, parse_amount, value, "EUR")


@pytest.mark.parametrize(
    "text",
    [
        "12.50",  # no currency
        "12.50EUR",  # no space
        "12.50  EUR",  # two spaces
        "12.50\tEUR",
        "12.50 eur",  # lowercase code
        "12.50 Eur",
        "12.50 EURO",
        "EUR 12.50",  # code first
        "12.345 EUR",
        "1e3 EUR",
        "+5.00 EUR",
        "١٢ EUR",
        "12.50 \uff25\uff35\uff32",  # fullwidth code letters
        "",
        " ",
        "1" * (AMOUNT_TEXT_MAX_CHARS + 1) + " EUR",
    ],
)
def test_malformed_money_text_is_refused_as_amount_invalid(text: str) -> None:
    refused(E.AMOUNT_INVALID.code, Money.parse, text)


def test_money_text_with_an_unknown_currency_is_refused_as_currency_unknown() -> None:
    refused(E.CURRENCY_UNKNOWN.code, Money.parse, "12.50 XYZ")


def test_money_text_negative_is_refused_unless_negatives_are_allowed() -> None:
    refused(E.AMOUNT_INVALID.code, Money.parse, "-0.05 EUR")
    assert Money.parse("-0.05 EUR", allow_negative=True) == Money(-5, "EUR")


@pytest.mark.parametrize("value", [b"12.50 EUR", 12.5, None, 1250])
def test_money_parse_refuses_anything_but_text(value: object) -> None:
    refused(E.AMOUNT_INVALID.code, Money.parse, value)


# --- Constructing Money and payment amounts ------------------------------------------------


@pytest.mark.parametrize("amount", [1.5, 1.0, 0.0, float("nan"), float("inf")])
def test_money_refuses_float_amounts(amount: float) -> None:
    refused(E.AMOUNT_INVALID.code, Money, amount, "EUR")


@pytest.mark.parametrize("amount", [True, False, "1250", None])
def test_money_refuses_bools_and_non_integers(amount: object) -> None:
    refused(E.AMOUNT_INVALID.code, Money, amount, "EUR")


def test_money_refuses_amounts_outside_the_balance_range() -> None:
    assert Money(BALANCE_ABS_MAX_MINOR, "EUR").amount_minor == BALANCE_ABS_MAX_MINOR
    assert Money(-BALANCE_ABS_MAX_MINOR, "EUR").amount_minor == -BALANCE_ABS_MAX_MINOR
    refused(E.AMOUNT_OUT_OF_RANGE.code, Money, BALANCE_ABS_MAX_MINOR + 1, "EUR")
    refused(E.AMOUNT_OUT_OF_RANGE.code, Money, -BALANCE_ABS_MAX_MINOR - 1, "EUR")
    refused(E.AMOUNT_OUT_OF_RANGE.code, format_amount, BALANCE_ABS_MAX_MINOR + 1, "EUR")


def test_money_is_immutable() -> None:
    money = Money(100, "EUR")
    with pytest.raises(AttributeError):
        money.amount_minor = 200  # type: ignore[misc]


def test_payment_amount_accepts_the_whole_range_and_returns_it() -> None:
    assert check_payment_amount(AMOUNT_MIN_MINOR) == AMOUNT_MIN_MINOR
    assert check_payment_amount(1250) == 1250
    assert check_payment_amount(AMOUNT_MAX_MINOR) == AMOUNT_MAX_MINOR


@pytest.mark.parametrize("amount", [0, -1, -AMOUNT_MAX_MINOR, AMOUNT_MAX_MINOR + 1, 10**30])
def test_payment_amount_outside_the_range_is_refused_as_out_of_range(amount: int) -> None:
    refused(E.AMOUNT_OUT_OF_RANGE.code, check_payment_amount, amount)


@pytest.mark.parametrize("amount", [1.0, 1.5, True, False, "1", None, Money(1, "EUR")])
def test_payment_amount_that_is_not_a_plain_int_is_refused_as_invalid(amount: object) -> None:
    refused(E.AMOUNT_INVALID.code, check_payment_amount, amount)


# --- Arithmetic conserves minor units ------------------------------------------------------


@given(currency=currencies, amounts=st.lists(summable, max_size=50))
def test_sum_of_money_equals_money_of_the_integer_sum(currency: str, amounts: list[int]) -> None:
    total = sum((Money(a, currency) for a in amounts), Money.zero(currency))
    assert total == Money(sum(amounts), currency)


@given(currency=currencies, a=summable, b=summable)
def test_subtracting_then_adding_back_returns_the_original(currency: str, a: int, b: int) -> None:
    first, second = Money(a, currency), Money(b, currency)
    assert first - second + second == first
    assert first + second - second == first
    assert first + second == second + first
    negated = -first
    assert negated.amount_minor == -a
    assert -negated == first
    assert first - first == Money.zero(currency)
    assert (first - first).is_zero()


@given(
    currency=currencies,
    total=st.integers(min_value=0, max_value=AMOUNT_MAX_MINOR),
    data=st.data(),
)
def test_splitting_an_amount_into_parts_and_adding_them_returns_the_amount(
    currency: str, total: int, data: st.DataObject
) -> None:
    cuts = sorted(
        data.draw(st.lists(st.integers(min_value=0, max_value=total), max_size=20), label="cuts")
    )
    bounds = [0, *cuts, total]
    parts = [Money(high - low, currency) for low, high in pairwise(bounds)]
    assert all(part.amount_minor >= 0 for part in parts)
    assert sum(parts, Money.zero(currency)) == Money(total, currency)


@given(currency=currencies, a=summable, b=summable)
def test_comparisons_follow_the_integer_amounts(currency: str, a: int, b: int) -> None:
    first, second = Money(a, currency), Money(b, currency)
    assert (first < second) == (a < b)
    assert (first <= second) == (a <= b)
    assert (first > second) == (a > b)
    assert (first >= second) == (a >= b)
    assert (first == second) == (a == b)


def test_arithmetic_that_would_leave_the_balance_range_is_refused() -> None:
    top = Money(BALANCE_ABS_MAX_MINOR, "EUR")
    refused(E.AMOUNT_OUT_OF_RANGE.code, top.__add__, Money(1, "EUR"))
    refused(E.AMOUNT_OUT_OF_RANGE.code, (-top).__sub__, Money(1, "EUR"))


def test_adding_or_subtracting_different_currencies_is_refused_as_currency_mismatch() -> None:
    eur, usd = Money(100, "EUR"), Money(100, "USD")
    refused(E.CURRENCY_MISMATCH.code, eur.__add__, usd)
    refused(E.CURRENCY_MISMATCH.code, eur.__sub__, usd)
    with pytest.raises(SemopsError) as caught:
        _ = eur + usd
    assert caught.value.code == E.CURRENCY_MISMATCH.code


@pytest.mark.parametrize(
    "compare",
    [
        lambda a, b: a < b,
        lambda a, b: a <= b,
        lambda a, b: a > b,
        lambda a, b: a >= b,
    ],
    ids=["lt", "le", "gt", "ge"],
)
def test_ordering_different_currencies_is_refused_as_currency_mismatch(compare: object) -> None:
    assert callable(compare)
    refused(E.CURRENCY_MISMATCH.code, compare, Money(100, "EUR"), Money(100, "USD"))


def test_same_amount_in_different_currencies_is_not_equal() -> None:
    assert Money(100, "EUR") != Money(100, "USD")
    assert Money(100, "EUR") != Money(100, "JPY")


@pytest.mark.parametrize("other", [1, 1.0, "1.00 EUR", None])
def test_money_does_not_combine_with_plain_numbers(other: object) -> None:
    with pytest.raises(TypeError):
        _ = Money(100, "EUR") + other  # type: ignore[operator]
    with pytest.raises(TypeError):
        _ = Money(100, "EUR") < other  # type: ignore[operator]


def test_money_scale_and_zero_follow_the_currency() -> None:
    assert Money(1, "EUR").scale == 2
    assert Money(1, "JPY").scale == 0
    assert Money(1, "OMR").scale == 3
    assert Money.zero("JPY") == Money(0, "JPY")
    assert Money.zero("JPY").is_zero()
    assert not Money(1, "JPY").is_zero()
