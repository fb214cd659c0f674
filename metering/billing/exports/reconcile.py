"""Reconciling a tenant's period with each target: per metric, our figure as the target should hold it, what was
sent and acknowledged, and the difference, with the reason whenever it is not zero.

Our figure is the period's usage (for the Marketplace, what is above the plan's included units); what the target
holds is the sum of what it acknowledged, as its answers said (a duplicate's answer says what it kept). A
difference has a reason: intents waiting for an answer, hours not settled or not sent yet, a part of a figure the
target cannot hold exactly (Stripe's whole numbers and 15 digits), a fall the Marketplace cannot take, an hour
too old for the target, or a refusal with the target's own message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, Field

from metering.billing.exports.port import Target
from metering.billing.exports.rows import ExportRows, IntentStatus, Stored, partition_of
from metering.core import decimals
from metering.core.clock import Clock
from metering.core.decimals import DecimalText
from metering.core.meters import MeterCatalog
from metering.core.periods import BillingPeriod
from metering.core.prices import PricingAt
from metering.ledger.cells import Cell
from metering.ledger.reader import UsageReader
from metering.tenants.records import TenantRecord


class MetricReconciliation(BaseModel):
    metric: str
    target_metric: str = Field(description="The target's name of the meter: Stripe's event_name, a dimension")
    ours: DecimalText = Field(description="Our figure as the target should hold it")
    sent: DecimalText = Field(description="What every intent sent so far adds up to")
    acknowledged: DecimalText = Field(description="What the target holds, as its answers said")
    pending: DecimalText = Field(description="Sent (or to be sent) and not answered yet")
    difference: DecimalText = Field(description="ours - acknowledged")
    reasons: list[str] = Field(description="Why the difference is not zero (empty when it is)")


class TargetReconciliation(BaseModel):
    target: str
    linked: bool
    link: dict[str, str] | None
    metrics: list[MetricReconciliation]


class ExportReconciliation(BaseModel):
    tenant_id: str
    period_start: datetime
    period_end: datetime
    targets: list[TargetReconciliation]


class Reconciler:
    def __init__(
        self,
        rows: ExportRows,
        reader: UsageReader,
        catalog: MeterCatalog,
        targets: Sequence[Target],
        *,
        pricing: PricingAt,
        clock: Clock,
    ) -> None:
        self.rows = rows
        self.reader = reader
        self.catalog = catalog
        self.targets = list(targets)
        self.pricing = pricing
        self.clock = clock

    def reconcile(self, tenant_id: str, period: BillingPeriod, record: TenantRecord) -> ExportReconciliation:
        return ExportReconciliation(
            tenant_id=tenant_id,
            period_start=period.start,
            period_end=period.end,
            targets=[self._target(target, tenant_id, period, record) for target in self.targets],
        )

    def _target(self, target: Target, tenant: str, period: BillingPeriod, record: TenantRecord) -> TargetReconciliation:
        link = target.link(record)
        partition = partition_of(target.name, tenant, period)
        by_meter: dict[str, list[Stored]] = {}
        for stored in self.rows.every(partition):
            by_meter.setdefault(stored.intent.meter, []).append(stored)
        changes = self.reader.changes(tenant, period, None)
        meters = [m for m in self.catalog.meters.values() if target.metric_name(m) is not None]
        hours = self.reader.hour_cells(tenant, period, None) if any(target.hourly(m) for m in meters) else {}
        now = self.clock()
        # One read of the tenant's plan for every meter.
        prices = self.pricing(tenant, period.end).prices
        metrics = []
        for meter in meters:
            name = target.metric_name(meter)
            assert name is not None
            cell = changes.cells.get(meter.name)
            figure = cell.value if cell is not None else decimals.ZERO
            price = prices.get(meter.name)
            ours = target.billable(figure, price.included if price is not None else decimals.ZERO)
            intents = by_meter.get(meter.name, [])
            sent = _sum(s.intent.value for s in intents if s.intent.first_sent is not None)
            acknowledged = _sum(
                s.intent.accepted
                for s in intents
                if s.intent.status is IntentStatus.ACKED and s.intent.accepted is not None
            )
            pending = _sum(s.intent.value for s in intents if s.intent.status.is_open)
            difference = decimals.subtract(ours, acknowledged)
            reasons = (
                self._reasons(
                    target,
                    metric=meter.name,
                    period=period,
                    hours=hours.get(meter.name, {}),
                    hourly=target.hourly(meter),
                    ours=ours,
                    intents=intents,
                    difference=difference,
                    now=now,
                    linked=link is not None,
                )
                if difference or pending
                else []
            )
            metrics.append(
                MetricReconciliation(
                    metric=meter.name,
                    target_metric=name,
                    ours=ours,
                    sent=sent,
                    acknowledged=acknowledged,
                    pending=pending,
                    difference=difference,
                    reasons=reasons,
                )
            )
        return TargetReconciliation(target=target.name, linked=link is not None, link=link, metrics=metrics)

    def _reasons(
        self,
        target: Target,
        *,
        metric: str,
        period: BillingPeriod,
        hours: Mapping[str, Cell],
        hourly: bool,
        ours: Decimal,
        intents: Sequence[Stored],
        difference: Decimal,
        now: datetime,
        linked: bool,
    ) -> list[str]:
        reasons: list[str] = []
        label = target.label
        if not linked:
            # Never "not sent yet": nothing new goes to a target the tenant is not linked to.
            reasons.append(
                f"the tenant is not linked to {label} in its settings: nothing new is exported there until it is"
            )
        open_ = [s.intent for s in intents if s.intent.status.is_open]
        if open_:
            errors = sorted({i.last_error for i in open_ if i.last_error})
            reasons.append(
                f"{len(open_)} intent(s) sent to {label} and not answered yet"
                + (f" (last answer: {'; '.join(errors)})" if errors else "")
            )
        for intent in intents:
            current = intent.intent
            if current.status is IntentStatus.REFUSED and intent is _last_of(intents, current.slot):
                reasons.append(
                    f"{label} refused {decimals.to_str(current.value)} ({current.slot}): {current.last_error}"
                )
        cut = decimals.ZERO
        too_old = decimals.ZERO
        if hourly:
            for hour, cell in sorted(hours.items()):
                held = target.exact(cell.value)
                cut = decimals.add(cut, decimals.subtract(cell.value, held))
                if target.stamp_hour(period, hour, now) is None and not any(s.intent.slot == hour for s in intents):
                    too_old = decimals.add(too_old, held)
        else:
            cut = decimals.subtract(ours, target.exact(ours))
        if cut:
            reasons.append(
                f"{decimals.to_str(cut)} of our figure cannot be held exactly by {label} (whole numbers unless "
                "METERING_STRIPE_DECIMALS, at most 15 significant digits): it was not sent"
            )
        if too_old:
            reasons.append(f"{decimals.to_str(too_old)} is in hours too old for {label} to take (35 days)")
        if not target.takes_decreases and difference < 0:
            reasons.append(
                f"our figure fell by {decimals.to_str(-difference)} after it was sent (a cancel, or a lower plan "
                f"allowance), and {label} takes no decreases: credit it there by hand"
            )
        if not reasons:
            reasons.append(
                "not sent yet: an hour is exported once its end plus EXPORT_SETTLE_MINUTES is behind what the hub "
                "applied, by the next run (the export timer, or POST /api/manage/exports/run)"
            )
        return reasons


def _last_of(intents: Sequence[Stored], slot: str) -> Stored | None:
    found = [s for s in intents if s.intent.slot == slot]
    return found[-1] if found else None


def _sum(numbers: Iterable[Decimal]) -> Decimal:
    total = decimals.ZERO
    for number in numbers:
        total = decimals.add(total, number)
    return total
