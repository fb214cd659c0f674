"""Comparing live totals with rebuilt ones, per tenant, meter and period (the period state rows of both stores, each
period's shards combined by kind)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from metering.core import decimals, integrals
from metering.core.meters import MeterCatalog
from metering.core.periods import BillingPeriod
from metering.ledger import control
from metering.ledger.cells import Cell
from metering.ledger.rows import StateRow
from metering.ledger.shards import period_state, shard_states
from metering.stores import Store


@dataclass(frozen=True, slots=True)
class PeriodTotal:
    tenant_id: str
    metric: str
    period: BillingPeriod
    ours: Cell | None
    rebuilt: Cell | None
    whole: bool  # the window holds every event the live period counted

    @property
    def difference(self) -> Decimal:
        """Ours minus rebuilt: positive when we count more than the archive and journal prove."""
        ours = self.ours.value if self.ours else decimals.ZERO
        rebuilt = self.rebuilt.value if self.rebuilt else decimals.ZERO
        return decimals.subtract(ours, rebuilt)

    @property
    def differs(self) -> bool:
        ours = (self.ours.value, self.ours.count) if self.ours else (decimals.ZERO, 0)
        rebuilt = (self.rebuilt.value, self.rebuilt.count) if self.rebuilt else (decimals.ZERO, 0)
        return ours != rebuilt


def periods_to_compare(
    live: Store,
    scratch: Store,
    *,
    start: datetime,
    end: datetime,
    tenants: frozenset[str] | None,
) -> list[tuple[str, BillingPeriod]]:
    """The periods the rebuild wrote, and the live periods lying inside the window (a live period the rebuild
    never wrote is then a difference too)."""
    chosen: dict[tuple[str, str], tuple[str, BillingPeriod]] = {}
    for entry in control.indexed(scratch.control):
        chosen[(entry.tenant_id, entry.period.key)] = (entry.tenant_id, entry.period)
    for entry in control.indexed(live.control):
        if start <= entry.period.start and entry.period.end <= end:
            chosen.setdefault((entry.tenant_id, entry.period.key), (entry.tenant_id, entry.period))
    picked = [item for item in chosen.values() if tenants is None or item[0] in tenants]
    return sorted(picked, key=lambda item: (item[0], item[1].start))


def compare(
    live: Store,
    scratch: Store,
    periods: Iterable[tuple[str, BillingPeriod]],
    catalog: MeterCatalog,
    *,
    start: datetime,
    end: datetime,
    max_future: timedelta,
    shards: Callable[[str, BillingPeriod], int] = lambda _tenant, _period: 1,
) -> list[PeriodTotal]:
    totals: list[PeriodTotal] = []
    for tenant, period in periods:
        count = shards(tenant, period)
        found = shard_states(live.usage, tenant, period, count)
        live_rows = [StateRow(row.data) for row in found if row is not None]
        ours = period_state(found, catalog)
        rebuilt = period_state(shard_states(scratch.usage, tenant, period, count), catalog)
        whole = start <= period.start - max_future and all(_settled_by(state, end) for state in live_rows)
        metrics = {metric for state in (ours, rebuilt) if state is not None for metric in state.metrics}
        for metric in sorted(metrics):
            totals.append(
                PeriodTotal(
                    tenant_id=tenant,
                    metric=metric,
                    period=period,
                    ours=_total(ours, metric),
                    rebuilt=_total(rebuilt, metric),
                    whole=whole,
                )
            )
    return totals


def _total(state: StateRow | None, metric: str) -> Cell | None:
    """The metric's period figure: its total, or for a time_weighted meter its integral to the period end in
    unit-hours (its total cell only counts events)."""
    if state is None:
        return None
    cell = state.total(metric)
    if metric not in state.data.get("tw", {}):
        return cell
    end = datetime.fromisoformat(state.data["period"][1])
    hours = integrals.unit_hours(state.levels(metric).at(integrals.micros(end)))
    return Cell(hours, cell.count if cell is not None else 0)


def _settled_by(state: StateRow, end: datetime) -> bool:
    """Whether every change the live period took was made before `end` (so its events were enqueued before)."""
    changed = state.closed_at if state.is_closed else state.updated
    return changed is None or changed <= end
