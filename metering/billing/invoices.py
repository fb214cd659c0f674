"""The invoice preview: a tenant's open period rated as if it closed now, and a forecast to its end.

The preview reads the period's state rows (one per shard, combined) and rates them exactly as the closer will
(the same lines, the same plan lookup, the same rating), so once nothing more arrives it equals the statement the
close writes. The
forecast projects each kind to the period's end (API.md): sum and count linearly, levels and distinct counts
as they are; it is null during the period's first 24 hours, when one busy hour would be projected over a
month. Adjustment lines (late events carried in) are one-off and stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from pydantic import BaseModel

from metering.billing.rating import rate
from metering.billing.statements import LineKind, StatementLine, metered_lines
from metering.core.meters import MeterCatalog
from metering.core.money import AmountText, shown
from metering.core.periods import BillingPeriod, PeriodSchedule
from metering.core.prices import PricingAt
from metering.ledger.shards import period_state, shard_states
from metering.stores import Store

FORECAST_AFTER = timedelta(hours=24)
# Kinds that grow with time: projected linearly. (A time-weighted meter's total will project as total + level x
# the hours left; levels and distinct counts stay as they are.)
LINEAR = frozenset({"sum", "count"})


class Forecast(BaseModel):
    lines: list[StatementLine]
    subtotal: AmountText


class InvoicePreview(BaseModel):
    """GET /api/invoices/{tenant_id}/preview: the open period rated as if it closed at `as_of`."""

    tenant_id: str
    period_start: datetime
    period_end: datetime
    as_of: datetime
    currency: str
    plan: str
    plan_version: str
    lines: list[StatementLine]
    subtotal: AmountText
    forecast: Forecast | None


def projected(line: StatementLine, period: BillingPeriod, now: datetime) -> Decimal:
    """A line's quantity at the period's end if usage goes on as it went so far. A quotient: rounded half even
    to 12 places, as every figure derived by a division."""
    if line.kind is not LineKind.USAGE or line.aggregation not in LINEAR:
        return line.quantity
    elapsed = (now - period.start) // timedelta(microseconds=1)
    length = (period.end - period.start) // timedelta(microseconds=1)
    return shown(Fraction(line.quantity) * length / elapsed)


class Invoices:
    def __init__(
        self,
        store: Store,
        catalog: MeterCatalog,
        schedule: PeriodSchedule,
        pricing: PricingAt,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.schedule = schedule
        self.pricing = pricing
        self.clock = clock

    def preview(self, tenant_id: str) -> InvoicePreview:
        now = self.clock()
        period = self.schedule.period_at(tenant_id, now)
        states = shard_states(self.store.usage, tenant_id, period, self.schedule.shards(tenant_id, period))
        lines = metered_lines(period_state(states, self.catalog), self.catalog)
        # The plan in force at the period's end, as the closer asks: the plan now, unless it changes again.
        pricing = self.pricing(tenant_id, period.end)
        rated = rate(pricing, lines)
        forecast = None
        if now - period.start >= FORECAST_AFTER:
            ahead = rate(
                pricing, [line.model_copy(update={"quantity": projected(line, period, now)}) for line in lines]
            )
            forecast = Forecast(lines=ahead.lines, subtotal=ahead.subtotal)
        return InvoicePreview(
            tenant_id=tenant_id,
            period_start=period.start,
            period_end=period.end,
            as_of=now,
            currency=pricing.currency,
            plan=pricing.plan,
            plan_version=pricing.version,
            lines=rated.lines,
            subtotal=rated.subtotal,
            forecast=forecast,
        )
