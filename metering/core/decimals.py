"""Exact decimal arithmetic for quantities and totals.

A metering total ends up on an invoice, so it is never rounded: every addition runs in a context that raises
instead of rounding, and values are stored and returned as canonical decimal strings.
"""

from __future__ import annotations

import re
from decimal import (
    ROUND_HALF_EVEN,
    Clamped,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
    Subnormal,
    Underflow,
)
from typing import Annotated

from pydantic import PlainSerializer

# Quantities have at most 18 integer and 12 fractional digits (30 in all); a total of a billion of them needs
# fewer than 40. 80 digits leaves room, and the traps turn anything that would still round into an error.
EXACT = Context(
    prec=80,
    Emax=999_999,
    Emin=-999_999,
    traps=[InvalidOperation, DivisionByZero, Overflow, Underflow, Subnormal, Inexact, Rounded, Clamped],
)

MAX_INTEGER_DIGITS = 18
MAX_FRACTION_DIGITS = 12
# Any decimal of at most 15 significant digits survives a round trip through an IEEE double; more may not.
MAX_JSON_NUMBER_DIGITS = 15

ZERO = Decimal(0)
ONE = Decimal(1)

# ASCII digits only: Decimal() also reads other scripts' digits, which no client means as a quantity.
DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class QuantityError(ValueError):
    """A value that is not an exact, bounded quantity; the message says which rule it breaks."""


def add(a: Decimal, b: Decimal) -> Decimal:
    return EXACT.add(a, b)


def subtract(a: Decimal, b: Decimal) -> Decimal:
    return EXACT.subtract(a, b)


def multiply(a: Decimal, b: Decimal) -> Decimal:
    return EXACT.multiply(a, b)


def negate(value: Decimal) -> Decimal:
    """-value, exactly: unary minus rounds to the thread's default context (28 digits), and a total may hold 30."""
    return EXACT.minus(value)


def percent_of(value: Decimal, percent: Decimal) -> Decimal:
    """`percent` % of `value`, exactly (dividing by 100 only moves the decimal point)."""
    return EXACT.divide(EXACT.multiply(value, percent), 100)


def to_str(value: Decimal) -> str:
    """Canonical text of a decimal: no exponent, no trailing fractional zeros, no negative zero."""
    if not value:
        return "0"
    return format(value.normalize(EXACT), "f")


# A decimal in a pydantic model, written as its canonical text: JSON numbers are doubles, and would lose digits.
DecimalText = Annotated[Decimal, PlainSerializer(to_str, return_type=str)]


def from_str(text: str) -> Decimal:
    """Parse a decimal string written by `to_str` or sent by a client; strict about the format."""
    if not DECIMAL_TEXT.fullmatch(text):
        raise QuantityError("must be a decimal number such as 12.5")
    return Decimal(text)


def _shape(value: Decimal) -> tuple[int, int]:
    """(significant digits, exponent) without trailing zeros, computed without arithmetic: a value with an
    absurd exponent must be refused as a bad quantity, not raise from the exact context."""
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    end = len(digits)
    while end > 1 and digits[end - 1] == 0:
        end -= 1
    return end, exponent + (len(digits) - end)


def significant_digits(value: Decimal) -> int:
    return 1 if not value else _shape(value)[0]


def check_bounds(value: Decimal) -> Decimal:
    """Finite, at most 18 digits before the point and 12 after (trailing zeros do not count)."""
    if not value.is_finite():
        raise QuantityError("must be a finite number")
    if not value:
        return ZERO
    count, exponent = _shape(value)
    if -exponent > MAX_FRACTION_DIGITS:
        raise QuantityError(f"must have at most {MAX_FRACTION_DIGITS} digits after the decimal point")
    if count + exponent > MAX_INTEGER_DIGITS:
        raise QuantityError(f"must have at most {MAX_INTEGER_DIGITS} digits before the decimal point")
    return value


# Figures derived by a division (a time-weighted total in unit-hours, its average) cannot all be exact decimals:
# they are rounded half-even to this many places, once, when shown or priced (API.md "Exactness").
DERIVED_PLACES = 12
_DERIVED = Context(prec=80, rounding=ROUND_HALF_EVEN, Emax=999_999, Emin=-999_999, traps=[InvalidOperation, Overflow])
_DERIVED_STEP = Decimal(1).scaleb(-DERIVED_PLACES)


def derived_quotient(numerator: Decimal, denominator: Decimal | int) -> Decimal:
    """numerator / denominator rounded half-even to 12 places, as one rounding of the exact quotient: a quotient
    that is not a tie lies at least 1 / (2 x 10^12 x denominator) from one, far above the 80 digits it is taken to
    first, so the second step never meets a false tie (denominators here are microseconds: at most 17 digits)."""
    if not denominator:
        raise ZeroDivisionError("a derived figure needs a non-zero denominator")
    exact = _DERIVED.divide(numerator, Decimal(denominator))
    return exact.quantize(_DERIVED_STEP, context=_DERIVED)
