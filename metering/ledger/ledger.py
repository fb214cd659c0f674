"""Applying batches of usage events to a store exactly once.

For each store partition the ledger writes chunks of events in one atomic commit each: the chunk's dedupe
markers (created, never upserted), its distinct-value markers, the day and group rows its deltas change and the
period state row, all ETag-guarded. A commit that meets a marker already there or a row changed by someone else
fails as a whole; the ledger then re-reads, drops what is already applied and tries again.

What it learns stays in a per-instance cache: the rows and ETags its own commits returned, the markers it wrote
and the hub positions each partition has applied. In steady state (one aggregator per hub partition, as Event
Hubs assigns them) a batch costs no reads at all, and a redelivered batch costs one read per partition at most.
Invocations may run on several threads of one instance: each partition's cache is used under its own lock.

With several shards, an event applied away from its key shard (placement.py) goes in two steps: first its claim
in the key shard, committed like a marker (with that shard's other events); then, only for the claims that are
this payload's (created now, or met with the same payload and shard), the event itself in its applying shard,
under its own marker there. A claim met with another payload is a conflict, so the event is not applied. A crash
between the two steps leaves a claim without its application, which the redelivery completes: it meets its own
claim, and the applying shard's marker decides whether the event is counted yet. So a dedupe key is counted at
most once in any shard, and only with the payload that took its key shard first.

A commit the store refuses for what it holds (`StoreRejected`: too large, a value it cannot take) would fail the
same way on every delivery and stall the hub partition. So the ledger bisects the chunk until the events that
cause it stand alone, commits all the others, and returns those as rejected (the consumer dead-letters them with
the store's reason). They are never recorded as applied hub positions, so a redelivery judges them again. When the
rejected events are more than a small share of the batch, the fault is systematic, not an odd event: the batch
fails as a whole (`SystematicRejection`) and is retried, rather than emptying the hub into the dead letters.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from metering.core.clock import Clock, format_timestamp, utc_now
from metering.core.hub import contiguous_ranges
from metering.core.meters import MeterCatalog
from metering.core.periods import PeriodSchedule
from metering.ledger import commit, control, levels, rows
from metering.ledger.batch import (
    BatchPlan,
    Conflict,
    PlannedEvent,
    Rejected,
    SourcedEvent,
    chunk_deltas,
    payload_hash,
    plan_batch,
)
from metering.ledger.keys import STATE_ROW, UNIQUES, conflict_key, day_row_key, partition_key, resource_key
from metering.ledger.placement import value_shard
from metering.ledger.reader import end_levels_in
from metering.ledger.rows import Marker, StateRow
from metering.stores import MAX_TRANSACTION_OPS, CommitConflict, ContentionError, Row, Store, StoreRejected

log = logging.getLogger(__name__)


class SystematicRejection(RuntimeError):
    """The store refused more of a batch's events than an odd event explains: a fault of the store or of this
    code, not of the events. The batch fails and is retried (and an operator alerted) instead of dead-lettered."""


# The share of a batch's distinct events the store may refuse before the refusal counts as systematic; at least
# one event always may, so a single odd event never stalls a small batch.
POISON_SHARE = 0.01


def poison_allowance(events: int, share: float = POISON_SHARE) -> int:
    return max(1, int(events * share))


@dataclass(slots=True)
class ApplyResult:
    applied: int = 0
    duplicates: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    late: list[PlannedEvent] = field(default_factory=list)
    commits: int = 0
    retries: int = 0
    # Each touched partition's state after the batch (None: the partition has none), for threshold alerts.
    states: dict[str, tuple[PlannedEvent, StateRow | None]] = field(default_factory=dict)
    # The claims (partition + marker) found or made for this payload: only their events are applied.
    claimed: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Known:
    """What this instance knows of one store partition. Rows map to None when known to be absent.

    `uniques` holds distinct-value rows the same way. `all_uniques` means it holds every one of them: they are
    only written by commits that also rewrite the state row under its ETag, so this stays true as long as this
    instance's commits succeed; a failed one (someone else wrote) ends it.
    """

    rows: dict[str, Row | None] = field(default_factory=dict)
    markers: dict[str, str] = field(default_factory=dict)
    uniques: dict[str, Row | None] = field(default_factory=dict)
    all_uniques: bool = False
    uniques_loaded: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(slots=True)
class _Refusals:
    """The events of one batch the store refused, against the batch's allowance."""

    allowance: int
    keys: set[str] = field(default_factory=set)

    def refuse(self, planned: PlannedEvent, rejection: StoreRejected, result: ApplyResult) -> None:
        self.keys.add(planned.partition + planned.marker)
        log.warning("event %s of %s refused by the store: %s", planned.event.dedupe_key, planned.partition, rejection)
        if len(self.keys) > self.allowance:
            log.error(
                "aggregate: the store refused %d distinct events of one batch (allowed %d): a systematic fault, so "
                "the batch fails and will be retried (alert on this): %s",
                len(self.keys),
                self.allowance,
                rejection,
            )
            raise SystematicRejection(
                f"the store refused {len(self.keys)} events of one batch, more than {self.allowance}: {rejection}"
            ) from rejection
        reason = f"the store refused its commit ({rejection})"
        result.rejected.append(Rejected(SourcedEvent(planned.event, planned.position), reason))


class Ledger:
    def __init__(
        self,
        store: Store,
        catalog: MeterCatalog,
        schedule: PeriodSchedule,
        *,
        max_ops: int = MAX_TRANSACTION_OPS,
        clock: Clock = utc_now,
        max_attempts: int = 12,
        cached_partitions: int = 4096,
        cached_markers: int = 50_000,
        poison_share: float = POISON_SHARE,
    ) -> None:
        if not 8 <= max_ops <= MAX_TRANSACTION_OPS:
            raise ValueError(f"max_ops must be between 8 and {MAX_TRANSACTION_OPS}")
        self.store = store
        self.catalog = catalog
        self.schedule = schedule
        self.max_ops = max_ops
        self.clock = clock
        self.max_attempts = max_attempts
        self._cached_partitions = cached_partitions
        self._cached_markers = cached_markers
        self.poison_share = poison_share
        self._known: OrderedDict[str, _Known] = OrderedDict()
        self._lock = threading.Lock()

    def plan(self, items: Iterable[SourcedEvent]) -> BatchPlan:
        return plan_batch(items, self.catalog, self.schedule)

    def apply(self, items: Sequence[SourcedEvent], ranges: Mapping[str, tuple[int, int]] | None = None) -> ApplyResult:
        """Apply a batch exactly once. `ranges` are the hub ranges the batch holds completely (by default
        derived from the events' positions); a store failure raises and nothing past the last commit counts."""
        if ranges is None:
            hub_ranges = contiguous_ranges(item.position for item in items if item.position is not None)
        else:
            hub_ranges = dict(ranges)
        return self.apply_plan(self.plan(items), hub_ranges)

    def apply_plan(
        self, plan: BatchPlan, hub_ranges: Mapping[str, tuple[int, int]], *, allowance: int | None = None
    ) -> ApplyResult:
        """Apply a plan; `allowance` is how many distinct events the store may refuse before the refusal is
        systematic (by default a share of the plan's events)."""
        result = ApplyResult(rejected=list(plan.rejected))
        if allowance is None:
            planned = sum(map(len, plan.partitions.values())) + sum(map(len, plan.repeats.values()))
            allowance = poison_allowance(planned + len(plan.rejected), self.poison_share)
        refusals = _Refusals(allowance)
        for partition, listed in plan.partitions.items():
            repeats = plan.repeats.get(partition, [])
            self._apply_listed(partition, listed, repeats, hub_ranges=hub_ranges, result=result, refusals=refusals)
        # The events applied away from their key shard, once their claims are settled: only this payload's.
        settled: dict[str, list[PlannedEvent]] = {}
        for planned in plan.claimed:
            if f"{planned.claimed_in}{planned.marker}" in result.claimed:
                settled.setdefault(planned.partition, []).append(planned)
        for partition, listed in settled.items():
            self._apply_listed(partition, listed, [], hub_ranges={}, result=result, refusals=refusals)
        return result

    def _apply_listed(
        self,
        partition: str,
        listed: list[PlannedEvent],
        repeats: list[PlannedEvent],
        *,
        hub_ranges: Mapping[str, tuple[int, int]],
        result: ApplyResult,
        refusals: _Refusals,
    ) -> None:
        # Each entity at most once per transaction: a second occurrence of a marker in a partition's list (a
        # caller's own plan may hold one, e.g. a late event received twice) is judged as a repeat.
        events, repeats = commit.first_occurrences(listed, repeats)
        known = self._partition(partition)
        with known.lock:
            ranges = commit.held_back(hub_ranges, repeats)
            self._apply_partition(partition, known, events, hub_ranges=ranges, result=result, refusals=refusals)
            if repeats:
                # Their first occurrences are settled now, so each repeat meets the payload that counted.
                self._apply_partition(partition, known, repeats, hub_ranges={}, result=result, refusals=refusals)
            state = known.rows.get(STATE_ROW)
        result.states[partition] = (events[0], StateRow(state.data) if state is not None else None)

    # -- one store partition -------------------------------------------------------------------------------

    def _apply_partition(
        self,
        partition: str,
        known: _Known,
        events: list[PlannedEvent],
        *,
        hub_ranges: Mapping[str, tuple[int, int]],
        result: ApplyResult,
        refusals: _Refusals,
    ) -> None:
        touched = {STATE_ROW}
        for planned in events:
            touched |= commit.row_keys(planned)
        fresh_state = STATE_ROW not in known.rows
        self._learn_rows(partition, known, touched)
        state = known.rows[STATE_ROW]
        view = StateRow(state.data) if state is not None else None
        if view is not None and view.is_closed:
            self._late(partition, known, events, result)
            return
        if state is None:
            first = events[0]
            if first.period.end <= self.clock() and self._closed_by_now(first.period.end):
                # The closer has passed this period (it had no partition then): it is closed, its events late.
                result.late.extend(events)
                return
            # The closer finds periods through this index: it names every partition before its state row exists.
            control.index_open(self.store.control, first.event.tenant_id, first.period)
        if fresh_state and state is None:
            known.all_uniques = True  # a partition without a state row has no distinct-value markers either
        elif not known.all_uniques and any(planned.unique for planned in events):
            self._learn_uniques(partition, known)
        pending: list[PlannedEvent] = []
        for planned in events:
            position = planned.hub_position
            if position is not None and view is not None and view.covers(position):
                result.duplicates += 1
            elif not self._is_known_applied(planned, known, result):
                pending.append(planned)
        self._commit_all(
            partition,
            known,
            events,
            commit.chunks(pending, self.max_ops),
            hub_ranges=hub_ranges,
            result=result,
            refusals=refusals,
        )

    def _commit_all(
        self,
        partition: str,
        known: _Known,
        events: list[PlannedEvent],
        chunks: list[list[PlannedEvent]],
        *,
        hub_ranges: Mapping[str, tuple[int, int]],
        result: ApplyResult,
        refusals: _Refusals,
    ) -> None:
        """Commit the chunks in order; a chunk the store refuses is bisected until the events it refuses stand
        alone, and those are set aside."""
        queue = deque(chunks)
        refused: list[PlannedEvent] = []
        while queue:
            chunk = queue.popleft()
            # Refused events stay pending for the hub ranges: a redelivery must judge them again.
            coverage = commit.coverage(events, [*queue, refused], hub_ranges)
            try:
                self._commit_chunk(partition, known, chunk, coverage, result)
            except StoreRejected as rejection:
                if len(chunk) > 1:
                    half = len(chunk) // 2
                    queue.extendleft([chunk[half:], chunk[:half]])
                    continue
                refused.extend(chunk)
                refusals.refuse(chunk[0], rejection, result)

    def _late(self, partition: str, known: _Known, events: list[PlannedEvent], result: ApplyResult) -> None:
        """Events of a closed period: those already counted before it closed are duplicates (their markers
        outlive the close), the others are late and go back to the caller, never into the void."""
        state = known.rows[STATE_ROW]
        view = StateRow(state.data) if state is not None else None
        unsure = [p for p in events if not (p.hub_position and view and view.covers(p.hub_position))]
        result.duplicates += len(events) - len(unsure)
        markers = self.store.usage.read(partition, [p.marker for p in unsure if p.marker not in known.markers])
        for row in markers.values():
            known.markers[row.key] = Marker(row.data).identity
        result.late.extend(p for p in unsure if not self._is_known_applied(p, known, result))

    def _closed_by_now(self, end: datetime) -> bool:
        through = control.closed_through(self.store.control)
        return through is not None and end <= through

    def _is_known_applied(self, planned: PlannedEvent, known: _Known, result: ApplyResult) -> bool:
        """Whether the event's marker is known: its own (a duplicate, or for a claim: this payload's, to apply), or
        another payload's (a conflict)."""
        first = known.markers.get(planned.marker)
        if first is None:
            return False
        if first == planned.identity:
            if planned.claim:
                result.claimed.add(planned.partition + planned.marker)
            else:
                result.duplicates += 1
        else:
            # The payload that holds the key, without the shard a claim names.
            held = first.partition(">")[0]
            self._record_conflicts(
                [Conflict(planned.event.tenant_id, planned.event.dedupe_key, held, planned.event)], result
            )
        return True

    def _commit_chunk(
        self,
        partition: str,
        known: _Known,
        chunk: list[PlannedEvent],
        coverage: Mapping[str, tuple[int, int]],
        result: ApplyResult,
    ) -> None:
        for _attempt in range(self.max_attempts):
            if not chunk:
                return
            deltas = chunk_deltas(chunk)
            self._learn_rows(partition, known, [STATE_ROW, *deltas.row_keys()])
            state = known.rows[STATE_ROW]
            if state is not None and StateRow(state.data).is_closed:
                self._late(partition, known, chunk, result)
                return
            moving = commit.moving_day(state, deltas)
            if moving is not None:
                self._learn_rows(partition, known, [day_row_key(moving)])
            self._learn_uniques_of(partition, known, deltas.uniques)
            placed = self._place_levels(partition, known, chunk)
            operations = commit.operations(
                chunk=chunk,
                deltas=deltas,
                state=state,
                day_rows=known.rows,
                uniques=known.uniques,
                meters=self.catalog.meters,
                coverage=coverage,
                now=format_timestamp(self.clock()),
                levels=placed,
            )
            try:
                etags = self.store.usage.commit(partition, [op for op, _ in operations])
            except CommitConflict as conflict:
                result.retries += 1
                log.debug("commit to %s met a conflict (%s); re-reading", partition, conflict.reason)
                self._refresh(partition, known, chunk, result)
                continue
            for (op, kind), etag in zip(operations, etags, strict=True):
                if kind == commit.ROW:
                    known.rows[op.key] = Row(op.key, etag, op.data)
                elif kind == commit.UNIQUE:
                    known.uniques[op.key] = Row(op.key, etag, op.data)
            for planned in chunk:
                known.markers[planned.marker] = planned.identity
                if planned.claim:
                    result.claimed.add(partition + planned.marker)
                else:
                    result.applied += 1
            self._trim(known)
            result.commits += 1
            return
        raise ContentionError(f"gave up on partition {partition} after {self.max_attempts} conflicting commits")

    def _place_levels(self, partition: str, known: _Known, chunk: list[PlannedEvent]) -> levels.LevelChanges | None:
        """The chunk's time-weighted points between their neighbours, reading the rows that names (at most a
        resource row round, a points round and a history-bucket round)."""
        if not levels.level_events(chunk):
            return None
        tenant = chunk[0].event.tenant_id
        schedule = self.schedule
        locate = levels.day_locator(
            lambda instant: schedule.day_of(tenant, instant).isoformat(),
            lambda day: schedule.day_bounds(tenant, date.fromisoformat(day))[1],
        )
        state = known.rows.get(STATE_ROW)
        carried = state is not None and StateRow(state.data).carried
        for _round in range(4):
            placed = levels.place(chunk, known.rows, locate, opening_of=self._level_before, carried=carried)
            if isinstance(placed, levels.LevelChanges):
                return placed
            self._learn_rows(partition, known, placed.keys)
        raise AssertionError("placing points kept naming rows it had been given")

    def _level_before(self, planned: PlannedEvent) -> Decimal:
        """A resource's level at the end of the previous period, read through from its row there (its last point,
        or the level it opened with): asked once per resource and period, before the closer carries it."""
        tenant = planned.event.tenant_id
        previous = self.schedule.period_at(tenant, planned.period.start - timedelta(microseconds=1))
        shards = self.schedule.shards(tenant, previous)
        resource = planned.resource or ""
        shard = value_shard(planned.meter, resource, shards) if shards > 1 else 0
        key = resource_key(planned.meter.name, resource)
        return end_levels_in(self.store.usage, partition_key(tenant, previous, shard), [key])[key]

    # -- what the store holds ------------------------------------------------------------------------------

    def _partition(self, partition: str) -> _Known:
        with self._lock:
            known = self._known.get(partition)
            if known is None:
                known = self._known[partition] = _Known()
                while len(self._known) > self._cached_partitions:
                    self._known.popitem(last=False)
            else:
                self._known.move_to_end(partition)
            return known

    def _learn_rows(self, partition: str, known: _Known, keys: Iterable[str]) -> None:
        unknown = [key for key in keys if key not in known.rows]
        if not unknown:
            return
        found = self.store.usage.read(partition, unknown)
        for key in unknown:
            known.rows[key] = found.get(key)

    def _learn_uniques(self, partition: str, known: _Known) -> None:
        """Load the partition's distinct-value rows once, if there are not too many to hold."""
        if known.uniques_loaded:
            return
        known.uniques_loaded = True
        found = self.store.usage.range(partition, *UNIQUES, limit=self._cached_markers + 1)
        if len(found) <= self._cached_markers:
            known.uniques.update((row.key, row) for row in found)
            known.all_uniques = True

    def _learn_uniques_of(self, partition: str, known: _Known, candidates: Mapping[str, Any]) -> None:
        if known.all_uniques:
            return
        unknown = [key for key in candidates if key not in known.uniques]
        if unknown:
            found = self.store.usage.read(partition, unknown)
            for key in unknown:
                known.uniques[key] = found.get(key)

    def _refresh(self, partition: str, known: _Known, chunk: list[PlannedEvent], result: ApplyResult) -> None:
        """After a failed commit: forget the rows (their ETags may be stale), learn which markers exist, and
        drop the chunk's events that are already applied."""
        known.rows.clear()
        known.uniques.clear()
        known.all_uniques = known.uniques_loaded = False
        markers = self.store.usage.read(partition, [p.marker for p in chunk])
        for row in markers.values():
            known.markers[row.key] = Marker(row.data).identity
        chunk[:] = [p for p in chunk if not self._is_known_applied(p, known, result)]

    def _trim(self, known: _Known) -> None:
        # Forgetting a marker only costs a failed commit if its event comes again; memory stays bounded.
        if len(known.markers) > self._cached_markers:
            for key in list(known.markers)[: self._cached_markers // 2]:
                del known.markers[key]
        if len(known.uniques) > self._cached_markers:
            known.uniques.clear()
            known.all_uniques = False
            known.uniques_loaded = True  # too many to hold: look them up per chunk from now on

    def _record_conflicts(self, conflicts: Iterable[Conflict], result: ApplyResult) -> None:
        """Conflicts are written before the commit that leaves their event out, so none goes unreported."""
        for conflict in conflicts:
            event = conflict.event
            key = conflict_key(event.tenant_id, conflict.dedupe_key, payload_hash(event))
            detected = format_timestamp(self.clock())
            self.store.conflicts.upsert(event.tenant_id, key, rows.conflict_row(conflict, detected))
            result.conflicts.append(conflict)
