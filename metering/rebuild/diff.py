"""Comparing live totals with rebuilt ones, per tenant, meter and period (the period state rows of both stores)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from metering.core import decimals
from metering.core.meters import Aggregation, MeterCatalog
from metering.core.periods import BillingPeriod
from metering.ledger import control
from metering.ledger.cells import Cell, combine
from metering.ledger.keys import SHARDS, STATE_ROW, partition_key
from metering.ledger.rows import StateRow
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
) -> list[PeriodTotal]:
    totals: list[PeriodTotal] = []
    for tenant, period in periods:
        ours = _states(live, tenant, period)
        rebuilt = _states(scratch, tenant, period)
        whole = start <= period.start - max_future and all(_settled_by(state, end) for state in ours)
        metrics = {metric for state in (*ours, *rebuilt) for metric in state.metrics}
        for metric in sorted(metrics):
            meter = catalog.get(metric)
            totals.append(
                PeriodTotal(
                    tenant_id=tenant,
                    metric=metric,
                    period=period,
                    ours=_total(ours, metric, meter.aggregation if meter else None),
                    rebuilt=_total(rebuilt, metric, meter.aggregation if meter else None),
                    whole=whole,
                )
            )
    return totals


def _states(store: Store, tenant: str, period: BillingPeriod) -> list[StateRow]:
    states = []
    for shard in SHARDS:
        row = store.usage.read(partition_key(tenant, period, shard), [STATE_ROW]).get(STATE_ROW)
        if row is not None:
            states.append(StateRow(row.data))
    return states


def _total(states: list[StateRow], metric: str, kind: Aggregation | None) -> Cell | None:
    cells = [cell for state in states if (cell := state.total(metric)) is not None]
    if not cells:
        return None
    if kind is None or len(cells) == 1:
        return cells[0]
    return combine(kind, cells)


def _settled_by(state: StateRow, end: datetime) -> bool:
    """Whether every change the live period took was made before `end` (so its events were enqueued before)."""
    changed = state.closed_at if state.is_closed else state.updated
    return changed is None or changed <= end
