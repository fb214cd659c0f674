"""Statements: the invoice-ready usage of one tenant for one closed period, and the lines a period's state row
gives (the closer and the invoice preview read them the same way, so a preview is what the close will write).

A statement rated at close carries `currency`, `plan`, `plan_version` and `subtotal`, and each line its
`amount` (and, for tiered prices, the `tiers` applied); the base fee is a line of kind `fee`. Statements
written before prices existed have none of these: they stay valid and read as unrated (null amounts).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel

from metering.core import decimals
from metering.core.decimals import DecimalText
from metering.core.meters import MeterCatalog
from metering.core.money import AmountText
from metering.ledger.cells import Cell
from metering.ledger.rows import StateRow


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
    for metric, total in sorted(state.totals().items()):
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
        if usage.count:
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
