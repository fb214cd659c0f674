"""Threshold alerts: when a tenant's usage of a meter reaches a percentage of its hard limit in a period.

Checked after every batch against the totals it leaves (also for a batch of duplicates only), so an alert a
crash prevented is raised by the next batch of that tenant. Each (tenant, metric, period, threshold) is
recorded once in the outbox (notifications/outbox.py): redeliveries, usage that drops and crosses again, and racing
instances meet the record and send nothing new.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from metering.core import decimals
from metering.core.clock import format_timestamp
from metering.core.limits import Limits
from metering.core.periods import BillingPeriod
from metering.ledger.cells import Cell
from metering.notifications.outbox import Outbox


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
                body = {
                    "type": "quota.threshold_crossed",
                    "tenant_id": tenant_id,
                    "metric": metric,
                    "period_start": period.start.isoformat(),
                    "period_end": period.end.isoformat(),
                    "threshold_percent": decimals.to_str(threshold),
                    "hard_limit": decimals.to_str(hard),
                    "usage": decimals.to_str(usage),
                    "detected": format_timestamp(self.clock()),
                }
                new += self.outbox.add(message_id, body, once=True)
                if len(self._raised) > 100_000:
                    self._raised.clear()
                self._raised.add(message_id)
        return new
