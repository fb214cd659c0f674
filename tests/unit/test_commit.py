"""Planning a partition's commits without a store: which events share a commit, and what each commit writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from metering.core.events import UsageEvent
from metering.core.hub import Position
from metering.core.meters import load_catalog
from metering.core.periods import CalendarMonthUtc
from metering.ledger import commit
from metering.ledger.batch import PlannedEvent, SourcedEvent, chunk_deltas, plan_batch
from metering.ledger.keys import STATE_ROW, day_row_key, marker_key, partition_key
from metering.ledger.rows import DayBlock, Marker, StateRow
from metering.stores import Create, Operation, Replace, Row

CATALOG = load_catalog()
NOV = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


def event(i: int, metric: str = "api.requests", at: datetime = NOV, **fields: Any) -> UsageEvent:
    fields.setdefault("quantity", "1.5")
    return UsageEvent(event_id=f"e{i}", tenant_id="acme", metric=metric, timestamp=at, source="t", **fields)


def planned(events: list[UsageEvent], start: int = 0) -> list[PlannedEvent]:
    sourced = [SourcedEvent(e, Position("hub", start + i)) for i, e in enumerate(events)]
    plan = plan_batch(sourced, CATALOG, CalendarMonthUtc())
    assert not plan.rejected
    [events_of_partition] = plan.partitions.values()
    return events_of_partition


def apply(chunk: list[PlannedEvent], rows: dict[str, Row | None], **options: Any) -> list[Operation]:
    """Build a chunk's operations and keep what they write, as a store would (with ETags), for the next one."""
    operations = commit.operations(
        chunk=chunk,
        deltas=chunk_deltas(chunk),
        state=rows.get(STATE_ROW),
        day_rows=rows,
        uniques=rows,
        meters=CATALOG.meters,
        coverage=options.get("coverage", {}),
        now="2026-11-24T12:00:00.000000Z",
    )
    for op, _kind in operations:
        rows[op.key] = Row(op.key, f"etag-{len(rows)}", op.data)
    return [op for op, _ in operations]


def test_a_chunk_never_holds_more_operations_than_a_commit_may():
    events = [event(i, at=NOV + timedelta(days=i % 5)) for i in range(60)]
    chunks = commit.chunks(planned(events), max_ops=10)
    assert [p.event.event_id for c in chunks for p in c] == [e.event_id for e in events]
    for chunk in chunks:
        days = {p.day for p in chunk}
        assert len(chunk) + len(days) + 1 <= 10
    assert len(chunks) > 6


def test_distinct_values_count_against_the_budget_once_each():
    events = [event(i, "users.active", user_id=f"u{i % 3}") for i in range(12)]
    chunks = commit.chunks(planned(events), max_ops=8)
    # Three markers, their three distinct values, the day row and the state row fill a commit of 8.
    assert [len(c) for c in chunks] == [3, 3, 3, 3]
    for chunk in chunks:
        assert len(chunk) + len({p.unique for p in chunk}) + 2 <= 8


def test_the_first_commit_of_a_partition_creates_its_markers_and_state_row():
    events = planned([event(1, dimensions={"region": "eu"}), event(2, quantity="2")])
    rows: dict[str, Row | None] = {STATE_ROW: None, day_row_key("2026-11-24"): None}
    operations = apply(events, rows)
    assert all(isinstance(op, Create) for op in operations)
    assert [op.key for op in operations] == [
        marker_key("acme", "e:e1"),
        marker_key("acme", "e:e2"),
        STATE_ROW,
    ]
    state = StateRow(operations[-1].data)
    total = state.total("api.requests")
    assert total is not None
    assert (str(total.value), total.count) == ("3.5", 2)
    assert state.today is not None
    cells = state.today.meter("api.requests")
    assert cells is not None
    group = cells.group("region")
    assert group is not None
    assert {k: str(c.value) for k, c in group.values.items()} == {"eu": "1.5"}
    assert Marker(operations[0].data).quantity == events[0].event.quantity


def test_a_later_day_moves_the_old_block_into_its_day_row():
    rows: dict[str, Row | None] = {STATE_ROW: None, day_row_key("2026-11-24"): None}
    apply(planned([event(1)]), rows)
    later = planned([event(2, at=NOV + timedelta(days=1))], start=1)
    rows[day_row_key("2026-11-25")] = None
    operations = apply(later, rows)
    by_key = {op.key: op for op in operations}
    moved = by_key[day_row_key("2026-11-24")]
    assert isinstance(moved, Create)
    cells = DayBlock(moved.data).meter("api.requests")
    assert cells is not None
    assert cells.day is not None
    assert str(cells.day.value) == "1.5"
    state = by_key[STATE_ROW]
    assert isinstance(state, Replace)
    assert state.etag.startswith("etag-")
    today = StateRow(state.data).today
    assert today is not None
    assert today.day == "2026-11-25"


def test_coverage_stops_before_the_first_event_still_pending():
    events = planned([event(i) for i in range(6)])
    first, later = events[:3], events[3:]
    assert commit.coverage(first, [later], {"hub": (0, 5)}) == {"hub": (0, 2)}
    assert commit.coverage(events, [], {"hub": (0, 5)}) == {"hub": (0, 5)}
    assert commit.coverage(first, [later], {"other": (0, 5)}) == {}


def test_applied_ranges_are_held_back_before_a_repeat():
    events = planned([event(i) for i in range(4)])
    assert commit.held_back({"hub": (0, 9)}, [events[2]]) == {"hub": (0, 1)}
    assert commit.held_back({"hub": (2, 9)}, [events[2]]) == {}


def test_a_second_occurrence_of_a_marker_waits_as_a_repeat():
    events = planned([event(1), event(2)])
    twice = [events[0], events[1], events[0]]
    first, repeats = commit.first_occurrences(twice, [])
    assert [p.event.event_id for p in first] == ["e1", "e2"]
    assert [p.event.event_id for p in repeats] == ["e1"]


def test_every_key_of_a_partition_is_in_its_state_applied_ranges():
    events = planned([event(i) for i in range(3)])
    rows: dict[str, Row | None] = {STATE_ROW: None, day_row_key("2026-11-24"): None}
    operations = apply(events, rows, coverage={"hub": (0, 2)})
    state = StateRow(operations[-1].data)
    assert state.covers(Position("hub", 2))
    assert not state.covers(Position("hub", 3))
    assert events[0].partition == partition_key("acme", CalendarMonthUtc().period_at("acme", NOV))


@pytest.mark.parametrize("max_ops", [8, 13, 100])
def test_chunks_keep_every_event_once_in_order(max_ops):
    events = planned([event(i, at=NOV + timedelta(hours=i)) for i in range(40)])
    chunks = commit.chunks(events, max_ops)
    assert [p for c in chunks for p in c] == events
