"""Statements: the invoice-ready usage of one tenant for one closed period, and the lines a period's state row
gives (the closer and the invoice preview read them the same way, so a preview is what the close will write).

A statement rated at close carries `currency`, `plan`, `plan_version` and `subtotal`, and each line its
`amount` (and, for tiered prices, the `tiers` applied); the base fee is a line of kind `fee`. Statements
written before prices existed have none of these: they stay valid and read as unrated (null amounts).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from metering.core import decimals
from metering.core.decimals import DecimalText
from metering.core.meters import Aggregation, MeterCatalog
from metering.core.money import AmountText
from metering.ledger.cells import Cell
from metering.ledger.levels import figures_at
from metering.ledger.rows import StateRow


def _absent(value: object) -> bool:
    return value is None


class LineKind(StrEnum):
    USAGE = "usage"
    ADJUSTMENT = "adjustment"
    FEE = "fee"


class TierLine(BaseModel):
    """The part of a line's billable quantity in one tier and what it costs. `amount` is exact, or rounded to
    12 places where it does not terminate; the line's amount is rounded from the exact tier amounts. For an
    adjustment line these are the differences its late events make to each tier."""

    up_to: DecimalText | None
    quantity: DecimalText
    unit_price: DecimalText
    flat_fee: DecimalText
    amount: DecimalText


class StatementLine(BaseModel):
    """A metric's `usage` (or the `adjustment` of late events carried in), or the plan's base `fee`, which has
    no metric, unit or aggregation."""

    metric: str | None
    kind: LineKind
    unit: str | None
    aggregation: str | None
    quantity: DecimalText
    event_count: int
    amount: AmountText | None = None
    tiers: list[TierLine] | None = None
    # time_weighted meters: `quantity` is the integral in unit-hours, `level` the level at the period end and
    # `average` the level averaged over the period (the GB-months of a GB meter), which is what is priced.
    level: DecimalText | None = Field(None, exclude_if=_absent)
    average: DecimalText | None = Field(None, exclude_if=_absent)


class Statement(BaseModel):
    """Invoice-ready usage of one tenant for one closed period. `adjustment` lines are late events of earlier,
    closed periods carried into this one (late-event policy `adjust`); `usage` lines exclude them."""

    tenant_id: str
    period_start: datetime
    period_end: datetime
    closed_at: datetime
    catalog_version: str
    currency: str | None = None
    plan: str | None = None
    plan_version: str | None = None
    lines: list[StatementLine]
    subtotal: AmountText | None = None

    @property
    def rated(self) -> bool:
        return self.subtotal is not None


def metered_lines(state: StateRow | None, catalog: MeterCatalog) -> list[StatementLine]:
    """The usage and adjustment lines of a period's state row, by metric, without amounts."""
    if state is None:
        return []
    lines: list[StatementLine] = []
    totals = state.totals()
    # A time_weighted meter may have no event in the period and still bill the level carried in.
    for metric in sorted(totals.keys() | state.data.get("tw", {}).keys()):
        total = totals.get(metric) or Cell(decimals.ZERO, 0)
        meter = catalog.get(metric)
        unit = meter.unit if meter else ""
        kind = meter.aggregation.value if meter else "unknown"
        carried = state.adjustment(metric)
        # Only additive meters carry late events (late.py), so subtracting their part is exact.
        usage = (
            total
            if carried is None
            else Cell(decimals.subtract(total.value, carried.value), total.count - carried.count)
        )
        if meter is not None and meter.aggregation is Aggregation.TIME_WEIGHTED:
            lines.append(_level_line(state, metric, unit, usage.count))
        elif usage.count:
            lines.append(
                StatementLine(
                    metric=metric,
                    kind=LineKind.USAGE,
                    unit=unit,
                    aggregation=kind,
                    quantity=usage.value,
                    event_count=usage.count,
                )
            )
        if carried is not None:
            lines.append(
                StatementLine(
                    metric=metric,
                    kind=LineKind.ADJUSTMENT,
                    unit=unit,
                    aggregation=kind,
                    quantity=carried.value,
                    event_count=carried.count,
                )
            )
    return lines


def _level_line(state: StateRow, metric: str, unit: str, count: int) -> StatementLine:
    """A time_weighted meter's line: its integral over the whole period, with the level and the average."""
    start, end = (datetime.fromisoformat(text) for text in state.data["period"])
    found = figures_at(state.levels(metric), start, end, end, state.latest_point(metric))
    return StatementLine(
        metric=metric,
        kind=LineKind.USAGE,
        unit=unit,
        aggregation=Aggregation.TIME_WEIGHTED.value,
        quantity=found.total,
        event_count=count,
        level=found.level,
        average=found.average,
    )
