"""The rows of one store partition (tenant, billing period, shard) and how deltas change them.

    s                     period state: status, period totals per meter, applied hub positions
    d|<day>               one tenant-local day: per meter the day cell and its UTC hour cells
    g|<meter>|<day>       one meter's group breakdown for a day, per dimension and value
    m|<digest>            dedupe marker of one event (created once, never updated)
    u|<meter>|<bucket>|<digest>   a distinct value of a unique_count meter, per period ("p") and per day

Every transaction of the aggregator rewrites the state row under its ETag, so the period closer, flipping that
row to closed, is ordered against all of them. Functions here are pure and never mutate their inputs: a cached
row must stay as the store holds it until a commit succeeds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from metering.aggregation import Cell, ChunkDeltas, Position, merge, merge_json
from metering.meters import Aggregation, Meter
from metering.periods import BillingPeriod

ROW_VERSION = 1
OPEN = "open"
CLOSED = "closed"
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
    per_meter: Mapping[str, tuple[Cell, dict[str, Cell]]],
    meters: Mapping[str, Meter],
    new_distinct: Mapping[str, int],
    now: str,
) -> dict[str, Any]:
    cells = dict(row["m"]) if row else {}
    for name, (day_delta, hour_deltas) in per_meter.items():
        kind = meters[name].aggregation
        if kind is Aggregation.UNIQUE_COUNT:
            day_delta = Cell(day_delta.value + new_distinct.get(name, 0), day_delta.count)  # noqa: PLW2901
        stored = cells.get(name) or {"d": None, "h": {}}
        hours = dict(stored["h"])
        for hour, delta in hour_deltas.items():
            hours[hour] = merge_json(kind, hours.get(hour), delta)
        cells[name] = {"d": merge_json(kind, stored["d"], day_delta), "h": hours}
    return {"v": ROW_VERSION, "day": day, "m": cells, "updated": now}


def apply_to_groups(
    row: Mapping[str, Any] | None,
    meter: Meter,
    day: str,
    per_dimension: Mapping[str, Mapping[str, Cell]],
    now: str,
) -> dict[str, Any]:
    """Values past the meter's `max_group_values` for a dimension and day merge into its overflow cell."""
    kind = meter.aggregation
    dimensions = dict(row["g"]) if row else {}
    for dim, deltas in per_dimension.items():
        stored = dimensions.get(dim) or {"v": {}, "o": None}
        values = dict(stored["v"])
        overflow = stored["o"]
        for value, delta in deltas.items():
            if value in values or len(values) < meter.max_group_values:
                values[value] = merge_json(kind, values.get(value), delta)
            else:
                overflow = merge_json(kind, overflow, delta)
        dimensions[dim] = {"v": values, "o": overflow}
    return {"v": ROW_VERSION, "metric": meter.name, "day": day, "g": dimensions, "updated": now}


def cell_of(data: Any) -> Cell | None:
    return None if data is None else Cell.from_json(data)


def combine(kind: Aggregation, cells: list[Cell | None]) -> Cell | None:
    """Combine cells of one meter across shards or buckets of the same span."""
    result: Cell | None = None
    for cell in cells:
        if cell is not None:
            result = merge(kind, result, cell)
    return result
