"""Every tenant's standing in its open period, for the operator's console: each meter's total and where it stands
against the tenant's limits, read through the usage reader (which knows how a period's rows are laid out), from
the open-period index, so tenants that sent nothing this period are not listed (they have nothing to show)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from metering.core import decimals
from metering.core.limits import Limits
from metering.core.meters import MeterCatalog
from metering.ledger import control
from metering.ledger.reader import UsageReader
from metering.stores import Store


@dataclass(frozen=True, slots=True)
class MeterStanding:
    metric: str
    total: Decimal
    event_count: int
    soft: Decimal | None
    hard: Decimal | None

    @property
    def state(self) -> str:
        """ok, soft (over the soft limit), hard (at or over the hard one), or unlimited."""
        if self.soft is None and self.hard is None:
            return "unlimited"
        if self.hard is not None and self.total >= self.hard:
            return "hard"
        if self.soft is not None and self.total > self.soft:
            return "soft"
        return "ok"

    def to_json(self) -> dict[str, object]:
        return {
            "metric": self.metric,
            "total": decimals.to_str(self.total),
            "event_count": self.event_count,
            "soft": None if self.soft is None else decimals.to_str(self.soft),
            "hard": None if self.hard is None else decimals.to_str(self.hard),
            "state": self.state,
        }


_ORDER = {"hard": 0, "soft": 1, "ok": 2, "unlimited": 3}


@dataclass(frozen=True, slots=True)
class TenantStanding:
    tenant_id: str
    period_start: datetime
    period_end: datetime
    meters: list[MeterStanding]

    @property
    def state(self) -> str:
        """The worst of its meters' states."""
        return min((m.state for m in self.meters), key=_ORDER.__getitem__, default="unlimited")

    def to_json(self) -> dict[str, object]:
        return {
            "tenant_id": self.tenant_id,
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "state": self.state,
            "meters": [m.to_json() for m in self.meters],
        }


class TenantOverview:
    def __init__(
        self,
        store: Store,
        catalog: MeterCatalog,
        reader: UsageReader,
        limits: Callable[[str, str], Limits],
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.reader = reader
        self.limits = limits
        self.clock = clock

    def tenants(self, search: str = "", limit: int = 10_000) -> list[TenantStanding]:
        now = self.clock()
        entries = [
            entry
            for entry in control.indexed(self.store.control)[:limit]
            if entry.period.start <= now < entry.period.end and search.lower() in entry.tenant_id.lower()
        ]
        standings = []
        for entry in entries:
            meters = []
            for metric in sorted(self.catalog.meters):
                usage = self.reader.for_period(entry.tenant_id, metric, entry.period)
                if usage.cell is None:
                    continue
                bounds = self.limits(entry.tenant_id, metric)
                # A time_weighted meter stands by its level, which is what its limits bound.
                meters.append(MeterStanding(metric, usage.limited, usage.event_count, bounds.soft, bounds.hard))
            standings.append(TenantStanding(entry.tenant_id, entry.period.start, entry.period.end, meters))
        return standings
