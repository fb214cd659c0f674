"""What an operator checks first: is every hub partition being applied, and how much waits for a person.

Per hub partition the backlog reads: the newest position applied (its sequence number, and when the aggregator
applied it) and the lag, the age of the oldest event not applied yet (0 when none waits; how each transport
bounds it is in its `lag`). Then the records that wait for an operator: dead letters not re-driven yet, late
events neither carried, applied nor discarded, conflicts, and webhook deliveries given up on (not re-driven).
Counting scans the tables (the keys alone for conflicts), so each count stops at `COUNT_LIMIT` rows read.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel

from metering.billing import late_actions
from metering.ingest import deadletters
from metering.ledger.control import HubProgress
from metering.notifications.webhooks.rows import failed_count
from metering.stores import Store
from metering.transport import Backlog

COUNT_LIMIT = 100_000


class PartitionHealth(BaseModel):
    partition: str
    applied_sequence: int | None
    applied_at: datetime | None
    lag_seconds: float


class Health(BaseModel):
    partitions: list[PartitionHealth]
    dead_letters: int
    late_events: int
    conflicts: int
    webhooks_failed: int


class HealthCheck:
    def __init__(self, store: Store, backlog: Backlog, progress: HubProgress, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.backlog = backlog
        self.progress = progress
        self.clock = clock

    def report(self) -> Health:
        now = self.clock()
        recorded = self.progress.recorded()
        positions = {name: position for name, (position, _) in recorded.items()}
        lags = self.backlog.lag(positions, now)
        partitions = []
        for name in sorted(lags):
            position, applied_at = recorded.get(name, (None, None))
            partitions.append(
                PartitionHealth(
                    partition=name,
                    applied_sequence=position.sequence if position is not None else None,
                    applied_at=applied_at,
                    lag_seconds=round(lags[name], 3),
                )
            )
        return Health(
            partitions=partitions,
            dead_letters=self.store.dead_letters.count_where(deadletters.waits, COUNT_LIMIT),
            late_events=self.store.late_events.count_where(late_actions.waits, COUNT_LIMIT),
            conflicts=self.store.conflicts.count(COUNT_LIMIT),
            webhooks_failed=failed_count(self.store.control, COUNT_LIMIT),
        )
