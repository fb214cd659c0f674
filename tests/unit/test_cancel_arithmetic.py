"""What a cancel writes, computed without a store: the subtraction of exactly one event's contribution."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from metering.core.events import UsageEvent
from metering.core.hub import Position
from metering.core.meters import load_catalog
from metering.core.periods import CalendarMonthUtc
from metering.ledger import cancel, commit
from metering.ledger.batch import SourcedEvent, chunk_deltas, plan_batch
from metering.ledger.keys import STATE_ROW, cancel_key, day_row_key, marker_key
from metering.ledger.rows import DayBlock, Marker, StateRow, closed_state
from metering.stores import Create, Replace, Row

CATALOG = load_catalog()
NOV = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
NOW = "2026-11-24T12:00:00.000000Z"


def counted(*events: UsageEvent) -> dict[str, Row | None]:
    """The rows of a partition after its events were counted, one commit per day."""
    sourced = [SourcedEvent(e, Position("hub", i)) for i, e in enumerate(events)]
    [partition] = plan_batch(sourced, CATALOG, CalendarMonthUtc()).partitions.values()
    rows: dict[str, Row | None] = {STATE_ROW: None, **{day_row_key(p.day): None for p in partition}}
    for day in sorted({p.day for p in partition}):
        chunk = [p for p in partition if p.day == day]
        operations = commit.operations(
            chunk=chunk,
            deltas=chunk_deltas(chunk),
            state=rows[STATE_ROW],
            day_rows=rows,
            uniques=rows,
            meters=CATALOG.meters,
            coverage={},
            now=NOW,
        )
        for op, _ in operations:
            rows[op.key] = Row(op.key, f"etag-{len(rows)}", op.data)
    return rows


def event(i: int, metric: str = "api.requests", quantity: str = "1.5", **fields: Any) -> UsageEvent:
    fields.setdefault("timestamp", NOV)
    return UsageEvent(event_id=f"e{i}", tenant_id="acme", metric=metric, quantity=quantity, source="t", **fields)


def subtract(rows: dict[str, Row | None], dedupe_key: str) -> dict[str, Any]:
    row = rows[marker_key("acme", dedupe_key)]
    assert row is not None
    marker = Marker(row.data)
    meter = CATALOG.meters[marker.metric]
    day_key = cancel.day_row_to_read(marker, rows[STATE_ROW])
    operations = cancel.subtraction(
        marker=marker,
        meter=meter,
        period_key="2026-11-01",
        state=rows[STATE_ROW],
        day_row=rows[day_key] if day_key is not None else None,
        cancel=Create(cancel_key("acme", dedupe_key), {"done": True}),
        meters=CATALOG.meters,
        now=NOW,
    )
    assert operations[0].key == cancel_key("acme", dedupe_key)
    assert all(isinstance(op, Replace) for op in operations[1:])
    return {op.key: op.data for op in operations}


def test_a_cancel_subtracts_the_events_contribution_from_total_day_hour_and_group():
    rows = counted(event(1, dimensions={"region": "eu"}), event(2, quantity="2", dimensions={"region": "eu"}))
    written = subtract(rows, "e:e1")
    state = StateRow(written[STATE_ROW])
    total = state.total("api.requests")
    assert total is not None
    assert (str(total.value), total.count) == ("2", 1)
    assert state.today is not None
    cells = state.today.meter("api.requests")
    assert cells is not None
    assert cells.day is not None
    assert (str(cells.day.value), cells.day.count) == ("2", 1)
    assert {h: str(c.value) for h, c in cells.hours()} == {"2026-11-24T09": "2"}
    group = cells.group("region")
    assert group is not None
    assert {v: (str(c.value), c.count) for v, c in group.values.items()} == {"eu": ("2", 1)}


def test_a_count_meter_subtracts_one_whatever_the_quantity():
    rows = counted(event(1, "reports.generated", "7"), event(2, "reports.generated", "7"))
    total = StateRow(subtract(rows, "e:e1")[STATE_ROW]).total("reports.generated")
    assert total is not None
    assert (str(total.value), total.count) == ("1", 1)


def test_thirty_digits_are_subtracted_exactly():
    rows = counted(event(1, quantity="123456789012345678.123456789012"), event(2, quantity="1"))
    total = StateRow(subtract(rows, "e:e1")[STATE_ROW]).total("api.requests")
    assert total is not None
    # In Python's default 28-digit context the negation would round, leaving 1.000000000012.
    assert total.value == 1
    assert total.count == 1


def test_a_day_that_is_no_longer_the_latest_is_subtracted_in_its_day_row():
    rows = counted(event(1), event(2, timestamp=NOV + timedelta(days=1)))
    written = subtract(rows, "e:e1")
    day = DayBlock(written[day_row_key("2026-11-24")]).meter("api.requests")
    assert day is not None
    assert day.day is not None
    assert (day.day.value, day.day.count) == (0, 0)
    today = StateRow(written[STATE_ROW]).today
    assert today is not None
    assert today.day == "2026-11-25"


def test_levels_and_distinct_counts_cannot_be_cancelled():
    rows = counted(event(1, "storage.gb_peak", "3"))
    row = rows[marker_key("acme", "e:e1")]
    assert row is not None
    with pytest.raises(cancel.NotCancellable, match="max meter"):
        cancel.cancelled_value(Marker(row.data), CATALOG.meters["storage.gb_peak"])
    with pytest.raises(cancel.NotCancellable, match="unknown meter"):
        cancel.cancelled_value(Marker(row.data), None)


def test_a_closed_period_refuses_the_cancel():
    rows = counted(event(1))
    state = rows[STATE_ROW]
    assert state is not None
    period = CalendarMonthUtc().period_at("acme", NOV)
    rows[STATE_ROW] = Row(STATE_ROW, "e", closed_state(state.data, "acme", period, NOV, "v1"))
    with pytest.raises(cancel.PeriodClosed, match="2026-11-01"):
        subtract(rows, "e:e1")
