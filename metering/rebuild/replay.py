"""Replaying the archive and the journal into a scratch store, in the order things happened live.

Archive messages go through the consumer (`consume`) with a ledger on the scratch store, so they are decoded,
given ids, deduplicated, dead-lettered and filed as late exactly as the aggregator does. Journal entries are
replayed at their time through the same code: a cancel through `Cancels`, a carry through the ledger as
`billing/late.py` applies it. The clock every part reads is the replay's: the instant of what is being replayed.

Periods close in the scratch store when they closed live: at the `closed_at` of their live statement (or state
row), through the same closer. So an archived event of a period counts there only if it was enqueued before that
close; a later one is late, and is counted elsewhere only if the journal says it was carried. A period that
never had a partition live, and that the live closer has passed, is closed from the start: live filed its
events as late.

A tenant's journal is read when the replay first meets the tenant (or up front for the tenants given): an entry
older than that meeting concerns an event enqueued before the window, which a whole-period window never has.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime

from metering.archive.capture import ArchivedMessage
from metering.billing.cancels import NotCancellable, NotCounted, PeriodClosed
from metering.billing.closing import Statement
from metering.billing.journal import CHANGES_TOTALS, JournalEntry, JournalKind
from metering.bootstrap import Services
from metering.core.events import parse_event
from metering.core.hub import NOTHING_APPLIED
from metering.core.periods import BillingPeriod
from metering.ingest.consumer import BatchReport, HubMessage, consume
from metering.ledger import control
from metering.ledger.batch import BatchPlan, SourcedEvent, plan_adjustment
from metering.ledger.shards import period_state, shard_states
from metering.notifications.outbox import DiscardSink
from metering.rebuild.scratch import Scratch
from metering.settings import LateEventPolicy
from metering.transport import EmptyBacklog, decode_message

log = logging.getLogger(__name__)

# Messages per consumer call, as the Event Hub trigger's maxEventBatchSize (host.json).
BATCH_MESSAGES = 100


class ReplayClock:
    """The instant being replayed: what `now` is for every part the replay drives."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class ReplayStats:
    messages: int = 0
    events: int = 0
    applied: int = 0
    duplicates: int = 0
    conflicts: int = 0
    late: int = 0
    dead_lettered: int = 0
    journal_entries: int = 0
    closed_periods: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, report: BatchReport) -> None:
        self.messages += report.messages
        self.events += report.events
        self.applied += report.applied
        self.duplicates += report.duplicates
        self.conflicts += report.conflicts
        self.late += report.late
        self.dead_lettered += report.dead_lettered


@dataclass(frozen=True, slots=True)
class LiveClose:
    tenant_id: str
    period: BillingPeriod
    closed_at: datetime | None  # None: open live


class Replay:
    def __init__(
        self,
        *,
        live: Services,
        scratch: Scratch,
        start: datetime,
        end: datetime,
        tenants: Iterable[str] | None = None,
    ) -> None:
        self.live = live.store
        self.scratch = scratch
        self.schedule = live.schedule
        self.catalog = live.catalog
        self.start = start
        self.end = end
        self.only = frozenset(tenants) if tenants else None
        self.clock = ReplayClock(start)
        # The scratch store's services, wired as live ones, with the live catalog and every tenant's live terms.
        # Policy review: a late event is recorded, never carried by the replay itself; the journal carries it.
        # Notifications go nowhere (the live ones were sent), and no hub holds anything back.
        replayed = Services(
            live.settings.model_copy(update={"late_event_policy": LateEventPolicy.REVIEW}),
            clock=self.clock,
            store=scratch.store,
            sink=DiscardSink(),
            backlog=EmptyBacklog(),
            dead_letter_container=lambda: scratch.container,
            catalog=live.catalog,
            schedule=live.schedule,
        )
        self.ledger = replayed.ledger
        self.dead_letters = replayed.dead_letters
        self.after = replayed.after_apply
        self.cancels = replayed.cancels
        self.closer = replayed.closer
        self.stats = ReplayStats()
        self._journal = live.journal
        self._tenants: set[str] = set()
        self._entries: list[tuple[datetime, int, JournalEntry]] = []
        self._closes: list[tuple[datetime, int, LiveClose]] = []
        self._live: dict[tuple[str, str], LiveClose] = {}
        self._closed: set[tuple[str, str]] = set()
        self._order = 0
        self._closed_through: datetime | None = None
        self._closed_through_read = False

    def run(self, messages: Iterator[ArchivedMessage], tenants: Iterable[str] = ()) -> ReplayStats:
        """Replay `messages` (in enqueued order) and the journals of the tenants they name (and of `tenants`)."""
        for tenant in tenants:
            self._tenant(tenant)
        batch: list[HubMessage] = []
        for message in messages:
            named = self._events_of(message)
            if self.only is not None and not any(tenant in self.only for tenant, _ in named):
                continue
            for tenant, _ in named:
                self._tenant(tenant)
            self._until(message.enqueued, batch, inclusive=True)
            for tenant, period in named:
                close = self._close_of(tenant, period)
                if close.closed_at is not None and close.closed_at <= message.enqueued:
                    self._flush(batch)
                    self._close(close)
            batch.append(HubMessage(message.body, message.partition, message.sequence, message.enqueued))
            if len(batch) >= BATCH_MESSAGES:
                self._flush(batch)
        self._flush(batch)
        self._until(self.end, batch, inclusive=False)
        return self.stats

    # -- what happens when ---------------------------------------------------------------------------------

    def _until(self, instant: datetime, batch: list[HubMessage], *, inclusive: bool) -> None:
        """Replay the journal entries and live closes due by `instant`, in time order (entries first on a tie:
        a change the live store took was taken before the close that followed)."""
        while True:
            entry_at = self._entries[0][0] if self._entries else None
            close_at = self._closes[0][0] if self._closes else None
            due = [t for t in (entry_at, close_at) if t is not None and (t <= instant if inclusive else t < instant)]
            if not due:
                return
            self._flush(batch)
            if entry_at is not None and entry_at == min(due):
                self._replay(heapq.heappop(self._entries)[-1])
            else:
                self._close(heapq.heappop(self._closes)[-1])

    def _flush(self, batch: list[HubMessage]) -> None:
        if not batch:
            return
        self.clock.now = max(m.enqueued for m in batch if m.enqueued is not None)
        self.stats.add(consume(batch, self.ledger, self.dead_letters, self.clock, self.after))
        batch.clear()

    def _events_of(self, message: ArchivedMessage) -> list[tuple[str, BillingPeriod]]:
        """The tenants and periods a message's events belong to (what the consumer will find undecodable is
        the consumer's to dead-letter)."""
        try:
            items = decode_message(message.body)
        except ValueError:
            return []
        named: dict[tuple[str, str], tuple[str, BillingPeriod]] = {}
        for index, item in enumerate(items):
            event, _errors = parse_event(item, index)
            if event is not None:
                period = self.schedule.period_at(event.tenant_id, event.timestamp)
                named[(event.tenant_id, period.key)] = (event.tenant_id, period)
        return list(named.values())

    def _tenant(self, tenant: str) -> None:
        """Load a tenant's journal entries of the window, the first time the replay meets the tenant."""
        if tenant in self._tenants or (self.only is not None and tenant not in self.only):
            return
        self._tenants.add(tenant)
        for entry in self._journal.list(tenant, since=self.start, until=self.end):
            self._order += 1
            heapq.heappush(self._entries, (entry.time, self._order, entry))

    # -- live closes ---------------------------------------------------------------------------------------

    def _close_of(self, tenant: str, period: BillingPeriod) -> LiveClose:
        """When the live store closed a period (read once), scheduled for the replay to close it too."""
        known = self._live.get((tenant, period.key))
        if known is not None:
            return known
        close = LiveClose(tenant, period, self._live_closed_at(tenant, period))
        self._live[(tenant, period.key)] = close
        if close.closed_at is not None:
            self._order += 1
            heapq.heappush(self._closes, (close.closed_at, self._order, close))
        return close

    def _live_closed_at(self, tenant: str, period: BillingPeriod) -> datetime | None:
        statement = self.live.statements.read(tenant, [period.key]).get(period.key)
        if statement is not None:
            return Statement.model_validate(statement.data).closed_at
        rows = shard_states(self.live.usage, tenant, period, self.schedule.shards(tenant, period))
        state = period_state(rows, self.catalog)
        if state is not None:
            return state.closed_at if state.is_closed else None
        if not self._closed_through_read:
            self._closed_through = control.closed_through(self.live.control)
            self._closed_through_read = True
        if self._closed_through is not None and period.end <= self._closed_through:
            return NOTHING_APPLIED
        return None

    def _close(self, close: LiveClose) -> None:
        key = (close.tenant_id, close.period.key)
        if key in self._closed or close.closed_at is None:
            return
        self._closed.add(key)
        at = max(close.closed_at, close.period.end)
        self.clock.now = at
        self.closer.close(control.open_entry(close.tenant_id, close.period), at)
        self.stats.closed_periods += 1

    # -- journal entries -----------------------------------------------------------------------------------

    def _replay(self, entry: JournalEntry) -> None:
        self.stats.journal_entries += 1
        self.clock.now = entry.time
        if entry.kind == JournalKind.CANCEL:
            try:
                self.cancels.cancel(entry.tenant_id, entry.subject)
            except (NotCounted, PeriodClosed, NotCancellable) as error:
                self._problem(entry, f"the cancel did not replay ({type(error).__name__}: {error})")
        elif entry.kind in (JournalKind.LATE_CARRY, JournalKind.LATE_APPLY):
            self._carry(entry)  # an operator's apply is recorded as a carry is
        elif entry.kind == JournalKind.DEAD_LETTER_REDRIVE:
            self._redrive(entry)
        elif entry.kind in CHANGES_TOTALS:
            self._problem(entry, "this version cannot replay it")

    def _carry(self, entry: JournalEntry) -> None:
        """Count a carried late event in the period it was carried to, as billing/late.py does."""
        details = entry.details
        event, errors = parse_event(details["event"])
        target = self.schedule.period_starting(entry.tenant_id, date.fromisoformat(details["carried_to"]))
        if event is None or target is None:
            self._problem(entry, f"the carry did not replay ({errors or 'its period is unknown'})")
            return
        plan = self.ledger.plan([SourcedEvent(event)])
        planned = [p for events in plan.partitions.values() for p in events]
        if not planned:
            self._problem(entry, "the carried event is not valid for the catalog")
            return
        self._close_of(entry.tenant_id, target)
        shards = self.schedule.shards(entry.tenant_id, target)
        adjusted = plan_adjustment(planned[0], target, details["day"], details["hour"], shards)
        carry = BatchPlan(partitions={adjusted.partition: [adjusted]})
        result = self.ledger.apply_plan(carry, {})
        if result.late:
            self._problem(entry, f"the period starting {target.key} was closed before the carry")

    def _redrive(self, entry: JournalEntry) -> None:
        """Count a re-driven dead letter as the redrive did: once under its dedupe key (the replay of its hub
        message may have counted it already, when its cause was a catalog fixed since), and as a late event
        when its period had closed, whose carry, if any, has an entry of its own."""
        event, errors = parse_event(entry.details["event"])
        if event is None:
            self._problem(entry, f"the re-driven event did not replay ({errors})")
            return
        self.ledger.apply([SourcedEvent(event)], {})

    def _problem(self, entry: JournalEntry, text: str) -> None:
        message = f"{entry.kind} of {entry.subject!r} for {entry.tenant_id} at {entry.time.isoformat()}: {text}"
        log.warning("rebuild: %s", message)
        self.stats.problems.append(message)
