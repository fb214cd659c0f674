"""The export engine: usage sent to every billing target exactly once, whatever fails in between.

Intents first. Before anything is sent, an intent (target, tenant, meter, slot, revision, identifier, value) is
created in one commit with the export state that lists it as open (rows.py). A run

1. sends the open intents, unchanged: an intent is sent again, with the same identifier and value, until the
   target settles it (acknowledges it, a reused identifier or a duplicate included; refuses it; or, for the
   Marketplace, lets it expire). One first sent longer ago than the target's resend window is reconciled
   against the target instead (Stripe may have forgotten its identifier), never sent again blind;
2. looks at what changed in each tenant's periods since it last looked (the aggregator records the hours it
   changed, so only those are read), and creates the next intent of every key whose last one is settled and
   whose figure differs from what the target holds;
3. sends those.

Hours settle by the hub, not the clock: an hour is exported once its end plus the settle delay is behind every
hub partition's applied position, so events still waiting in the hub are never left out of what was sent.

Sending an intent first claims it: an ETag-guarded lease on its row, so two exporters at once never send it
together, and one that dies mid-send leaves it to be sent again, unchanged, once the lease runs out (the
target dedupes the repeat). What a key sends next is computed only once its previous intent is settled, so a
key has at most one value in flight, and what each target holds adds up to the acknowledged intents.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from metering.billing.exports import values
from metering.billing.exports.port import Answer, Outcome, Stamp, Target
from metering.billing.exports.rows import (
    MAX_INTENTS_PER_COMMIT,
    PERIOD_SLOT,
    ExportRows,
    ExportState,
    Intent,
    IntentStatus,
    Stored,
    acked_total,
    partition_of,
)
from metering.core import decimals
from metering.core.clock import Clock
from metering.core.meters import Meter, MeterCatalog
from metering.core.prices import PricingAt
from metering.ledger import control
from metering.ledger.cells import Cell
from metering.ledger.control import HubProgress, IndexedPeriod
from metering.ledger.keys import digest
from metering.ledger.reader import UsageReader
from metering.stores import CommitConflict, Store
from metering.tenants.records import TenantRecord
from metering.transport import Backlog

log = logging.getLogger(__name__)

# A claim outlasts a send with all its retries; an exporter that dies mid-send holds an intent this long.
LEASE = timedelta(minutes=5)
# A run stops starting sends after this, so the timer's runs never pile up; the next run goes on.
BUDGET = timedelta(minutes=4)
_SLICE = 100


@dataclass(slots=True)
class RunReport:
    sent: int = 0  # intents the targets acknowledged in this run
    failed: int = 0  # sends that failed in this run: refused (reported), or to be retried
    pending: int = 0  # intents still open after the run: waiting for an answer, a retry or a lease


@dataclass(slots=True)
class _Part:
    """One target's export of one tenant's period, as this run knows it."""

    target: Target
    entry: IndexedPeriod
    partition: str
    link: dict[str, str] | None
    etag: str | None = None
    state: ExportState | None = None


@dataclass(slots=True)
class _Due:
    part: _Part
    stored: Stored
    reconcile: bool = False


@dataclass(slots=True)
class _Plan:
    """One partition's planning: what it knows, the intents it creates, the slots it looks at again next run."""

    now: datetime
    settled_until: datetime
    open_keys: set[str]
    intents: list[Intent] = field(default_factory=list)
    keep: set[str] = field(default_factory=set)


def identifier(target: str, tenant_id: str, *, meter: str, period: str, slot: str, revision: int) -> str:
    """Derived from the key and revision only: every exporter names an intent alike, and at most 100 characters
    (Stripe's limit) whatever the tenant id."""
    return "mx_" + digest(f"{target}\n{tenant_id}\n{meter}\n{period}\n{slot}\n{revision}")


def retry_delay(attempts: int) -> timedelta:
    return timedelta(seconds=min(30 * 2 ** max(attempts - 1, 0), 1800))


class Exporter:
    def __init__(
        self,
        store: Store,
        reader: UsageReader,
        catalog: MeterCatalog,
        targets: Sequence[Target],
        *,
        record: Callable[[str], TenantRecord],
        pricing: PricingAt,
        backlog: Backlog,
        progress: HubProgress,
        settle: timedelta,
        clock: Clock,
        lease: timedelta = LEASE,
        budget: timedelta = BUDGET,
    ) -> None:
        self.store = store
        self.rows = ExportRows(store.exports)
        self.reader = reader
        self.catalog = catalog
        self.targets = list(targets)
        self.record = record
        self.pricing = pricing
        self.backlog = backlog
        self.progress = progress
        self.settle = settle
        self.clock = clock
        self.lease = lease
        self.budget = budget
        # Partitions settled for good (closed, nothing open or left to look at): never read again here.
        self._done: set[str] = set()
        # Unlinked tenants without export state: they have nothing open, and a link is seen at once.
        self._nothing: set[str] = set()
        # Where the last run stopped planning when its budget ran out: this one starts there.
        self._resume: str | None = None

    # -- a run ------------------------------------------------------------------------------------------------

    def run(self, now: datetime | None = None) -> RunReport:
        now = now or self.clock()
        report = RunReport()
        if not self.targets:
            return report
        deadline = time.monotonic() + self.budget.total_seconds()
        through = min(now, self.backlog.applied_through(self.progress.positions(), now))
        settled_until = through - self.settle
        parts = self._parts()
        self._send_open(parts, now, report, deadline)
        for index, part in enumerate(self._from_resume(parts)):
            if index and time.monotonic() > deadline:
                # The parts not planned keep their state as it is, and the next run starts with them: a run that
                # cannot plan everyone never leaves the same tenants out twice (and each run plans one at least).
                self._resume = part.partition
                log.info("exports: the run's budget is spent; the next run plans the remaining tenants first")
                break
            self._plan(part, now, settled_until)
        else:
            self._resume = None
        self._send_open(parts, now, report, deadline)
        report.pending = sum(len(part.state.open) for part in parts if part.state is not None)
        if report.sent or report.failed or report.pending:
            log.info(
                "exports: %d acknowledged, %d failed, %d open after the run", report.sent, report.failed, report.pending
            )
        return report

    def _from_resume(self, parts: list[_Part]) -> list[_Part]:
        at = next((index for index, part in enumerate(parts) if part.partition == self._resume), 0)
        return parts[at:] + parts[:at]

    def _parts(self) -> list[_Part]:
        parts = []
        records: dict[str, TenantRecord] = {}
        for entry in control.indexed(self.store.control):
            tenant = entry.tenant_id
            for target in self.targets:
                partition = partition_of(target.name, tenant, entry.period)
                if partition in self._done:
                    continue
                if tenant not in records:
                    records[tenant] = self.record(tenant)
                link = target.link(records[tenant])
                if link is None and partition in self._nothing:
                    continue
                part = _Part(target, entry, partition, link)
                part.etag, part.state = self.rows.state(partition)
                if part.state is None and link is None:
                    self._nothing.add(partition)
                    continue
                self._nothing.discard(partition)
                if part.state is not None and part.state.done:
                    self._done.add(partition)
                    continue
                parts.append(part)
        return parts

    # -- sending ----------------------------------------------------------------------------------------------

    def _send_open(self, parts: Sequence[_Part], now: datetime, report: RunReport, deadline: float) -> None:
        candidates: dict[str, list[tuple[_Part, Stored]]] = {}
        for part in parts:
            if part.state is None or not part.state.open:
                continue
            found = self.rows.read(part.partition, part.state.open)
            for key in part.state.open:
                stored = found.get(key)
                if stored is None or not stored.intent.status.is_open:
                    continue
                intent = stored.intent
                if intent.lease_until is not None and intent.lease_until > now:
                    continue  # another exporter has it (or had it, and died: the lease runs out)
                if intent.next_attempt is not None and intent.next_attempt > now:
                    continue
                candidates.setdefault(part.target.name, []).append((part, stored))
        for items in candidates.values():
            for start in range(0, len(items), _SLICE):
                if time.monotonic() > deadline:
                    log.warning("exports: the run's budget is spent; %d intents wait for the next run", len(items))
                    return
                due = [
                    claimed
                    for part, stored in items[start : start + _SLICE]
                    if (claimed := self._claim(part, stored, now))
                ]
                self._send(due, report)

    def _claim(self, part: _Part, stored: Stored, now: datetime) -> _Due | None:
        intent = stored.intent
        first = intent.first_sent
        reconcile = first is not None and now - first >= part.target.resend_window
        claimed = intent.model_copy(
            update={"lease_until": now + self.lease, "attempts": intent.attempts + 1, "first_sent": first or now}
        )
        etag = self.rows.claim(part.partition, stored, claimed)
        return None if etag is None else _Due(part, Stored(etag, claimed), reconcile)

    def _send(self, due: Sequence[_Due], report: RunReport) -> None:
        if not due:
            return
        target = due[0].part.target
        sending = [item for item in due if not item.reconcile]
        checking = [item for item in due if item.reconcile]
        outcomes: list[tuple[_Due, Outcome]] = []
        if sending:
            outcomes += zip(sending, target.send([item.stored.intent for item in sending]), strict=True)
        if checking:
            held = [self._held(item) for item in checking]
            outcomes += zip(checking, target.reconcile([item.stored.intent for item in checking], held), strict=True)
        for item, outcome in outcomes:
            self._settle(item, outcome, self.clock(), report)

    def _held(self, item: _Due) -> Decimal:
        intent = item.stored.intent
        return acked_total(self.rows.of_key(item.part.partition, intent.meter, intent.slot))

    def _settle(self, item: _Due, outcome: Outcome, now: datetime, report: RunReport) -> None:
        part, stored = item.part, item.stored
        intent = stored.intent
        if outcome.answer in (Answer.RETRY, Answer.UNRESOLVED):
            report.failed += 1
            later = intent.model_copy(
                update={
                    "lease_until": None,
                    "next_attempt": now + retry_delay(intent.attempts),
                    "last_error": outcome.error,
                }
            )
            self.rows.claim(part.partition, stored, later)
            log.warning(
                "exports: %s %s not settled (%s): %s", part.target.label, intent.key, outcome.answer, outcome.error
            )
            return
        status = {
            Answer.ACKED: IntentStatus.ACKED,
            Answer.REFUSED: IntentStatus.REFUSED,
            Answer.EXPIRED: IntentStatus.EXPIRED,
            Answer.LOST: IntentStatus.LOST,
        }[outcome.answer]
        settled = intent.model_copy(
            update={
                "status": status,
                "accepted": outcome.accepted if status is IntentStatus.ACKED else None,
                "last_error": outcome.error,
                "lease_until": None,
                "next_attempt": None,
                "settled_at": now,
            }
        )
        for _attempt in range(10):
            state = part.state
            assert state is not None
            # An intent not acknowledged leaves its slot to be looked at again: its value goes in the next one
            # (expired, lost), or waits for a change (refused).
            hours = set(state.hours) if status is IntentStatus.ACKED else {*state.hours, intent.slot}
            updated = state.model_copy(
                update={"open": [key for key in state.open if key != intent.key], "hours": sorted(hours), "done": False}
            )
            assert part.etag is not None
            try:
                part.etag = self.rows.settle(part.partition, settled, stored.etag, updated, part.etag)
            except CommitConflict:
                current = self.rows.read(part.partition, [intent.key]).get(intent.key)
                if current is None or current.etag != stored.etag:
                    return  # another exporter took it over once the lease ran out: it settles it
                part.etag, part.state = self.rows.state(part.partition)
                continue
            part.state = updated
            break
        else:
            log.error("exports: could not record %s of %s: its state kept changing", outcome.answer, intent.key)
            return
        if status is IntentStatus.ACKED:
            report.sent += 1
        elif status is IntentStatus.REFUSED:
            report.failed += 1
            log.error(
                "exports: %s refused %s (%s %s): %s; reported as a difference until something changes",
                part.target.label,
                intent.identifier,
                intent.meter,
                intent.slot,
                outcome.error,
            )

    # -- planning the next differences --------------------------------------------------------------------------

    def _plan(self, part: _Part, now: datetime, settled_until: datetime) -> None:
        if part.link is None:
            return  # unlinked: what is open is still sent, nothing new
        target, entry = part.target, part.entry
        tenant, period = entry.tenant_id, entry.period
        meters = [m for m in self.catalog.meters.values() if target.metric_name(m) is not None]
        state = part.state or ExportState.new(tenant, period)
        changes = self.reader.changes(tenant, period, state.seen)
        everything = changes.hours is None
        look = set(state.hours) | (changes.hours or set())
        if changes.token != state.seen:
            look.add(PERIOD_SLOT)
        if not meters or (not look and not everything):
            if changes.closed and not state.open and not state.hours and part.state is not None:
                self._write(part, state.model_copy(update={"done": True}), [])
            return
        hourly = [m for m in meters if target.hourly(m)]
        by_period = [m for m in meters if not target.hourly(m)]
        hours = {h for h in look if h != PERIOD_SLOT}
        cells = self.reader.hour_cells(tenant, period, None if everything else hours) if hourly else {}
        if everything:
            hours |= {hour for per_hour in cells.values() for hour in per_hour}
            look.add(PERIOD_SLOT)
        plan = _Plan(now, settled_until, set(state.open))
        if hourly:
            self._plan_hours(part, hourly, hours, cells, plan)
        if PERIOD_SLOT in look and by_period:
            self._plan_period(part, by_period, changes.cells, plan)
        final = state.model_copy(
            update={
                "seen": changes.token,
                "hours": sorted(plan.keep),
                "open": [*state.open, *(intent.key for intent in plan.intents)],
                "done": changes.closed and not plan.keep and not state.open and not plan.intents,
            }
        )
        self._write(part, final, plan.intents, interim=state.model_copy(update={"hours": sorted(look)}))

    def _plan_hours(
        self,
        part: _Part,
        meters: Sequence[Meter],
        hours: set[str],
        cells: dict[str, dict[str, Cell]],
        plan: _Plan,
    ) -> None:
        period = part.entry.period
        for hour in sorted(hours):
            start, end = values.slot_bounds(period, hour)
            if end <= start:
                continue
            if end > plan.settled_until:
                plan.keep.add(hour)
                continue
            for meter in meters:
                cell = cells.get(meter.name, {}).get(hour)
                if cell is None:
                    # No usage ever in that hour (a cell, once written, stays, at zero after a cancel): no intent
                    # of the key can exist, and none is due. Its intents are not read.
                    continue
                figure = _value(cell)
                self._next(
                    part,
                    meter=meter,
                    slot=hour,
                    figure=figure,
                    included=decimals.ZERO,
                    plan=plan,
                )

    def _plan_period(
        self,
        part: _Part,
        meters: Sequence[Meter],
        totals: dict[str, Cell],
        plan: _Plan,
    ) -> None:
        tenant, period = part.entry.tenant_id, part.entry.period
        unsettled = self._unsettled(tenant, part.entry, plan.settled_until, plan.now, meters)
        # One read of the tenant's plan for every meter (it is read from the store, not a cache).
        prices = self.pricing(tenant, period.end).prices
        for meter in meters:
            total = totals.get(meter.name)
            if total is None:
                continue  # no usage of the meter in the period: nothing was sent nor is due (as for an hour)
            figure = _value(total)
            if values.is_additive(meter):
                waiting = unsettled.get(meter.name, decimals.ZERO)
                if waiting:
                    plan.keep.add(PERIOD_SLOT)  # looked at again once those hours settle
                figure = decimals.subtract(figure, waiting)
            price = prices.get(meter.name)
            included = price.included if price is not None else decimals.ZERO
            self._next(part, meter=meter, slot=PERIOD_SLOT, figure=figure, included=included, plan=plan)

    def _unsettled(
        self, tenant: str, entry: IndexedPeriod, settled_until: datetime, now: datetime, meters: Sequence[Meter]
    ) -> dict[str, Decimal]:
        """Per additive meter, what its hours not settled yet hold: left out of the period figure until they are."""
        period = entry.period
        if not any(values.is_additive(m) for m in meters):
            return {}
        hours = [
            h
            # To an hour past now: events may be stamped a few minutes ahead.
            for h in values.hours_between(max(settled_until, period.start), min(now + values.HOUR, period.end))
            if values.slot_bounds(period, h)[1] > settled_until
        ]
        waiting: dict[str, Decimal] = {}
        for metric, per_hour in self.reader.hour_cells(tenant, period, hours).items():
            for cell in per_hour.values():
                waiting[metric] = decimals.add(waiting.get(metric, decimals.ZERO), cell.value)
        return waiting

    def _next(
        self,
        part: _Part,
        *,
        meter: Meter,
        slot: str,
        figure: Decimal,
        included: Decimal,
        plan: _Plan,
    ) -> None:
        """The next intent of one key, if its previous one is settled and the target's figure differs."""
        target, period = part.target, part.entry.period
        intents = self.rows.of_key(part.partition, meter.name, slot)
        now = plan.now
        if any(stored.intent.status.is_open or stored.intent.key in plan.open_keys for stored in intents):
            plan.keep.add(slot)  # computed again once that one is settled
            return
        held = acked_total(intents)
        value = target.exact(decimals.subtract(target.billable(figure, included), held))
        if not value or (value < 0 and not target.takes_decreases):
            return  # nothing to send, or a fall the target cannot take (the reconciliation reports it)
        assert part.link is not None
        name = target.metric_name(meter)
        assert name is not None
        last = intents[-1].intent if intents else None
        if last is not None and last.status is IntentStatus.REFUSED and last.value == value and last.link == part.link:
            plan.keep.add(slot)  # refused as it would be sent again: wait until the figure or the link changes
            return
        stamp: Stamp | None
        if slot == PERIOD_SLOT:
            used = {s.intent.hour for s in intents if s.intent.status is IntentStatus.ACKED}
            stamp = target.stamp_increase(period, used, now)
            window = (period.start, period.end)
            if stamp is None:
                plan.keep.add(slot)
                return
        else:
            stamp = target.stamp_hour(period, slot, now)
            window = values.slot_bounds(period, slot)
            if stamp is None:
                return  # too old for the target (the reconciliation reports it)
        revision = len(intents)
        tenant = part.entry.tenant_id
        plan.intents.append(
            Intent(
                target=target.name,
                tenant_id=tenant,
                meter=meter.name,
                period=period.key,
                slot=slot,
                revision=revision,
                identifier=identifier(
                    target.name, tenant, meter=meter.name, period=period.key, slot=slot, revision=revision
                ),
                value=value,
                hour=stamp.hour,
                timestamp=stamp.timestamp,
                window_start=window[0],
                window_end=window[1],
                name=name,
                link=dict(part.link),
                created=now,
            )
        )

    def _write(
        self, part: _Part, final: ExportState, intents: Sequence[Intent], interim: ExportState | None = None
    ) -> None:
        """Create the intents with the state that lists them, a transaction's worth at a time. Every commit but the
        last keeps the usage token and the hours to look at as they were (`interim`), so an exporter that stops
        halfway looks at them again. Another exporter's write first: it did this work, leave it to it."""
        chunks = [intents[i : i + MAX_INTENTS_PER_COMMIT] for i in range(0, len(intents), MAX_INTENTS_PER_COMMIT)]
        listed = list(final.open[: len(final.open) - len(intents)])
        try:
            for index, chunk in enumerate(chunks or [[]]):
                listed += [intent.key for intent in chunk]
                if index == max(len(chunks) - 1, 0):
                    state = final
                else:
                    state = (interim or final).model_copy(update={"open": list(listed), "done": False})
                part.etag = self.rows.write_state(part.partition, state, part.etag, chunk)
                part.state = state
        except CommitConflict:
            log.info("exports: %s was written by another exporter meanwhile; left to it", part.partition)
            part.etag, part.state = self.rows.state(part.partition)
            return
        if final.done:
            self._done.add(part.partition)


def _value(cell: Cell | None) -> Decimal:
    return decimals.ZERO if cell is None else cell.value
