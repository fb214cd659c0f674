"""Closing billing periods into statements; purging the dedupe markers of long-closed periods.

A period is due when its end plus the grace window has passed and every hub partition has applied its events
up to that instant (so events still waiting in the hub are not mistaken for late ones). Closing one:

1. flip the state row of each of its store partitions (one per shard) to closed, under its ETag (or create it
   closed): every aggregator commit that changes a figure rewrites that row under its ETag, so none can slip in
   after;
2. write the statement from the closed rows' totals, combined by each meter's kind across the shards, rated with
   the plan the tenant had at the period's end, with `create` (racing closers build the same statement from the
   same closed rows; one create wins, so there is exactly one, and it is never rated again);
3. queue `period.closed` in the outbox (sent at least once, stable id);
4. move the period from the open index to the purge index.

Each step is idempotent and the index row goes last, so a crash anywhere resumes on the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from pydantic import Field

from metering.billing.rating import rate
from metering.billing.statements import LineKind, Statement, StatementLine, metered_lines
from metering.core.meters import MeterCatalog
from metering.core.periods import BillingPeriod
from metering.core.prices import Pricing, PricingAt
from metering.ledger import commit, control, rows
from metering.ledger.control import HubProgress, IndexedPeriod
from metering.ledger.keys import MARKERS, STATE_ROW, partition_keys
from metering.ledger.rows import StateRow
from metering.ledger.shards import period_state, shard_states
from metering.notifications.messages import Notification, PeriodInstant
from metering.notifications.outbox import Outbox
from metering.stores import CommitConflict, Create, Row, Store
from metering.transport import Backlog

log = logging.getLogger(__name__)

# Kept importable from here: statements are what closing writes.
__all__ = ["LineKind", "PeriodCloser", "Statement", "StatementLine", "build_statement", "period_closed"]


class PeriodClosedNotification(Notification):
    """`period.closed`: a tenant's billing period is closed, and its statement final. Sent once per period
    (at least once: dedupe on `id`, `period.closed:<tenant>:<period start date>`)."""

    type: Literal["period.closed"] = "period.closed"
    tenant_id: str
    period_start: PeriodInstant
    period_end: PeriodInstant
    statement: Statement = Field(description="The statement, as GET /api/statements/{tenant_id}?period= gives it")


@dataclass(frozen=True, slots=True)
class ClosedPeriod:
    tenant_id: str
    period: BillingPeriod


@dataclass(slots=True)
class CloseReport:
    closed: list[ClosedPeriod] = field(default_factory=list)
    # Due by the clock but still open: the hub has not applied up to their end plus grace yet, or this run
    # reached its bound (`max_periods_per_run`) and the next one closes them.
    waiting: int = 0
    sent: int = 0
    purged_markers: int = 0


def statement_id(tenant_id: str, period: BillingPeriod) -> str:
    return f"period.closed:{tenant_id}:{period.key}"


def build_statement(
    tenant_id: str, period: BillingPeriod, state: StateRow, catalog: MeterCatalog, pricing: Pricing | None = None
) -> Statement:
    """The statement of a closed state row, rated with `pricing` (unrated without: a rebuild compares totals)."""
    closed_at = state.closed_at
    assert closed_at is not None, "a statement is built from a closed state row"
    lines = metered_lines(state, catalog)
    statement = Statement(
        tenant_id=tenant_id,
        period_start=period.start,
        period_end=period.end,
        closed_at=closed_at,
        catalog_version=state.catalog_version or catalog.version,
        lines=lines,
    )
    if pricing is None:
        return statement
    rated = rate(pricing, lines)
    return statement.model_copy(
        update={
            "currency": pricing.currency,
            "plan": pricing.plan,
            "plan_version": pricing.version,
            "lines": rated.lines,
            "subtotal": rated.subtotal,
        }
    )


def period_closed(store: Store, tenant_id: str, period: BillingPeriod, shards: int = 1) -> bool:
    """Whether the tenant's period (of `shards` shards) is closed or being closed: passed by the closer, or a
    shard's state row flipped."""
    through = control.closed_through(store.control)
    if through is not None and period.end <= through:
        return True
    return any(
        row is not None and StateRow(row.data).is_closed for row in shard_states(store.usage, tenant_id, period, shards)
    )


def one_shard(_tenant_id: str, _period: BillingPeriod) -> int:
    return 1


class PeriodCloser:
    def __init__(
        self,
        store: Store,
        catalog: MeterCatalog,
        outbox: Outbox,
        backlog: Backlog,
        progress: HubProgress,
        *,
        grace: timedelta,
        retention: timedelta,
        clock: Callable[[], datetime],
        page_size: int = 1000,
        max_periods_per_run: int = 5000,
        pricing: PricingAt | None = None,
        shards: Callable[[str, BillingPeriod], int] = one_shard,
        carry: Callable[[str, BillingPeriod, datetime], object] | None = None,
    ) -> None:
        # Time-weighted levels carried into the next period once this one is closed (billing/carry.py).
        self.carry = carry
        self.pricing = pricing
        self.shards = shards
        self.page_size = page_size
        self.max_periods_per_run = max_periods_per_run
        self.store = store
        self.catalog = catalog
        self.outbox = outbox
        self.backlog = backlog
        self.progress = progress
        self.grace = grace
        self.retention = retention
        self.clock = clock

    def run(self, now: datetime | None = None) -> CloseReport:
        now = now or self.clock()
        report = CloseReport()
        through = min(now, self.backlog.applied_through(self.progress.positions(), now))
        # A period closes once its end plus grace is behind what the hub has applied. The index is ordered by
        # end, and each close removes its entry, so reading the first page again finds the next due ones.
        closable = through - self.grace
        while len(report.closed) < self.max_periods_per_run:
            page = control.open_until(self.store.control, closable, limit=self.page_size)
            for entry in page[: self.max_periods_per_run - len(report.closed)]:
                self.close(entry, now)
                report.closed.append(ClosedPeriod(entry.tenant_id, entry.period))
            # Until a page finds nothing: closing a period may index the next one (time-weighted levels carried
            # into it, billing/carry.py), which is due too when it ended long enough ago.
            if not page:
                break
        # Every period that ended by `closed_through` is closed now, or never had a partition: the aggregator
        # files an event of such a period as late instead of opening it. So it may only pass the periods closed.
        left = control.open_until(self.store.control, closable, limit=1)
        closed_through = closable if not left else min(closable, left[0].period.end - timedelta(microseconds=1))
        control.advance_closed_through(self.store.control, closed_through)
        report.waiting = len(control.open_until(self.store.control, now - self.grace))
        report.sent = self.outbox.dispatch()
        report.purged_markers = self.purge(now)
        if report.closed or report.waiting:
            log.info(
                "close-periods: %d closed, %d waiting (for the hub to catch up, or the next run), %d messages sent",
                len(report.closed),
                report.waiting,
                report.sent,
            )
        return report

    def close(self, entry: IndexedPeriod, now: datetime) -> Statement:
        tenant, period = entry.tenant_id, entry.period
        partitions = partition_keys(tenant, period, self.shards(tenant, period))
        states = [self._flip(partition, tenant, period, now) for partition in partitions]
        combined = period_state(states, self.catalog)
        assert combined is not None, "every shard has a state row once flipped"
        # Rated once, here: a statement that already exists (a racing or earlier closer) is never rated again.
        pricing = None if self.pricing is None else self.pricing(tenant, period.end)
        statement = build_statement(tenant, period, combined, self.catalog, pricing)
        try:
            self.store.statements.commit(tenant, [Create(period.key, statement.model_dump(mode="json"))])
        except CommitConflict:
            stored = self.store.statements.read(tenant, [period.key])[period.key]
            statement = Statement.model_validate(stored.data)
        notice = PeriodClosedNotification(
            id=statement_id(tenant, period),
            tenant_id=tenant,
            period_start=period.start,
            period_end=period.end,
            statement=statement,
        )
        self.outbox.add(notice.id, notice.message())
        if self.carry is not None:
            # Before the index entry goes: a crash in between carries again on the next run, which is idempotent.
            self.carry(tenant, period, now)
        control.move_to_closed(self.store.control, entry, statement.closed_at + self.retention)
        return statement

    def _flip(self, partition: str, tenant: str, period: BillingPeriod, now: datetime) -> StateRow:
        for _attempt in range(20):
            state: Row | None = self.store.usage.read(partition, [STATE_ROW]).get(STATE_ROW)
            if state is not None and StateRow(state.data).is_closed:
                return StateRow(state.data)
            closed = rows.closed_state(state.data if state else None, tenant, period, now, self.catalog.version)
            try:
                self.store.usage.commit(partition, [commit.write(STATE_ROW, closed, state)])
            except CommitConflict:
                continue  # an aggregator commit landed first: read again and flip what it wrote
            return StateRow(closed)
        raise RuntimeError(f"could not close {partition}: its state row kept changing")

    def purge(self, now: datetime) -> int:
        """Delete the dedupe markers of periods closed longer than the dedupe retention: a replay of their
        events is by then past the hub's retention and any client's retries."""
        purged = 0
        for entry in control.purgeable(self.store.control, now):
            for partition in partition_keys(entry.tenant_id, entry.period, self.shards(entry.tenant_id, entry.period)):
                while True:
                    markers = self.store.usage.range(partition, *MARKERS, limit=1000)
                    if not markers:
                        break
                    self.store.usage.delete(partition, [row.key for row in markers])
                    purged += len(markers)
            self.store.control.delete(control.CLOSED, [entry.key])
        return purged
