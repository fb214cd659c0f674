"""What each kind of meter sends, and the figures a target can hold exactly (pure).

- `sum`, `count` (and `time_weighted`, the unit-hours of each hour) send the changes of each hour: the hour's
  figure minus what the target holds for that hour, a negative value when the hour's figure fell (a cancel).
- `unique_count` and `max` are not sums of their hours: they send the increases of the period-to-date figure.
- `min` and `latest` cannot be exported (the catalog refuses them at start): a target adds what it is sent.

A target that cannot hold a figure exactly is sent the part it can hold; the rest is reported as a
difference by the reconciliation, never rounded away unseen.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Context, Decimal, InvalidOperation
from enum import StrEnum

from metering.core import decimals
from metering.core.meters import Aggregation, Meter
from metering.core.periods import BillingPeriod

# Kinds whose period figure is the sum of their hours (time_weighted: unit-hours, when the catalog has it).
HOURLY_KINDS = frozenset({Aggregation.SUM.value, Aggregation.COUNT.value, "time_weighted"})
PERIOD_KINDS = frozenset({Aggregation.UNIQUE_COUNT.value, Aggregation.MAX.value})
# Stripe refuses meter event values of more than 15 significant digits (changelog 2026-04-22: it keeps them as
# doubles, which hold 15 digits exactly).
STRIPE_MAX_DIGITS = 15
HOUR = timedelta(hours=1)
# The one deliberate cut: toward zero, what a target cannot hold is left out (and reported), never rounded up.
_CUT = Context(prec=80, rounding=ROUND_DOWN, traps=[InvalidOperation])


class Family(StrEnum):
    HOURLY = "hourly"  # the changes of each hour, in that hour
    PERIOD = "period"  # the increases of the period-to-date figure


def family(meter: Meter) -> Family:
    kind = meter.aggregation.value
    if kind in HOURLY_KINDS:
        return Family.HOURLY
    if kind in PERIOD_KINDS:
        return Family.PERIOD
    raise ValueError(f"{meter.name} is a {kind} meter, which cannot be exported")


def is_additive(meter: Meter) -> bool:
    """Whether the period figure is the sum of the hours' (so the hours not settled yet can be taken out)."""
    return meter.aggregation.value in HOURLY_KINDS


def stripe_exact(value: Decimal, *, whole_numbers: bool) -> Decimal:
    """The part of `value` a Stripe meter event holds exactly: at most 15 significant digits, and a whole number
    unless the account takes decimals. Cut toward zero, so what is sent never exceeds the figure."""
    if not value:
        return decimals.ZERO
    if whole_numbers:
        value = value.to_integral_value(rounding=ROUND_DOWN, context=_CUT)
    if value and decimals.significant_digits(value) > STRIPE_MAX_DIGITS:
        exponent = value.adjusted() - STRIPE_MAX_DIGITS + 1
        value = value.quantize(Decimal(1).scaleb(exponent), context=_CUT)
    return value.normalize(decimals.EXACT) if value else decimals.ZERO


def marketplace_billable(figure: Decimal, included: Decimal) -> Decimal:
    """What the Marketplace bills: the usage above the plan's included units (the base fee covers the rest)."""
    return max(decimals.subtract(figure, included), decimals.ZERO)


def hour_start(hour: str) -> datetime:
    return datetime.fromisoformat(hour + ":00:00").replace(tzinfo=UTC)


def slot_bounds(period: BillingPeriod, hour: str) -> tuple[datetime, datetime]:
    """The part of a UTC hour inside a period: all of it, unless the period starts or ends inside it (a time
    zone whose offset is not whole hours)."""
    start = hour_start(hour)
    return max(start, period.start), min(start + HOUR, period.end)


def hours_between(start: datetime, end: datetime) -> list[str]:
    """The UTC hours that overlap [start, end)."""
    instant = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    found = []
    while instant < end:
        found.append(instant.isoformat(timespec="hours")[:13])
        instant += HOUR
    return found
