"""Rating: a plan's prices and a period's figures in, lines with amounts and a subtotal out (pure).

Every amount is exact (`Fraction`) until the end of its line, where it is rounded once, half up, to the
currency's minor unit; the subtotal is the sum of the rounded lines. The rules (API.md "Prices and invoices"):

    billable    max(quantity - included, 0)
    per_unit    billable x unit_price / unit_size (fractional billing units are priced, not rounded)
    package     ceil(billable / unit_size) x unit_price
    graduated   each tier prices the billable units inside it, (lower, up_to], as per_unit does, plus its
                flat_fee when any billable quantity falls in it; a billable of 0 charges nothing
    volume      all of billable at the unit_price of the tier it falls in, plus that tier's flat_fee

Late events carried into a period (an `adjustment` line) are priced at the margin: their amount is
rate(usage + adjustment) - rate(usage), each rounded, so usage and adjustment together cost what the same
quantity would have cost on one line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from metering.billing.statements import LineKind, StatementLine, TierLine
from metering.core import decimals
from metering.core.money import minor_digits, round_half_up, shown, to_amount
from metering.core.prices import Price, PriceModel, Pricing

# Kinds whose price applies to their `average` rather than their total: a time-weighted meter's total is in
# unit-hours, its average over the period the GB-month that is billed.
PRICED_BY_AVERAGE = frozenset({"time_weighted"})


def priced_quantity(aggregation: str | None, total: Decimal, average: Decimal | None = None) -> Decimal:
    """The figure of a period a price applies to: for every kind its total (sum, count, unique_count, max,
    min, latest), for a time-weighted meter its average. The one place a kind maps to its priced figure."""
    if aggregation in PRICED_BY_AVERAGE:
        if average is None:
            raise ValueError(f"a {aggregation} meter is priced on its average, and none was given")
        return average
    return total


@dataclass(frozen=True, slots=True)
class TierCharge:
    index: int
    up_to: Decimal | None
    quantity: Decimal
    unit_price: Decimal
    flat_fee: Decimal
    amount: Fraction


@dataclass(frozen=True, slots=True)
class Charge:
    """What a quantity costs under one price, exactly; `tiers` for tiered models (only those applied)."""

    amount: Fraction
    tiers: tuple[TierCharge, ...] | None = None


def billable(price: Price, quantity: Decimal) -> Decimal:
    return max(decimals.subtract(quantity, price.included), decimals.ZERO)


def charge(price: Price, quantity: Decimal) -> Charge:
    """The exact amount `quantity` (a period figure, in the meter's units) costs under `price`."""
    units = billable(price, quantity)
    size = Fraction(price.unit_size)
    if price.model is PriceModel.PER_UNIT:
        assert price.unit_price is not None
        return Charge(Fraction(units) * Fraction(price.unit_price) / size)
    if price.model is PriceModel.PACKAGE:
        assert price.unit_price is not None
        return Charge(math.ceil(Fraction(units) / size) * Fraction(price.unit_price))
    if price.model is PriceModel.GRADUATED:
        return _graduated(price, units, size)
    return _volume(price, units, size)


def _graduated(price: Price, units: Decimal, size: Fraction) -> Charge:
    tiers: list[TierCharge] = []
    for band in price.bands():
        if units <= band.lower:
            break
        top = units if band.upper is None else min(units, band.upper)
        inside = decimals.subtract(top, band.lower)
        fee = band.tier.flat_fee
        amount = Fraction(inside) * Fraction(band.tier.unit_price) / size + Fraction(fee)
        tiers.append(TierCharge(band.index, band.upper, inside, band.tier.unit_price, fee, amount))
    return Charge(sum((t.amount for t in tiers), Fraction(0)), tuple(tiers))


def _volume(price: Price, units: Decimal, size: Fraction) -> Charge:
    if units <= 0:
        return Charge(Fraction(0), ())
    for band in price.bands():
        if band.upper is None or units <= band.upper:
            fee = band.tier.flat_fee
            amount = Fraction(units) * Fraction(band.tier.unit_price) / size + Fraction(fee)
            return Charge(amount, (TierCharge(band.index, band.upper, units, band.tier.unit_price, fee, amount),))
    raise AssertionError("the last tier has no up_to (checked when the plans are loaded)")


@dataclass(frozen=True, slots=True)
class Rated:
    lines: list[StatementLine]
    subtotal: Decimal


def rate(pricing: Pricing, lines: Sequence[StatementLine]) -> Rated:
    """`lines` (usage and adjustment lines of one period, as metered_lines gives them) with their amounts,
    the base-fee line first, and the subtotal."""
    digits = minor_digits(pricing.currency)
    rated: list[StatementLine] = []
    if pricing.base_fee is not None:
        rated.append(
            StatementLine(
                metric=None,
                kind=LineKind.FEE,
                unit=None,
                aggregation=None,
                quantity=decimals.ONE,
                event_count=0,
                amount=to_amount(pricing.base_fee, digits),
            )
        )
    usage = {line.metric: line for line in lines if line.kind is LineKind.USAGE}
    for line in lines:
        price = pricing.prices.get(line.metric or "")
        if line.kind is LineKind.FEE:
            continue
        if price is None:
            rated.append(line.model_copy(update={"amount": to_amount(decimals.ZERO, digits), "tiers": None}))
            continue
        base = usage.get(line.metric)
        before = priced_quantity(base.aggregation, base.quantity, base.average) if base is not None else decimals.ZERO
        if line.kind is LineKind.USAGE:
            done = charge(price, before)
            amount = round_half_up(done.amount, digits)
            tiers = _tier_lines(done, None)
        else:
            # At the margin: what the late events add to what the period's own usage already costs.
            after = decimals.add(before, priced_quantity(line.aggregation, line.quantity))
            was, now = charge(price, before), charge(price, after)
            amount = decimals.subtract(round_half_up(now.amount, digits), round_half_up(was.amount, digits))
            tiers = _tier_lines(now, was)
        rated.append(line.model_copy(update={"amount": amount, "tiers": tiers}))
    total = decimals.ZERO
    for line in rated:
        assert line.amount is not None
        total = decimals.add(total, line.amount)
    return Rated(rated, to_amount(total, digits))


def _tier_lines(now: Charge, was: Charge | None) -> list[TierLine] | None:
    """The tiers of a charge, or of the difference between two (an adjustment): per tier the change of
    quantity, flat fee and amount, for every tier that changed."""
    if now.tiers is None:
        return None
    before = {t.index: t for t in was.tiers or ()} if was is not None else {}
    after = {t.index: t for t in now.tiers}
    indexes = sorted(set(after) | set(before))
    lines: list[TierLine] = []
    for index in indexes:
        new, old = after.get(index), before.get(index)
        tier = new or old
        assert tier is not None
        quantity = decimals.subtract(new.quantity if new else decimals.ZERO, old.quantity if old else decimals.ZERO)
        fee = decimals.subtract(new.flat_fee if new else decimals.ZERO, old.flat_fee if old else decimals.ZERO)
        amount = (new.amount if new else Fraction(0)) - (old.amount if old else Fraction(0))
        if was is not None and not quantity and not fee and not amount:
            continue
        lines.append(
            TierLine(
                up_to=tier.up_to, quantity=quantity, unit_price=tier.unit_price, flat_fee=fee, amount=shown(amount)
            )
        )
    return lines
