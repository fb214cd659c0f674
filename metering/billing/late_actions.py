"""What an operator does with a late event left for review: count it in the open period, or discard it.

Both are idempotent and journaled. A decision is claimed on the late-event record first (under its ETag), so an
apply and a discard can never both win, and a second click finds the decision and repeats only what may be
missing: the ledger counts the adjustment under the event's own marker (once, however often it is asked), and the
journal entry is timed by the claim, so writing it again writes the same row. The record is marked done last: a
crash anywhere before leaves a claim that the next click completes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from metering.billing.journal import Journal, JournalEntry, JournalKind
from metering.billing.late import LateEvent
from metering.core.clock import format_timestamp, hour_key
from metering.core.events import parse_event
from metering.core.periods import BillingPeriod, PeriodSchedule
from metering.ledger.batch import BatchPlan, PlannedEvent, SourcedEvent, plan_adjustment
from metering.ledger.ledger import ApplyResult, Ledger
from metering.ledger.reader import UsageReader
from metering.stores import CommitConflict, Replace, Row, RowTable


class LateStatus(StrEnum):
    WAITING = "waiting"  # recorded, left for review
    CARRIED = "carried"  # counted in a later period by the `adjust` policy
    APPLYING = "applying"  # an apply was claimed and is being completed
    APPLIED = "applied"  # counted in the open period by an operator
    DISCARDED = "discarded"  # not counted, by an operator, with a reason


def status_of(record: LateEvent) -> LateStatus:
    if record.status is not None:
        return LateStatus(record.status)
    return LateStatus.CARRIED if record.carried_to is not None else LateStatus.WAITING


def waits(row: Row) -> bool:
    """A late event waits for an operator while it is neither carried, applied nor discarded (an apply begun
    and not completed still waits: applying it again completes it). A record that cannot be read waits too: a
    person has to look at it."""
    try:
        return status_of(LateEvent.model_validate(row.data)) in {LateStatus.WAITING, LateStatus.APPLYING}
    except ValueError:  # pydantic's ValidationError, or a status no version wrote
        return True


class LateActionRefused(Exception):
    """The action cannot be taken (HTTP 409): the record says why; nothing was written."""


class LateEventNotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class LateActionResult:
    id: str
    record: LateEvent
    entry: JournalEntry
    repeated: bool  # the decision was taken before: this call only completed it


class LateActions:
    def __init__(
        self,
        table: RowTable,
        *,
        ledger: Ledger,
        schedule: PeriodSchedule,
        reader: UsageReader,
        journal: Journal,
        clock: Callable[[], datetime],
        after_apply: Callable[[ApplyResult], None] | None = None,
    ) -> None:
        self.after_apply = after_apply  # threshold alerts, as after the aggregator's own applies
        self.table = table
        self.ledger = ledger
        self.schedule = schedule
        self.reader = reader
        self.journal = journal
        self.clock = clock

    def apply(self, tenant_id: str, late_id: str, actor: str) -> LateActionResult:
        row, record = self._read(tenant_id, late_id)
        status = status_of(record)
        if status is LateStatus.APPLIED:
            assert record.applied_to is not None
            assert record.resolved_at is not None
            period = self._period(tenant_id, record.applied_to.isoformat())
            return LateActionResult(late_id, record, self._apply_entry(record, period, actor, None, None), True)
        if status is not LateStatus.WAITING and status is not LateStatus.APPLYING:
            raise LateActionRefused(_refusal(status, record))
        planned = self._planned(record)
        repeated = status is LateStatus.APPLYING
        if not repeated:
            now = self.clock()
            period = self.schedule.period_at(tenant_id, now)
            row, record = self._claim(
                tenant_id,
                row,
                record,
                status=LateStatus.APPLYING,
                resolved_at=now,
                resolved_by=actor,
                period_key=period.key,
            )
        assert record.resolved_at is not None
        assert record.applied_to is not None
        period = self._period(tenant_id, record.applied_to.isoformat())
        at = max(record.resolved_at, period.start)
        day = self.schedule.day_of(tenant_id, at).isoformat()
        hour = hour_key(at)
        metric = planned.meter.name
        before = self.reader.for_period(tenant_id, metric, period).total
        adjusted = plan_adjustment(planned, period, day, hour, self.schedule.shards(tenant_id, period))
        result = self.ledger.apply_plan(BatchPlan(partitions={adjusted.partition: [adjusted]}), {})
        if result.late:
            # The closer closed that period between the claim and the count: nothing was counted, so the claim
            # is given back and the next click claims the period open then.
            self._release(tenant_id, row)
            raise LateActionRefused(
                f"the period starting {period.key} closed while the event was being applied; apply it again to "
                "count it in the period open now"
            )
        if result.rejected:
            raise LateActionRefused(f"the store refused the adjustment: {result.rejected[0].reason}")
        if result.conflicts:
            raise LateActionRefused(
                f"the period starting {period.key} already counted another event under the dedupe key "
                f"{record.event.get('event_id') or record.event.get('idempotency_key')!r}"
            )
        if self.after_apply is not None:
            self.after_apply(result)
        after = self.reader.for_period(tenant_id, metric, period).total
        if result.duplicates:  # counted by an earlier click that did not finish: the change is already in
            before = after - _contribution(planned)
        entry = self._apply_entry(record, period, actor, before, after, day=day, hour=hour)
        self.journal.record(entry)
        _, record = self._mark(tenant_id, row, record, LateStatus.APPLIED)
        return LateActionResult(late_id, record, entry, repeated)

    def discard(self, tenant_id: str, late_id: str, reason: str, actor: str) -> LateActionResult:
        row, record = self._read(tenant_id, late_id)
        status = status_of(record)
        repeated = status is LateStatus.DISCARDED
        if not repeated:
            if status is not LateStatus.WAITING:
                raise LateActionRefused(_refusal(status, record))
            row, record = self._claim(
                tenant_id,
                row,
                record,
                status=LateStatus.DISCARDED,
                resolved_at=self.clock(),
                resolved_by=actor,
                discard_reason=reason,
            )
        assert record.resolved_at is not None
        closed = self._period(tenant_id, record.period_start.isoformat())
        total = self._total(record, closed)
        entry = JournalEntry(
            kind=JournalKind.LATE_DISCARD,
            tenant_id=tenant_id,
            time=record.resolved_at,
            subject=_dedupe_key(record),
            actor=record.resolved_by,
            details={
                "late_event_id": late_id,
                "event": record.event,
                "period_start": record.period_start.isoformat(),
                "reason": record.discard_reason,
            },
            before=total,
            after=total,
        )
        self.journal.record(entry)
        return LateActionResult(late_id, record, entry, repeated)

    # -- the record ------------------------------------------------------------------------------------------

    def _read(self, tenant_id: str, late_id: str) -> tuple[Row, LateEvent]:
        row = self.table.read(tenant_id, [late_id]).get(late_id)
        if row is None:
            raise LateEventNotFound(f"{tenant_id} has no late event {late_id}")
        return row, LateEvent.model_validate(row.data)

    def _claim(
        self,
        tenant_id: str,
        row: Row,
        record: LateEvent,
        *,
        status: LateStatus,
        resolved_at: datetime,
        resolved_by: str,
        period_key: str | None = None,
        discard_reason: str | None = None,
    ) -> tuple[Row, LateEvent]:
        data = dict(row.data)
        data.update(
            status=status.value,
            resolved_at=format_timestamp(resolved_at),
            resolved_by=resolved_by,
            applied_to=period_key,
            discard_reason=discard_reason,
        )
        try:
            (etag,) = self.table.commit(tenant_id, [Replace(row.key, data, row.etag)])
        except CommitConflict:
            # Another operator decided first: say what they decided.
            _, current = self._read(tenant_id, row.key)
            raise LateActionRefused(_refusal(status_of(current), current)) from None
        return Row(row.key, etag, data), LateEvent.model_validate(data)

    def _release(self, tenant_id: str, row: Row) -> None:
        data = {
            **row.data,
            "status": None,
            "resolved_at": None,
            "resolved_by": None,
            "applied_to": None,
            "discard_reason": None,
        }
        with contextlib.suppress(CommitConflict):  # someone else moved it on: their decision stands
            self.table.commit(tenant_id, [Replace(row.key, data, row.etag)])

    def _mark(self, tenant_id: str, row: Row, record: LateEvent, status: LateStatus) -> tuple[Row, LateEvent]:
        data = {**row.data, "status": status.value}
        try:
            (etag,) = self.table.commit(tenant_id, [Replace(row.key, data, row.etag)])
        except CommitConflict:  # a concurrent click of the same apply marked it: the same outcome
            row, record = self._read(tenant_id, row.key)
            return row, record
        return Row(row.key, etag, data), LateEvent.model_validate(data)

    # -- the event ---------------------------------------------------------------------------------------------

    def _planned(self, record: LateEvent) -> PlannedEvent:
        event, errors = parse_event(record.event)
        if event is None:
            reason = "; ".join(f"{e.field} {e.message}" for e in errors)
            raise LateActionRefused(f"the recorded event is no longer valid: {reason}")
        plan = self.ledger.plan([SourcedEvent(event)])
        planned = [p for events in plan.partitions.values() for p in events]
        if not planned:
            raise LateActionRefused(f"the meter {event.metric!r} is no longer in the catalog")
        first = planned[0]
        if not first.meter.aggregation.is_additive:
            raise LateActionRefused(
                f"{first.meter.name} is a {first.meter.aggregation.value} meter: a level or a distinct count of a "
                "closed period cannot be added to another one; discard it, or send a correcting event"
            )
        return first

    def _period(self, tenant_id: str, start: str) -> BillingPeriod:
        period = self.schedule.period_starting(tenant_id, date.fromisoformat(start))
        if period is None:
            raise LateActionRefused(f"{tenant_id} has no billing period starting {start} under its terms")
        return period

    def _total(self, record: LateEvent, period: BillingPeriod) -> dict[str, str]:
        metric = str(record.event.get("metric"))
        try:
            return {metric: str(self.reader.for_period(record_tenant(record), metric, period).total)}
        except LookupError:
            return {}

    def _apply_entry(
        self,
        record: LateEvent,
        period: BillingPeriod,
        actor: str,
        before: Decimal | None,
        after: Decimal | None,
        *,
        day: str | None = None,
        hour: str | None = None,
    ) -> JournalEntry:
        assert record.resolved_at is not None
        at = max(record.resolved_at, period.start)
        tenant = record_tenant(record)
        metric = str(record.event.get("metric"))
        return JournalEntry(
            kind=JournalKind.LATE_APPLY,
            tenant_id=tenant,
            time=record.resolved_at,
            subject=_dedupe_key(record),
            actor=record.resolved_by or actor,
            # The same details as a carry's: a rebuild replays both alike.
            details={
                "event": record.event,
                "period_start": record.period_start.isoformat(),
                "carried_to": period.key,
                "day": day or self.schedule.day_of(tenant, at).isoformat(),
                "hour": hour or hour_key(at),
            },
            before=None if before is None else {metric: str(before)},
            after=None if after is None else {metric: str(after)},
        )


def record_tenant(record: LateEvent) -> str:
    return str(record.event["tenant_id"])


def _dedupe_key(record: LateEvent) -> str:
    event, _ = parse_event(record.event)
    return event.dedupe_key if event is not None else str(record.event.get("event_id"))


def _contribution(planned: PlannedEvent) -> Decimal:
    return planned.cell.value


def _refusal(status: LateStatus, record: LateEvent) -> str:
    by = f" by {record.resolved_by}" if record.resolved_by else ""
    at = f" at {format_timestamp(record.resolved_at)}" if record.resolved_at else ""
    match status:
        case LateStatus.CARRIED:
            return f"it was counted in the period starting {record.carried_to} by the adjust policy"
        case LateStatus.APPLYING | LateStatus.APPLIED:
            return f"it was applied{by}{at} to the period starting {record.applied_to}"
        case LateStatus.DISCARDED:
            return f"it was discarded{by}{at}: {record.discard_reason}"
        case _:
            return "it is waiting for review"
