"""The rows of one store partition (tenant, billing period, shard) and how deltas change them.

    s                     period state: status, period totals per meter, applied hub positions
    d|<day>               one tenant-local day: per meter the day cell, its UTC hour cells and its groups
    m|<digest>            dedupe marker of one event (created once, never updated)
    u|<meter>|<digest>    a distinct value of a unique_count meter and the days of the period it was met on

Every transaction of the aggregator rewrites the state row under its ETag, so the period closer, flipping that
row to closed, is ordered against all of them. Functions here are pure and never mutate their inputs: a cached
row must stay as the store holds it until a commit succeeds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from metering.aggregation import Cell, ChunkDeltas, DayDelta, Position, merge, merge_json
from metering.meters import Aggregation, Meter
from metering.periods import BillingPeriod

ROW_VERSION = 1
OPEN = "open"
CLOSED = "closed"
# Group values live in the day row, so a transaction touches one row per day whatever the breakdowns. A
# budget on their estimated JSON size keeps that row far below the 1 MiB entity limit of Table storage (and
# cheap to rewrite), whatever the length of the values; past it, or past a meter's `max_group_values` for a
# dimension and day, values are counted in the dimension's overflow cell. Totals are never affected.
GROUP_BUDGET = 100_000
_CELL_SIZE = 48

# Applied hub positions are kept as a few intervals per hub partition; dropping the oldest only costs a
# replay of very old events a marker check, never correctness.
MAX_INTERVALS = 8


def new_state(tenant_id: str, period: BillingPeriod) -> dict[str, Any]:
    return {
        "v": ROW_VERSION,
        "tenant": tenant_id,
        "period": [period.start.isoformat(), period.end.isoformat()],
        "status": OPEN,
        "totals": {},
        "wm": {},
        "updated": None,
    }


def is_covered(state: Mapping[str, Any], position: Position) -> bool:
    """Whether a hub position is inside an interval this partition recorded as fully applied."""
    return any(lo <= position.sequence <= hi for lo, hi in state["wm"].get(position.partition, ()))


def merge_interval(intervals: list[list[int]], lo: int, hi: int) -> list[list[int]]:
    spans = sorted([*([a, b] for a, b in intervals), [lo, hi]])
    merged: list[list[int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return merged[-MAX_INTERVALS:]


def apply_to_state(
    state: Mapping[str, Any],
    deltas: ChunkDeltas,
    new_distinct: Mapping[str, int],
    coverage: Mapping[str, tuple[int, int]],
    now: str,
) -> dict[str, Any]:
    totals = dict(state["totals"])
    for name, delta in deltas.totals.items():
        kind = deltas.meters[name].aggregation
        if kind is Aggregation.UNIQUE_COUNT:
            delta = Cell(delta.value + new_distinct.get(name, 0), delta.count)  # noqa: PLW2901
        totals[name] = merge_json(kind, totals.get(name), delta)
    watermarks = dict(state["wm"])
    for hub_partition, (lo, hi) in coverage.items():
        watermarks[hub_partition] = merge_interval(watermarks.get(hub_partition, []), lo, hi)
    return {**state, "totals": totals, "wm": watermarks, "updated": now}


def apply_to_day(
    row: Mapping[str, Any] | None,
    *,
    day: str,
    per_meter: Mapping[str, DayDelta],
    meters: Mapping[str, Meter],
    new_distinct: Mapping[str, int],
    now: str,
) -> dict[str, Any]:
    cells = dict(row["m"]) if row else {}
    budget = GROUP_BUDGET - (row["gs"] if row else 0)
    for name, delta in per_meter.items():
        meter = meters[name]
        kind = meter.aggregation
        day_delta = delta.day
        assert day_delta is not None
        if kind is Aggregation.UNIQUE_COUNT:
            day_delta = Cell(day_delta.value + new_distinct.get(name, 0), day_delta.count)
        stored = cells.get(name) or {"d": None, "h": {}}
        updated = {"d": merge_json(kind, stored["d"], day_delta), "h": dict(stored["h"])}
        hours = updated["h"]
        for hour, cell in delta.hours.items():
            hours[hour] = merge_json(kind, hours.get(hour), cell)
        if delta.groups or "g" in stored:
            groups = dict(stored.get("g", {}))
            for dim, values in delta.groups.items():
                groups[dim], budget = _merge_groups(meter, groups.get(dim), values, budget)
            updated["g"] = groups
        cells[name] = updated
    return {"v": ROW_VERSION, "day": day, "m": cells, "gs": GROUP_BUDGET - budget, "updated": now}


def _merge_groups(
    meter: Meter, stored: Mapping[str, Any] | None, deltas: Mapping[str, Cell], budget: int
) -> tuple[dict[str, Any], int]:
    kind = meter.aggregation
    values = dict(stored["v"]) if stored else {}
    overflow = stored["o"] if stored else None
    for value, delta in deltas.items():
        if value in values:
            values[value] = merge_json(kind, values[value], delta)
            continue
        # Non-ASCII text is written as \uXXXX escapes: six characters each, at most.
        size = (len(value) if value.isascii() else 6 * len(value)) + _CELL_SIZE
        if len(values) < meter.max_group_values and size <= budget:
            values[value] = merge_json(kind, None, delta)
            budget -= size
        else:
            overflow = merge_json(kind, overflow, delta)
    return {"v": values, "o": overflow}, budget


def cell_of(data: Any) -> Cell | None:
    return None if data is None else Cell.from_json(data)


def combine(kind: Aggregation, cells: list[Cell | None]) -> Cell | None:
    """Combine cells of one meter across shards or buckets of the same span."""
    result: Cell | None = None
    for cell in cells:
        if cell is not None:
            result = merge(kind, result, cell)
    return result
