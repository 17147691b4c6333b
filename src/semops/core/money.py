"""Money: integer minor units with an ISO 4217 currency and its scale.

There is no float anywhere near money. An amount is an `int` count of the currency's
minor unit (cents for EUR, yen for JPY, fils for BHD). Text is parsed and printed only at
the edge, with `Decimal` used solely to split "12.50" into 1250 and back; arithmetic is on
integers, so it can never create or lose a minor unit. Every constructor checks range, and
`Money` refuses to add or compare amounts in different currencies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Final

from semops.core.errors import E, SemopsError
from semops.core.limits import (
    AMOUNT_MAX_MINOR,
    AMOUNT_MIN_MINOR,
    AMOUNT_TEXT_MAX_CHARS,
    BALANCE_ABS_MAX_MINOR,
)

# ISO 4217 alphabetic code -> number of minor-unit digits (the "scale"). The list covers the
# markets SEMOPS is built for; adding a currency is adding a line, and an unknown code is
# refused rather than guessed.
CURRENCY_SCALES: Final[dict[str, int]] = {
    "AUD": 2, "BDT": 2, "BHD": 3, "BRL": 2, "CAD": 2, "CHF": 2, "CLP": 0, "CNY": 2,
    "CZK": 2, "DKK": 2, "EGP": 2, "ETB": 2, "EUR": 2, "GBP": 2, "GHS": 2, "HKD": 2,
    "HUF": 2, "IDR": 2, "INR": 2, "ISK": 0, "JOD": 3, "JPY": 0, "KES": 2, "KRW": 0,
    "KWD": 3, "LKR": 2, "MAD": 2, "MWK": 2, "MXN": 2, "NGN": 2, "NOK": 2, "NZD": 2,
    "OMR": 3, "PHP": 2, "PKR": 2, "PLN": 2, "RWF": 0, "SEK": 2, "SGD": 2, "TND": 3,
    "TRY": 2, "TZS": 2, "UGX": 0, "USD": 2, "VND": 0, "XAF": 0, "XOF": 0, "ZAR": 2,
    "ZMW": 2,
}  # fmt: skip

_AMOUNT_TEXT = re.compile(r"(?P<sign>-?)(?P<units>[0-9]+)(?:\.(?P<fraction>[0-9]+))?")
_CURRENCY_TEXT = re.compile(r"[A-Z]{3}")


def currency_scale(currency: str) -> int:
    """The minor-unit digits of a supported ISO 4217 code; refuses anything else."""
    # The isinstance check first: a JSON list or object is unhashable and would escape the
    # look-up as a TypeError instead of being refused.
    scale = CURRENCY_SCALES.get(currency) if isinstance(currency, str) else None
    if scale is None:
        shown = currency[:8] if isinstance(currency, str) else type(currency).__name__
        raise SemopsError(E.CURRENCY_UNKNOWN, f"currency {shown!r} is not supported")
    return scale


def check_payment_amount(amount_minor: int) -> int:
    """A payable amount: an int (not bool) from AMOUNT_MIN_MINOR to AMOUNT_MAX_MINOR."""
    if type(amount_minor) is not int:
        raise SemopsError(E.AMOUNT_INVALID, "an amount is an integer count of minor units")
    if not AMOUNT_MIN_MINOR <= amount_minor <= AMOUNT_MAX_MINOR:
        raise SemopsError(
            E.AMOUNT_OUT_OF_RANGE,
            f"amount must be between {AMOUNT_MIN_MINOR} and {AMOUNT_MAX_MINOR} minor units",
        )
    return amount_minor


def _check_balance_range(amount_minor: int) -> int:
    if type(amount_minor) is not int:
        raise SemopsError(E.AMOUNT_INVALID, "an amount is an integer count of minor units")
    if not -BALANCE_ABS_MAX_MINOR <= amount_minor <= BALANCE_ABS_MAX_MINOR:
        raise SemopsError(E.AMOUNT_OUT_OF_RANGE, "amount is outside the representable range")
    return amount_minor


@dataclass(frozen=True, slots=True)
class Money:
    """A signed integer amount of minor units in one currency.

    Signed so that ledger balances and net positions use the same type; a *payment* amount
    is further checked with `check_payment_amount` (positive, bounded).
    """

    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        currency_scale(self.currency)
        _check_balance_range(self.amount_minor)

    @property
    def scale(self) -> int:
        return CURRENCY_SCALES[self.currency]

    def _same_currency(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError("Money combines only with Money")
        if other.currency != self.currency:
            raise SemopsError(
                E.CURRENCY_MISMATCH, f"cannot combine {self.currency} with {other.currency}"
            )

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount_minor < other.amount_minor

    def __le__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount_minor <= other.amount_minor

    def is_zero(self) -> bool:
        return self.amount_minor == 0

    def format(self) -> str:
        """'12.50 EUR', '-0.05 EUR', '500 JPY': exact, with all the scale's digits."""
        return f"{format_amount(self.amount_minor, self.currency)} {self.currency}"

    def __str__(self) -> str:
        return self.format()

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @classmethod
    def parse(cls, text: str, *, allow_negative: bool = False) -> Money:
        """Parse '12.50 EUR' (amount, one space, ISO code)."""
        if not isinstance(text, str) or len(text) > AMOUNT_TEXT_MAX_CHARS + 4:
            raise SemopsError(E.AMOUNT_INVALID, "write an amount as '12.50 EUR'")
        amount_text, separator, currency = text.rpartition(" ")
        if not separator or not _CURRENCY_TEXT.fullmatch(currency):
            raise SemopsError(E.AMOUNT_INVALID, "write an amount as '12.50 EUR'")
        minor = parse_amount(amount_text, currency, allow_negative=allow_negative)
        return cls(minor, currency)


def parse_amount(text: str, currency: str, *, allow_negative: bool = False) -> int:
    """'12.50' in EUR -> 1250. Refuses extra decimals, exponents, separators and floats."""
    scale = currency_scale(currency)
    if not isinstance(text, str) or len(text) > AMOUNT_TEXT_MAX_CHARS:
        raise SemopsError(E.AMOUNT_INVALID, "an amount is digits with an optional decimal point")
    match = _AMOUNT_TEXT.fullmatch(text)
    if match is None:
        raise SemopsError(E.AMOUNT_INVALID, "an amount is digits with an optional decimal point")
    fraction = match["fraction"] or ""
    if len(fraction) > scale:
        raise SemopsError(
            E.AMOUNT_INVALID, f"{currency} has {scale} decimal places; {text!r} has more"
        )
    if match["sign"] and not allow_negative:
        raise SemopsError(E.AMOUNT_INVALID, "the amount must not be negative")
    try:
        exact = Decimal(text)
    except InvalidOperation as error:  # pragma: no cover - the regex admits only decimals
        raise SemopsError(E.AMOUNT_INVALID, "not a decimal amount") from error
    minor = int(exact.scaleb(scale))
    return _check_balance_range(minor)


def format_amount(amount_minor: int, currency: str) -> str:
    """1250 in EUR -> '12.50'; exact integer arithmetic, no rounding ever."""
    scale = currency_scale(currency)
    _check_balance_range(amount_minor)
    sign = "-" if amount_minor < 0 else ""
    units, fraction = divmod(abs(amount_minor), 10**scale)
    if scale == 0:
        return f"{sign}{units}"
    return f"{sign}{units}.{fraction:0{scale}d}"
