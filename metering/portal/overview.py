"""What the portal page starts from: the tenant's billing period (and the two before it) in its own calendar, the
meters it used this period with their figures, and whether its plan prices them.

Read from the same services as the usage routes (the usage reader, the tenant directory, the plan catalog's
prices), so the figures the page shows are the ones `GET /api/usage/...` gives.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta

from pydantic import BaseModel

from metering.core.clock import Clock
from metering.core.decimals import DecimalText
from metering.core.meters import Aggregation
from metering.core.periods import BillingPeriod, History
from metering.core.prices import Pricing
from metering.ledger.reader import UsageReader

# The periods before the current one whose daily usage the page can chart.
PREVIOUS_PERIODS = 2
_INSTANT = timedelta(microseconds=1)


class PortalPeriod(BaseModel):
    """A billing period, with its first and last days in the tenant's calendar (what history ranges take)."""

    start: datetime
    end: datetime
    first_day: date
    last_day: date


class PortalMeter(BaseModel):
    metric: str
    description: str
    unit: str
    aggregation: Aggregation
    group_by: list[str]
    total: DecimalText
    event_count: int
    # Whether the tenant's plan prices this meter (else it costs nothing, and the page shows no amount).
    priced: bool


class PortalOverview(BaseModel):
    """GET /api/portal/{tenant_id}/data/overview."""

    tenant_id: str
    as_of: datetime
    timezone: str
    today: date
    period: PortalPeriod
    previous_periods: list[PortalPeriod]
    plan: str
    currency: str
    # Whether the plan charges anything (a base fee or a price): on a plan that does not, no amount is shown.
    priced: bool
    meters: list[PortalMeter]


class PortalOverviews:
    def __init__(
        self,
        reader: UsageReader,
        history_of: Callable[[str], History],
        pricing_at: Callable[[str, datetime], Pricing],
        clock: Clock,
    ) -> None:
        self.reader = reader
        self.history_of = history_of
        self.pricing_at = pricing_at
        self.clock = clock

    def overview(self, tenant_id: str) -> PortalOverview:
        now = self.clock()
        schedule = self.reader.schedule
        current = schedule.period_at(tenant_id, now)
        previous: list[BillingPeriod] = []
        for _ in range(PREVIOUS_PERIODS):
            previous.append(schedule.period_at(tenant_id, (previous[-1] if previous else current).start - _INSTANT))
        used = self.reader.used_in(tenant_id, current)
        pricing = self.pricing_at(tenant_id, current.end)
        return PortalOverview(
            tenant_id=tenant_id,
            as_of=now,
            timezone=_timezone(self.history_of(tenant_id), now),
            today=schedule.day_of(tenant_id, now),
            period=self._period(tenant_id, current),
            previous_periods=[self._period(tenant_id, period) for period in previous],
            plan=pricing.plan,
            currency=pricing.currency,
            priced=bool(pricing.prices) or bool(pricing.base_fee),
            meters=[
                PortalMeter(
                    metric=usage.metric,
                    description=usage.meter.description,
                    unit=usage.unit,
                    aggregation=usage.aggregation,
                    group_by=list(usage.meter.group_by),
                    total=usage.total,
                    event_count=usage.event_count,
                    priced=usage.metric in pricing.prices,
                )
                for usage in used
            ],
        )

    def _period(self, tenant_id: str, period: BillingPeriod) -> PortalPeriod:
        schedule = self.reader.schedule
        return PortalPeriod(
            start=period.start,
            end=period.end,
            first_day=schedule.day_of(tenant_id, period.start),
            last_day=schedule.day_of(tenant_id, period.end - _INSTANT),
        )


def _timezone(history: History, now: datetime) -> str:
    """The time zone of the terms in force now: the one the tenant's days (and so the page's dates) follow."""
    in_force = [terms for terms in history if terms.effective_from is None or terms.effective_from <= now]
    return in_force[-1].timezone
