"""Planning the commits of one store partition (pure: no I/O): which events go in which commit, and the
operations each commit writes.

A commit holds a chunk of events: their dedupe markers (created, never upserted; a claim's marker for an event
applied in another shard), their new distinct values, the day rows their deltas change and the period state row,
each entity at most once, at most `max_ops` of them.
What the operations are built from (the rows as last read or written, with their ETags) is given by the
caller, the ledger, which does the reading and the writing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from metering.core.meters import Meter
from metering.ledger import rows
from metering.ledger.batch import ChunkDeltas, PlannedEvent
from metering.ledger.keys import STATE_ROW, day_row_key, level_buckets_key, points_key, resource_key
from metering.ledger.levels import LevelChanges
from metering.ledger.rows import StateRow
from metering.stores import Create, Operation, Replace, Row

# What each operation of a commit writes: a marker, a distinct value or an aggregate row (day or state).
MARKER, UNIQUE, ROW = "marker", "unique", "row"


def first_occurrences(
    listed: Sequence[PlannedEvent], repeats: Sequence[PlannedEvent]
) -> tuple[list[PlannedEvent], list[PlannedEvent]]:
    """A partition's events without a second occurrence of a marker (a caller's own plan may hold one, e.g. a
    late event received twice), and every repeat: each entity at most once per transaction."""
    seen: set[str] = set()
    first: list[PlannedEvent] = []
    later: list[PlannedEvent] = []
    for planned in listed:
        if planned.marker in seen:
            later.append(planned)
        else:
            seen.add(planned.marker)
            first.append(planned)
    return first, [*later, *repeats] if later else list(repeats)


def held_back(hub_ranges: Mapping[str, tuple[int, int]], repeats: Sequence[PlannedEvent]) -> dict[str, tuple[int, int]]:
    """Hub ranges cut short before the first in-batch repeat: a repeat is judged after the commits, so no
    commit may record it as applied (a redelivery must judge it again if this one stops before it)."""
    ranges = dict(hub_ranges)
    for planned in repeats:
        position = planned.hub_position
        if position is not None and position.partition in ranges:
            lo, hi = ranges[position.partition]
            ranges[position.partition] = (lo, min(hi, position.sequence - 1))
    return {partition: (lo, hi) for partition, (lo, hi) in ranges.items() if hi >= lo}


def row_keys(planned: PlannedEvent) -> set[str]:
    """The aggregate rows an event's deltas may change besides the state row (a claim changes none). A point of a
    time_weighted meter also writes its resource row, its own UTC day's points and its day's history buckets."""
    if planned.claim:
        return set()
    if planned.resource is None:
        return {day_row_key(planned.day)}
    name, resource = planned.meter.name, planned.resource
    return {
        day_row_key(planned.day),
        resource_key(name, resource),
        points_key(name, resource, planned.hour[:10]),
        level_buckets_key(name, planned.day),
    }


def _unknown_rows(planned: PlannedEvent) -> int:
    """Rows an event may write that only its neighbours name: a point's next neighbour ends its level, which is a
    step in that neighbour's day's history buckets."""
    return 1 if planned.resource is not None and not planned.claim else 0


def chunks(events: Sequence[PlannedEvent], max_ops: int) -> list[list[PlannedEvent]]:
    """Greedy chunks whose operations (markers, new distinct values, rows, the state row) fit one commit,
    each entity at most once. (A chunk of claims alone needs no state row: one operation of slack.)"""
    found: list[list[PlannedEvent]] = []
    current: list[PlannedEvent] = []
    keys: set[str] = set()
    uniques: set[str] = set()
    unknown = 0
    for planned in events:
        needs_rows = row_keys(planned)
        needs_uniques = {planned.unique} if planned.unique else set()
        used = 1 + len(current) + len(keys) + len(uniques) + unknown
        extra = 1 + len(needs_rows - keys) + len(needs_uniques - uniques) + _unknown_rows(planned)
        if current and used + extra > max_ops:
            found.append(current)
            current, keys, uniques, unknown = [], set(), set(), 0
        current.append(planned)
        unknown += _unknown_rows(planned)
        keys |= needs_rows
        uniques |= needs_uniques
    if current:
        found.append(current)
    return found


def coverage(
    events: Sequence[PlannedEvent],
    later_chunks: Sequence[Sequence[PlannedEvent]],
    hub_ranges: Mapping[str, tuple[int, int]],
) -> dict[str, tuple[int, int]]:
    """The hub ranges whose events for this partition are all applied once the current chunk commits."""
    if not hub_ranges:
        return {}
    first_pending: dict[str, int] = {}
    for chunk in later_chunks:
        for planned in chunk:
            position = planned.hub_position
            if position is not None and position.partition in hub_ranges:
                seq = first_pending.get(position.partition)
                if seq is None or position.sequence < seq:
                    first_pending[position.partition] = position.sequence
    present = {position.partition for p in events if (position := p.hub_position) is not None}
    covered: dict[str, tuple[int, int]] = {}
    for partition, (lo, hi) in hub_ranges.items():
        if partition not in present:
            continue
        pending = first_pending.get(partition)
        top = hi if pending is None else min(hi, pending - 1)
        if top >= lo:
            covered[partition] = (lo, top)
    return covered


def moving_day(state: Row | None, deltas: ChunkDeltas) -> str | None:
    """The day whose block leaves the state row for its day row in this chunk, if a later day arrives."""
    today = StateRow(state.data).today if state is not None else None
    if today is not None and deltas.days and max(deltas.days) > today.day:
        return today.day
    return None


def write(key: str, data: dict[str, Any], old: Row | None) -> Operation:
    """Create a row that is not there, or replace it under the ETag it was read with."""
    return Replace(key, data, old.etag) if old is not None else Create(key, data)


def operations(
    *,
    chunk: Sequence[PlannedEvent],
    deltas: ChunkDeltas,
    state: Row | None,
    day_rows: Mapping[str, Row | None],
    uniques: Mapping[str, Row | None],
    meters: Mapping[str, Meter],
    coverage: Mapping[str, tuple[int, int]],
    now: str,
    levels: LevelChanges | None = None,
) -> list[tuple[Operation, str]]:
    """A chunk's commit, each operation with what it writes (MARKER, UNIQUE or ROW). `day_rows` must hold every
    day row the chunk touches and the moving day's (None where there is none), `uniques` the distinct-value rows
    known (a value not in it is new to the period)."""
    ops: list[tuple[Operation, str]] = [
        (Create(p.marker, rows.claim_row(p, now) if p.claim else rows.marker_row(p, now)), MARKER) for p in chunk
    ]
    if all(p.claim for p in chunk):
        # Claims change no total, so they leave the state row alone: the aggregator of the shard they are in
        # (which is writing that row) never meets them as a conflict. A claim the closer overtakes is harmless:
        # its event is counted, or filed late, by the shard that applies it.
        return ops
    new_in_period: Counter[str] = Counter()
    new_by_day: dict[str, Counter[str]] = {}
    for key, met in deltas.uniques.items():
        name = met.meter.name
        row = uniques.get(key)
        seen_on = rows.UniqueRow(row.data).days if row is not None else set()
        new_days = met.days - seen_on
        if not new_days:
            continue
        if row is None:
            new_in_period[name] += 1
        for day in new_days:
            new_by_day.setdefault(day, Counter())[name] += 1
        ops.append((write(key, rows.unique_row(name, met.value, seen_on | new_days, now), row), UNIQUE))
    # The latest day's cells live in the state row; a later day takes its place and the old block moves
    # into its day row. Older days are written to their rows.
    view = StateRow(state.data) if state is not None else None
    today = view.today.data if view is not None and view.today is not None else None
    blocks: dict[str, dict[str, Any]] = {}
    moving = moving_day(state, deltas)
    if moving is not None:
        assert today is not None
        stored = _stored_block(day_rows, moving)
        blocks[moving] = rows.add_to_block(stored, day=moving, per_meter=rows.block_deltas(today), meters=meters)
        today = None
    today_day = today["day"] if today is not None else max(deltas.days, default=None)
    for day, per_meter in deltas.days.items():
        new_distinct = new_by_day.get(day)
        if day == today_day:
            today = rows.add_to_block(today, day=day, per_meter=per_meter, meters=meters, new_distinct=new_distinct)
        else:
            base = blocks[day] if day in blocks else _stored_block(day_rows, day)
            blocks[day] = rows.add_to_block(
                base, day=day, per_meter=per_meter, meters=meters, new_distinct=new_distinct
            )
    for day, block in blocks.items():
        key = day_row_key(day)
        ops.append((write(key, rows.day_row(block, now), day_rows[key]), ROW))
    if levels is not None:
        for key, data in levels.rows.items():
            ops.append((write(key, {**data, "a": now}, day_rows[key]), ROW))
    first = chunk[0]
    base = state.data if state is not None else rows.new_state(first.event.tenant_id, first.period)
    data = rows.apply_to_state(
        base,
        deltas=deltas,
        new_distinct=new_in_period,
        coverage=coverage,
        now=now,
        today=today,
        hours=deltas.hours(),
        levels=levels,
    )
    ops.append((write(STATE_ROW, data, state), ROW))
    return ops


def _stored_block(day_rows: Mapping[str, Row | None], day: str) -> dict[str, Any] | None:
    row = day_rows[day_row_key(day)]
    return row.data if row is not None else None
