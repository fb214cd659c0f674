"""Money: currencies with their ISO 4217 minor units, the one rounding of an amount, and amounts as text.

The minor units come from the `iso4217` package, which carries the ISO 4217 maintenance agency's list (its
version is the list's date), so no table here can drift from the standard. A currency without a minor unit in
the list (gold, SDRs, test codes) is not one an invoice can be written in.

Amounts are computed exactly (`fractions.Fraction`: a price per 3 units does not terminate as a decimal) and
rounded once, half up, to the currency's minor unit; only the line amounts of a statement are rounded.
"""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction
from functools import cache
from typing import Annotated

from iso4217 import Currency
from pydantic import PlainSerializer

from metering.core.decimals import EXACT

CURRENCY_PATTERN = re.compile(r"[A-Z]{3}")
DEFAULT_CURRENCY = "USD"
# Figures derived by a division (an exact tier amount that does not terminate) are shown to this many places.
SHOWN_PLACES = 12


class CurrencyError(ValueError):
    """Not a currency an amount can be written in; the message says why."""


@cache
def minor_digits(code: str) -> int:
    """The digits after the point of `code`'s minor unit (USD 2, JPY 0, BHD 3)."""
    if not CURRENCY_PATTERN.fullmatch(code):
        raise CurrencyError(f"{code!r} is not an ISO 4217 currency code (three capital letters, e.g. USD)")
    try:
        currency = Currency(code)
    except ValueError:
        raise CurrencyError(f"{code!r} is not a currency of ISO 4217") from None
    if currency.exponent is None:
        raise CurrencyError(
            f"{code} ({currency.currency_name}) has no minor unit in ISO 4217: amounts cannot be billed in it"
        )
    return int(currency.exponent)


def round_half_up(amount: Fraction, digits: int) -> Decimal:
    """`amount` rounded once to `digits` places, halves away from zero (the invoice convention: 0.125 is 0.13,
    -0.125 is -0.13), as a decimal that keeps those places ("12.50")."""
    scaled = abs(amount) * 10**digits
    units = scaled.numerator // scaled.denominator
    if 2 * (scaled - units) >= 1:
        units += 1
    if amount < 0:
        units = -units
    return Decimal(units).scaleb(-digits, EXACT)


def to_amount(value: Decimal, digits: int) -> Decimal:
    """An exact value of at most `digits` places written with exactly that many ("49" in USD is "49.00")."""
    return round_half_up(Fraction(value), digits)


def shown(value: Fraction) -> Decimal:
    """An exact figure as a decimal: exact when it has at most 12 places, else rounded half even to 12 (a tier
    of a price per 3 units); amounts are rounded from the exact value, never from this."""
    scaled = value * 10**SHOWN_PLACES
    # round() of a Fraction rounds half to even.
    units = scaled.numerator if scaled.denominator == 1 else round(scaled)
    return Decimal(units).scaleb(-SHOWN_PLACES, EXACT)


def amount_text(value: Decimal) -> str:
    """An amount as text, with the places it was rounded to: "12.50", "1200", "0.125"."""
    return format(value, "f")


# An amount in a pydantic model: its text keeps the currency's places, and a JSON number would lose digits.
AmountText = Annotated[Decimal, PlainSerializer(amount_text, return_type=str)]
