"""Late events: events of a billing period that is already closed. Never dropped, never counted twice.

Each is recorded in the late-events table, keyed by tenant and its dedupe key, so a replayed late event finds
its record. Under the `review` policy it waits there for an operator. Under `adjust`, an event of a sum or
count meter is also counted in the tenant's period open when it was first recorded (the record keeps which),
as an adjustment line of that period's statement; it keeps its dedupe marker key, so it is carried once. Late
events of other meters stay for review: a level or a distinct count cannot be added to another period.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel

from metering.billing.journal import Journal, JournalEntry, JournalKind
from metering.core.clock import format_timestamp, hour_key
from metering.core.periods import PeriodSchedule
from metering.ledger.batch import BatchPlan, PlannedEvent, Rejected, plan_adjustment
from metering.ledger.keys import EVERYTHING, late_key
from metering.ledger.ledger import Ledger
from metering.settings import LateEventPolicy
from metering.stores import CommitConflict, Create, RowTable


class LateEvent(BaseModel):
    event: dict[str, Any]
    reason: str
    period_start: date  # the key of the closed period the event belongs to
    detected: datetime
    carried_to: date | None  # the period it was counted in (policy adjust), if any
    # An operator's decision (billing/late_actions.py): waiting when absent.
    status: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    applied_to: date | None = None  # the open period it was counted in
    discard_reason: str | None = None


@dataclass(slots=True)
class LateReport:
    recorded: int = 0  # first seen now
    carried: int = 0  # counted in a later period by this call
    rejected: list[Rejected] = field(default_factory=list)  # carries the store refused: the caller dead-letters them


def carry_entry(planned: PlannedEvent, record: LateEvent, day: str, hour: str) -> JournalEntry:
    """A carry's journal entry, timed by its late-event record, so every redelivery writes the same one."""
    event = planned.event
    assert record.carried_to is not None
    return JournalEntry(
        kind=JournalKind.LATE_CARRY,
        tenant_id=event.tenant_id,
        time=record.detected,
        subject=event.dedupe_key,
        details={
            "event": event.to_json_dict(),
            "period_start": record.period_start.isoformat(),
            "carried_to": record.carried_to.isoformat(),
            "day": day,
            "hour": hour,
        },
    )


class LateEvents:
    def __init__(
        self,
        table: RowTable,
        ledger: Ledger,
        schedule: PeriodSchedule,
        policy: LateEventPolicy,
        clock: Callable[[], datetime],
        *,
        journal: Journal,
    ) -> None:
        self.table = table
        self.ledger = ledger
        self.schedule = schedule
        self.policy = policy
        self.clock = clock
        self.journal = journal

    def handle(self, late: Sequence[PlannedEvent]) -> LateReport:
        report = LateReport()
        now = self.clock()
        carry = BatchPlan()
        entries: list[JournalEntry] = []
        for planned in late:
            record, new = self._record(planned, now)
            report.recorded += new
            if record.carried_to is None:
                continue
            period = self.schedule.period_starting(planned.event.tenant_id, record.carried_to)
            if period is None:  # the tenant's terms changed since: the record says where it went
                continue
            tenant = planned.event.tenant_id
            day = self.schedule.day_of(tenant, max(now, period.start)).isoformat()
            hour = hour_key(max(now, period.start))
            adjusted = plan_adjustment(planned, period, day, hour, self.schedule.shards(tenant, period))
            entries.append(carry_entry(planned, record, day, hour))
            carry.partitions.setdefault(adjusted.partition, []).append(adjusted)
        if carry.partitions:
            # Journaled before the ledger counts them; until they are counted, every redelivery carries them again.
            self.journal.record_all(entries)
            result = self.ledger.apply_plan(carry, {})
            report.carried = result.applied
            report.rejected = result.rejected
        return report

    def _record(self, planned: PlannedEvent, now: datetime) -> tuple[LateEvent, bool]:
        event = planned.event
        key = late_key(event.tenant_id, event.dedupe_key)
        carried_to = None
        if self.policy is LateEventPolicy.ADJUST and planned.meter.aggregation.is_additive:
            carried_to = self.schedule.period_at(event.tenant_id, now).key
        data = {
            "event": event.to_json_dict(),
            "reason": f"billing period starting {planned.period.key} is closed",
            "period_start": planned.period.key,
            "detected": format_timestamp(now),
            "carried_to": carried_to,
        }
        try:
            self.table.commit(event.tenant_id, [Create(key, data)])
        except CommitConflict:
            return LateEvent.model_validate(self.table.read(event.tenant_id, [key])[key].data), False
        return LateEvent.model_validate(data), True

    def list(self, tenant_id: str, limit: int = 1000) -> list[LateEvent]:
        rows = self.table.range(tenant_id, *EVERYTHING, limit=limit)
        items = [LateEvent.model_validate(row.data) for row in rows]
        return sorted(items, key=lambda item: item.detected)
