"""Cancelling a counted event of a sum or count meter, within its open period, exactly once.

The event is found by its marker in the periods it can belong to, in its key shard (and, when that marker is a
claim, in the shard it names, which applied the event); the subtraction itself is the ledger's
(ledger/cancel.py), committed here with the cancel's row, and journaled before the caller is answered. A commit
that meets an aggregator's or another cancel's is read again and retried.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta

from pydantic import BaseModel

from metering.billing.journal import Journal, JournalEntry, JournalKind
from metering.core import decimals
from metering.core.clock import format_timestamp
from metering.core.meters import Aggregation, MeterCatalog
from metering.core.periods import BillingPeriod, PeriodSchedule, periods_between
from metering.ledger import cancel, commit, levels, rows
from metering.ledger.cancel import NotCancellable, PeriodClosed
from metering.ledger.keys import STATE_ROW, cancel_key, key_shard, marker_key, partition_key
from metering.ledger.rows import Marker, StateRow
from metering.stores import CommitConflict, ContentionError, Create, Operation, Replace, Row, Store

__all__ = ["CancelResult", "Cancels", "NotCancellable", "NotCounted", "PeriodClosed"]

# Markers are looked for in the periods an accepted event can belong to and that can still be open.
_LOOKBACK = timedelta(days=100)


class CancelResult(BaseModel):
    """A cancel's answer, kept as its row: a repeat answers the same."""

    tenant_id: str
    dedupe_key: str
    event_id: str | None
    metric: str
    quantity: str
    period_start: datetime
    period_end: datetime
    cancelled_at: datetime


def journal_entry(result: CancelResult) -> JournalEntry:
    return JournalEntry(
        kind=JournalKind.CANCEL,
        tenant_id=result.tenant_id,
        time=result.cancelled_at,
        subject=result.dedupe_key,
        details=result.model_dump(mode="json"),
    )


class NotCounted(LookupError):
    """No counted event has this key (it may still be on its way through the hub)."""


class Cancels:
    def __init__(
        self,
        store: Store,
        catalog: MeterCatalog,
        schedule: PeriodSchedule,
        *,
        clock: Callable[[], datetime],
        max_future: timedelta,
        journal: Journal,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.schedule = schedule
        self.clock = clock
        self.max_future = max_future
        self.journal = journal

    def cancel(self, tenant_id: str, dedupe_key: str) -> CancelResult:
        now = self.clock()
        marker = marker_key(tenant_id, dedupe_key)
        done_key = cancel_key(tenant_id, dedupe_key)
        periods = list(periods_between(self.schedule, tenant_id, now - _LOOKBACK, now + self.max_future))
        for period in reversed(periods):
            partition = self._applied_in(tenant_id, dedupe_key, period, marker)
            if partition is None:
                continue
            for _attempt in range(10):
                found = self.store.usage.read(partition, [marker, STATE_ROW, done_key])
                if marker not in found:
                    break
                if done_key in found:
                    # Journaled again (the same entry): heals a crash between a cancel's commit and its entry.
                    done = CancelResult.model_validate(found[done_key].data)
                    self.journal.record(journal_entry(done))
                    return done
                try:
                    result = self._cancel(partition, period, Marker(found[marker].data), found.get(STATE_ROW), now)
                except CommitConflict:
                    continue  # an aggregator commit or another cancel came first: read again
                # Before the answer: a cancel the client was told about is always in the journal.
                self.journal.record(journal_entry(result))
                return result
            else:
                raise ContentionError(f"cancel in {partition} kept meeting concurrent writes")
        raise NotCounted(dedupe_key)

    def _applied_in(self, tenant_id: str, dedupe_key: str, period: BillingPeriod, marker: str) -> str | None:
        """The partition of the period whose marker says the event was applied there: its key shard's, or the one
        its claim there names; None when the key shard holds no marker."""
        shards = self.schedule.shards(tenant_id, period)
        partition = partition_key(tenant_id, period, key_shard(tenant_id, dedupe_key, shards))
        if shards == 1:
            return partition
        found = self.store.usage.read(partition, [marker]).get(marker)
        if found is None:
            return None
        applied = Marker(found.data).applied_shard
        return partition if applied is None else partition_key(tenant_id, period, applied)

    def _cancel(
        self, partition: str, period: BillingPeriod, marker: Marker, state: Row | None, now: datetime
    ) -> CancelResult:
        meter = self.catalog.get(marker.metric)
        value = cancel.cancelled_value(marker, meter)
        state = cancel.ensure_open(state, period.key)
        assert meter is not None
        day_key = cancel.day_row_to_read(marker, state)
        day_row = self.store.usage.read(partition, [day_key]).get(day_key) if day_key is not None else None
        result = CancelResult(
            tenant_id=StateRow(state.data).tenant_id,
            dedupe_key=marker.dedupe_key,
            event_id=marker.event_id,
            metric=meter.name,
            quantity=decimals.to_str(value),
            period_start=period.start,
            period_end=period.end,
            cancelled_at=now,
        )
        operations = cancel.subtraction(
            marker=marker,
            meter=meter,
            period_key=period.key,
            state=state,
            day_row=day_row,
            cancel=Create(cancel_key(result.tenant_id, result.dedupe_key), result.model_dump(mode="json")),
            meters=self.catalog.meters,
            now=format_timestamp(now),
        )
        if meter.aggregation is Aggregation.TIME_WEIGHTED:
            operations = self._without_point(partition, result.tenant_id, marker, operations, format_timestamp(now))
        self.store.usage.commit(partition, operations)
        return result

    def _without_point(
        self, partition: str, tenant: str, marker: Marker, operations: list[Operation], now: str
    ) -> list[Operation]:
        """The cancel's commit with the point's removal: its rows, and the integral's change in the state row."""
        schedule = self.schedule
        locate = levels.day_locator(
            lambda instant: schedule.day_of(tenant, instant).isoformat(),
            lambda day: schedule.day_bounds(tenant, date.fromisoformat(day))[1],
        )
        known: dict[str, Row | None] = {}
        for _round in range(4):
            placed = levels.unplace(marker, known, locate)
            if isinstance(placed, levels.LevelChanges):
                break
            found = self.store.usage.read(partition, sorted(placed.keys))
            known.update({key: found.get(key) for key in placed.keys})
        else:
            raise AssertionError("removing a point kept naming rows it had been given")
        *others, state_op = operations
        assert isinstance(state_op, Replace)
        state = {**state_op.data, **rows.add_levels(state_op.data, placed.integrals, {})}
        written = [commit.write(key, {**data, "a": now}, known[key]) for key, data in placed.rows.items()]
        return [*others, *written, Replace(STATE_ROW, state, state_op.etag)]
