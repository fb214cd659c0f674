"""Cancelling a counted event of a sum or count meter, within its open period, exactly once.

The event's marker holds its contribution (quantity, day, groups), so the cancel subtracts exactly that from
the period total, the day, the hour and the groups, in one transaction with a cancel row `c|<digest>` that
makes a repeated cancel a no-op answered the same way. The state row is rewritten under its ETag like every
aggregator commit, so a cancel is ordered against them and against the period closer.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from metering.billing.journal import Journal, JournalEntry, JournalKind
from metering.core import decimals
from metering.core.clock import format_timestamp
from metering.core.meters import Aggregation, MeterCatalog
from metering.core.periods import BillingPeriod, PeriodSchedule, periods_between
from metering.ledger import rows
from metering.ledger.batch import STATE_ROW, Cell, ChunkDeltas, DayDelta, day_row_key, marker_key, partition_key
from metering.stores import CommitConflict, ContentionError, Create, Operation, Replace, Row, Store

# Markers are looked for in the periods an accepted event can belong to and that can still be open.
_LOOKBACK = timedelta(days=100)


class CancelResult(BaseModel):
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


class PeriodClosed(RuntimeError):
    pass


class NotCancellable(ValueError):
    pass


class Cancels:
    def __init__(
        self,
        store: Store,
        catalog: MeterCatalog,
        schedule: PeriodSchedule,
        *,
        clock: Callable[[], datetime],
        max_future: timedelta,
        journal: Journal | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.schedule = schedule
        self.clock = clock
        self.max_future = max_future
        self.journal = journal if journal is not None else Journal(store.journal)

    def cancel(self, tenant_id: str, dedupe_key: str) -> CancelResult:
        now = self.clock()
        marker = marker_key(tenant_id, dedupe_key)
        cancel_key = "c|" + marker[2:]
        periods = list(periods_between(self.schedule, tenant_id, now - _LOOKBACK, now + self.max_future))
        for period in reversed(periods):
            partition = partition_key(tenant_id, period)
            for _attempt in range(10):
                found = self.store.usage.read(partition, [marker, STATE_ROW, cancel_key])
                if marker not in found:
                    break
                if cancel_key in found:
                    # Journaled again (the same entry): heals a crash between a cancel's commit and its entry.
                    done = CancelResult.model_validate(found[cancel_key].data)
                    self.journal.record(journal_entry(done))
                    return done
                try:
                    result = self._cancel(
                        partition, period, found[marker], found.get(STATE_ROW), cancel_key=cancel_key, now=now
                    )
                except CommitConflict:
                    continue  # an aggregator commit or another cancel came first: read again
                # Before the answer: a cancel the client was told about is always in the journal.
                self.journal.record(journal_entry(result))
                return result
            else:
                raise ContentionError(f"cancel in {partition} kept meeting concurrent writes")
        raise NotCounted(dedupe_key)

    def _cancel(
        self, partition: str, period: BillingPeriod, marker: Row, state: Row | None, *, cancel_key: str, now: datetime
    ) -> CancelResult:
        data = marker.data
        meter = self.catalog.get(data["m"])
        if meter is None or not meter.aggregation.is_additive:
            kind = meter.aggregation.value if meter else "unknown"
            raise NotCancellable(f"{data['m']} is a {kind} meter: only sum and count contributions can be subtracted")
        if state is None or state.data["status"] == rows.CLOSED:
            raise PeriodClosed(f"the billing period starting {period.key} is closed")
        value = decimals.ONE if meter.aggregation is Aggregation.COUNT else Decimal(data["q"])
        minus = Cell(decimals.negate(value), -1)
        day = data["d"]
        hour = data.get("hr") or data["t"][:13]
        today = state.data.get("today")
        in_state = today is not None and today["day"] == day
        stored_block: dict[str, Any] | None = today if in_state else None
        day_row: Row | None = None
        if not in_state:
            day_row = self.store.usage.read(partition, [day_row_key(day)]).get(day_row_key(day))
            stored_block = day_row.data if day_row else None
        delta = DayDelta(meter.aggregation, minus, {hour: minus})
        stored_groups = ((stored_block or {}).get("m", {}).get(meter.name) or {}).get("g", {})
        for dim, group_value in data.get("g", {}).items():
            if group_value in stored_groups.get(dim, {}).get("v", {}):
                delta.groups.setdefault(dim, {})[group_value] = minus
            else:  # it was counted in the dimension's overflow cell
                delta.overflow[dim] = minus
        block = rows.add_to_block(stored_block, day=day, per_meter={meter.name: delta}, meters=self.catalog.meters)
        deltas = ChunkDeltas(totals={meter.name: minus}, meters={meter.name: meter})
        if data.get("adj"):
            deltas.adjustments[meter.name] = minus
        stamp = format_timestamp(now)
        new_state = rows.apply_to_state(
            state.data,
            deltas=deltas,
            new_distinct={},
            coverage={},
            now=stamp,
            today=block if in_state else today,
        )
        result = CancelResult(
            tenant_id=new_state["tenant"],
            dedupe_key=data["k"],
            event_id=data.get("e"),
            metric=meter.name,
            quantity=decimals.to_str(value),
            period_start=period.start,
            period_end=period.end,
            cancelled_at=now,
        )
        operations: list[Operation] = [Create(cancel_key, result.model_dump(mode="json"))]
        if not in_state:
            assert day_row is not None, "a counted day that is not the latest has its day row"
            operations.append(Replace(day_row.key, rows.day_row(block, stamp), day_row.etag))
        operations.append(Replace(STATE_ROW, new_state, state.etag))
        self.store.usage.commit(partition, operations)
        return result
