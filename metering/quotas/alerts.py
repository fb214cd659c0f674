"""Threshold alerts: when a tenant's usage of a meter reaches a percentage of its hard limit in a period.

Checked after every batch against the totals it leaves (also for a batch of duplicates only), so an alert a
crash prevented is raised by the next batch of that tenant. A period of several shards is checked against its
shards' totals combined (ingest/consumer.py), never one shard's. Each (tenant, metric, period, threshold) is
recorded once in the outbox (notifications/outbox.py): redeliveries, usage that drops and crosses again, and racing
instances meet the record and send nothing new.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import Field

from metering.core import decimals
from metering.core.limits import Limits
from metering.core.periods import BillingPeriod
from metering.ledger.cells import Cell
from metering.notifications.messages import DecimalText, DetectedInstant, Notification, PeriodInstant
from metering.notifications.outbox import Outbox


class ThresholdCrossedNotification(Notification):
    """`quota.threshold_crossed`: a tenant's usage of a meter reached a percentage of its hard limit in a
    period. Sent once per tenant, metric, period and threshold (at least once: dedupe on `id`,
    `quota.threshold_crossed:<tenant>:<metric>:<period start date>:<threshold>`)."""

    type: Literal["quota.threshold_crossed"] = "quota.threshold_crossed"
    tenant_id: str
    metric: str
    period_start: PeriodInstant
    period_end: PeriodInstant
    threshold_percent: DecimalText = Field(description="The threshold reached, a percentage of the hard limit")
    hard_limit: DecimalText
    usage: DecimalText = Field(description="The usage of the period when the crossing was detected")
    detected: DetectedInstant


def crossed(usage: Decimal, hard: Decimal, thresholds: Sequence[Decimal]) -> list[Decimal]:
    """The thresholds (percentages of the hard limit) that `usage` has reached. Usage of zero or less reaches
    none, even against a limit of zero: an alert says a tenant is using up its limit, not that it has one."""
    if usage <= 0:
        return []
    return [threshold for threshold in thresholds if usage >= decimals.percent_of(hard, threshold)]


def alert_id(tenant_id: str, metric: str, period: BillingPeriod, threshold: Decimal) -> str:
    return f"quota.threshold_crossed:{tenant_id}:{metric}:{period.key}:{decimals.to_str(threshold)}"


class AlertWatch:
    def __init__(
        self,
        limits_for: Callable[[str, str], Limits],
        thresholds: Sequence[Decimal],
        outbox: Outbox,
        clock: Callable[[], datetime],
    ) -> None:
        self.limits_for = limits_for
        self.thresholds = tuple(thresholds)
        self.outbox = outbox
        self.clock = clock
        self._raised: set[str] = set()

    def limited(self, tenant_id: str, metrics: Iterable[str]) -> bool:
        """Whether any of the tenant's metrics has a hard limit (else no total of theirs can raise an alert)."""
        return any(self.limits_for(tenant_id, metric).hard is not None for metric in metrics)

    def check(self, tenant_id: str, period: BillingPeriod, totals: Mapping[str, Cell]) -> int:
        """Record the alerts `totals` call for; returns how many were new."""
        new = 0
        for metric, total in totals.items():
            hard = self.limits_for(tenant_id, metric).hard
            if hard is None:
                continue
            usage = total.value
            for threshold in crossed(usage, hard, self.thresholds):
                message_id = alert_id(tenant_id, metric, period, threshold)
                if message_id in self._raised:
                    continue
                notice = ThresholdCrossedNotification(
                    id=message_id,
                    tenant_id=tenant_id,
                    metric=metric,
                    period_start=period.start,
                    period_end=period.end,
                    threshold_percent=threshold,
                    hard_limit=hard,
                    usage=usage,
                    detected=self.clock(),
                )
                new += self.outbox.add(message_id, notice.message(), once=True)
                if len(self._raised) > 100_000:
                    self._raised.clear()
                self._raised.add(message_id)
        return new
