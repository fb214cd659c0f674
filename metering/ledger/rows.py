"""The rows of one store partition (tenant, billing period, shard): their shapes, typed views of them, and how
deltas change them. The one place that reads or writes a usage row's fields; keys.py names the rows.

    s          period state: status, period totals per meter, carried adjustments, applied hub positions, the
               block of the latest day (its cells are written here, not in its day row), and what changed
               lately (a version and the UTC hours changed at it), so the exporters read only those hours
    d|<day>    one tenant-local day's block: per meter the day cell, UTC hour cells and groups (per dimension
               its values' cells, the overflow cell and the cell of events without the dimension)
    m|<...>    dedupe marker: the event's payload hash and its contribution (what a cancel subtracts); in the
               event's key shard, for an event applied in another shard, a claim: the payload hash and that shard
    u|<...>    a distinct value of a unique_count meter and the days of the period it was met on
    c|<...>    a cancel (its result, so a repeat answers the same)
    r|, p|, w| a time_weighted meter's resources, their points per UTC day and its history buckets (levels.py);
               the state row keeps each such meter's integral as closed, L and M (`tw`), its latest point
               (`twt`), the opening levels read through (`twu`) and carried (`twc`, `twk`: billing/carry.py)

Every transaction of the aggregator that changes a figure rewrites the state row under its ETag (a claim changes
none), so the period closer, flipping that row to closed, is ordered against all of them. Since it is written
anyway, it also carries the latest day's block: a transaction of current events then writes the state row and its
markers, and nothing else. When a later day starts, the old block moves into its day row in the same
transaction. A reader combines a day's row with the state's block when both name that day: each event, and each
distinct value of a day, is counted in exactly one of the two, so combining them by the meter's aggregation is
exact.

Functions here are pure and never mutate their inputs: a cached row must stay as the store holds it until a
commit succeeds. Views (`StateRow`, `DayBlock`, `Marker`, `UniqueRow`) read a row's data without copying it.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from metering.core import decimals
from metering.core.clock import format_timestamp
from metering.core.hub import Position
from metering.core.integrals import Integral
from metering.core.meters import DEFAULT_MAX_GROUP_VALUES, Aggregation, Meter
from metering.core.periods import BillingPeriod
from metering.ledger.batch import ChunkDeltas, DayDelta, claim_identity
from metering.ledger.cells import Cell, cell_of, merge_json

if TYPE_CHECKING:
    from metering.ledger.batch import Conflict, PlannedEvent
    from metering.ledger.levels import LevelChanges

ROW_VERSION = 1
OPEN = "open"
CLOSED = "closed"
# Group values live in the day row, so a transaction touches one row per day whatever the breakdowns. A
# budget on their JSON size, measured as the store encodes it (ASCII JSON: a character outside the Basic
# Multilingual Plane takes 12), keeps that row far below the 1 MiB entity limit of Table storage (and cheap to
# rewrite), whatever the values; past it, or past a meter's `max_group_values` for a dimension and day, values
# are counted in the dimension's overflow cell. Totals are never affected.
GROUP_BUDGET = 100_000
# A cell's share beyond its value's text: the cell itself as first written, and room for its digits to grow.
_CELL_ROOM = 48

# Applied hub positions are kept as a few intervals per hub partition; dropping the oldest only costs a
# replay of very old events a marker check, never correctness.
MAX_INTERVALS = 8
# Event Hubs has at most 32 partitions; the dev host names a new one each run. Forgetting one is as safe.
MAX_HUB_PARTITIONS = 32
# The UTC hours whose figures changed most recently, each with the version it last changed at. Past the bound
# the oldest is forgotten and the floor rises to its version: a reader that saw less than the floor looks at
# every hour again (billing/exports), so forgetting costs a wider read, never a missed change.
MAX_CHANGED_HOURS = 48


# -- views ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupCells:
    """One dimension's values on one day, its overflow cell (values past the meter's bounds) and the cell of the
    events without the dimension (`n`; missing in rows written before it was kept)."""

    data: Mapping[str, Any]

    @property
    def values(self) -> dict[str, Cell]:
        return {value: Cell.from_json(cell) for value, cell in self.data["v"].items()}

    @property
    def overflow(self) -> Cell | None:
        return cell_of(self.data["o"])

    @property
    def absent(self) -> Cell | None:
        return cell_of(self.data.get("n"))

    def has(self, value: str) -> bool:
        """Whether `value` has a cell of its own (else its events were counted in the overflow)."""
        return value in self.data["v"]


@dataclass(frozen=True, slots=True)
class MeterCells:
    """One meter's cells in a day's block: the day, its UTC hours, its groups per dimension."""

    data: Mapping[str, Any]

    @property
    def day(self) -> Cell | None:
        return cell_of(self.data["d"])

    def hours(self) -> Iterator[tuple[str, Cell]]:
        for hour, cell in self.data["h"].items():
            yield hour, Cell.from_json(cell)

    def group(self, dimension: str) -> GroupCells | None:
        stored = self.data.get("g", {}).get(dimension)
        return None if stored is None else GroupCells(stored)


@dataclass(frozen=True, slots=True)
class DayBlock:
    """A day's block: a day row's data, or the latest day's inside the state row."""

    data: Mapping[str, Any]

    @property
    def day(self) -> str:
        return str(self.data["day"])

    def meter(self, name: str) -> MeterCells | None:
        stored = self.data["m"].get(name)
        return None if stored is None else MeterCells(stored)


@dataclass(frozen=True, slots=True)
class StateRow:
    """A period state row's data."""

    data: Mapping[str, Any]

    @property
    def status(self) -> str:
        return str(self.data["status"])

    @property
    def is_closed(self) -> bool:
        return self.data["status"] == CLOSED

    @property
    def tenant_id(self) -> str:
        return str(self.data["tenant"])

    @property
    def metrics(self) -> list[str]:
        return sorted(self.data["totals"])

    def total(self, metric: str) -> Cell | None:
        return cell_of(self.data["totals"].get(metric))

    def totals(self) -> dict[str, Cell]:
        return {metric: Cell.from_json(cell) for metric, cell in self.data["totals"].items()}

    def adjustment(self, metric: str) -> Cell | None:
        """The part of the metric's total carried in from closed periods (late-event policy `adjust`)."""
        return cell_of(self.data.get("adj", {}).get(metric))

    def limit_figures(self) -> dict[str, Cell]:
        """What limits and alerts compare per meter: its total, or for a time_weighted meter its level now (a
        level over time has no total to exhaust: what a limit bounds is how much is held)."""
        figures = self.totals()
        for metric in self.data.get("tw", {}):
            count = figures[metric].count if metric in figures else 0
            figures[metric] = Cell(self.levels(metric).level, count)
        return figures

    def levels(self, metric: str) -> Integral:
        """A time_weighted meter's integral as closed, L and M (unit-microseconds); zero when it has no point."""
        return Integral.from_json(self.data.get("tw", {}).get(metric))

    def captured(self, metric: str) -> Decimal:
        """The opening levels this partition read through from the previous period before it was carried in."""
        return Decimal(self.data.get("twu", {}).get(metric, "0"))

    def carry(self, metric: str) -> Decimal:
        """The opening level the closer carried into this partition from the previous period (the rest)."""
        return Decimal(self.data.get("twc", {}).get(metric, "0"))

    @property
    def carried(self) -> bool:
        """Whether the previous period's levels were carried into this partition (billing/carry.py)."""
        return bool(self.data.get("twk"))

    def latest_point(self, metric: str) -> int | None:
        """The instant (microseconds) of the meter's latest point: a figure is never read before it."""
        at = self.data.get("twt", {}).get(metric)
        return None if at is None else int(at)

    @property
    def today(self) -> DayBlock | None:
        block = self.data.get("today")
        return None if block is None else DayBlock(block)

    @property
    def updated(self) -> datetime | None:
        text = self.data["updated"]
        return None if not text else datetime.fromisoformat(text)

    @property
    def closed_at(self) -> datetime | None:
        text = self.data.get("closed_at")
        return None if text is None else datetime.fromisoformat(text)

    @property
    def catalog_version(self) -> str | None:
        """The meter catalog the period was closed with."""
        return self.data.get("catalog")

    @property
    def version(self) -> int:
        """Grows with every commit that changes a figure of the partition (aggregator commits and cancels)."""
        return int(self.data.get("xv", 0))

    @property
    def changed_hours(self) -> dict[str, int]:
        """The UTC hours changed lately, each with the version it last changed at."""
        return dict(self.data.get("xh", {}))

    @property
    def changes_floor(self) -> int:
        """The highest version of a changed hour no longer listed: a reader that saw less must look at all."""
        return int(self.data.get("xf", 0))

    def covers(self, position: Position) -> bool:
        """Whether a hub position is inside an interval this partition recorded as fully applied."""
        return any(lo <= position.sequence <= hi for lo, hi in self.data["wm"].get(position.partition, ()))


@dataclass(frozen=True, slots=True)
class Marker:
    """A dedupe marker's data: the event's identity and payload hash, and what it contributed."""

    data: Mapping[str, Any]

    @property
    def dedupe_key(self) -> str:
        return str(self.data["k"])

    @property
    def payload(self) -> str:
        return str(self.data["h"])

    @property
    def event_id(self) -> str | None:
        return self.data.get("e")

    @property
    def metric(self) -> str:
        return str(self.data["m"])

    @property
    def quantity(self) -> Decimal:
        return Decimal(self.data["q"])

    @property
    def count(self) -> int:
        """How many events it stood for (its `count`); markers of events without one have no field."""
        return int(self.data.get("n", 1))

    @property
    def weight(self) -> int:
        """Its sample weight (1: not sampled)."""
        return int(self.data.get("w", 1))

    @property
    def day(self) -> str:
        return str(self.data["d"])

    @property
    def hour(self) -> str:
        """The UTC hour it was counted in: its timestamp's, or, carried from a closed period, the carry's."""
        return str(self.data.get("hr") or self.data["t"][:13])

    @property
    def groups(self) -> dict[str, str | None]:
        """Its group_by dimensions to its values; None for a dimension it lacked (markers written before
        those were kept name only the dimensions it had)."""
        return dict(self.data.get("g", {}))

    @property
    def adjustment(self) -> bool:
        return bool(self.data.get("adj"))

    @property
    def resource(self) -> str | None:
        """For a time_weighted meter's event, the resource whose level it set."""
        return self.data.get("r")

    @property
    def applied_shard(self) -> int | None:
        """For a claim, the shard that applies its event (whose own marker holds the contribution)."""
        return self.data.get("s")

    @property
    def identity(self) -> str:
        """What a planned event's identity must equal for this marker to be its own (batch.PlannedEvent)."""
        shard = self.data.get("s")
        return self.payload if shard is None else claim_identity(self.payload, shard)


@dataclass(frozen=True, slots=True)
class UniqueRow:
    data: Mapping[str, Any]

    @property
    def days(self) -> set[str]:
        return set(self.data["days"])


# -- shapes ---------------------------------------------------------------------------------------------------


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
    *,
    deltas: ChunkDeltas,
    new_distinct: Mapping[str, int],
    coverage: Mapping[str, tuple[int, int]],
    now: str,
    today: dict[str, Any] | None,
    hours: Collection[str] = (),
    levels: LevelChanges | None = None,
) -> dict[str, Any]:
    """The state row with a commit's deltas applied; `hours` are the UTC hours whose cells the commit changes."""
    totals = dict(state["totals"])
    # The kind each total was counted with: shards and readers combine totals by it (shards.py).
    kinds = dict(state.get("kinds", {}))
    for name, delta in deltas.totals.items():
        kind = deltas.meters[name].aggregation
        kinds[name] = kind.value
        if kind is Aggregation.UNIQUE_COUNT:
            delta = Cell(decimals.add(delta.value, Decimal(new_distinct.get(name, 0))), delta.count)  # noqa: PLW2901
        totals[name] = merge_json(kind, totals.get(name), delta)
    adjustments = dict(state.get("adj", {}))
    for name, delta in deltas.adjustments.items():
        adjustments[name] = merge_json(deltas.meters[name].aggregation, adjustments.get(name), delta)
    watermarks = dict(state["wm"])
    for hub_partition, (lo, hi) in coverage.items():
        # Re-inserted last, so the partitions least recently applied are the first to go past the bound.
        watermarks[hub_partition] = merge_interval(watermarks.pop(hub_partition, []), lo, hi)
    for stale in list(watermarks)[:-MAX_HUB_PARTITIONS]:
        del watermarks[stale]
    updated = {**state, "totals": totals, "kinds": kinds, "wm": watermarks, "today": today, "updated": now}
    if adjustments:
        updated["adj"] = adjustments
    if levels is not None and levels.integrals:
        updated.update(add_levels(state, levels.integrals, levels.latest))
    if levels is not None and levels.captured:
        captured = dict(state.get("twu", {}))
        for name, level in levels.captured.items():
            captured[name] = decimals.to_str(decimals.add(Decimal(captured.get(name, "0")), level))
        updated["twu"] = captured
    updated.update(_changes(state, hours))
    return updated


def add_levels(state: Mapping[str, Any], changes: Mapping[str, Integral], latest: Mapping[str, int]) -> dict[str, Any]:
    """The state row's time-weighted parts with a commit's changes: per meter the integral as closed, L and M
    (`tw`, unit-microseconds, exact) and the latest point instant (`twt`, microseconds)."""
    figures = dict(state.get("tw", {}))
    for name, change in changes.items():
        figures[name] = Integral.from_json(figures.get(name)).plus(change).to_json()
    instants = dict(state.get("twt", {}))
    for name, at in latest.items():
        instants[name] = max(int(instants.get(name, at)), at)
    return {"tw": figures, "twt": instants}


def _changes(state: Mapping[str, Any], hours: Collection[str]) -> dict[str, Any]:
    version = int(state.get("xv", 0)) + 1
    changed = dict(state.get("xh", {}))
    for hour in sorted(hours):
        changed.pop(hour, None)  # re-inserted last: the order is the order of change
        changed[hour] = version
    floor = int(state.get("xf", 0))
    while len(changed) > MAX_CHANGED_HOURS:
        oldest = min(changed, key=lambda hour: (changed[hour], hour))
        floor = max(floor, changed.pop(oldest))
    return {"xv": version, "xh": changed, "xf": floor}


def add_to_block(
    block: Mapping[str, Any] | None,
    *,
    day: str,
    per_meter: Mapping[str, DayDelta],
    meters: Mapping[str, Meter],
    new_distinct: Mapping[str, int] | None = None,
    bounded: bool = True,
) -> dict[str, Any]:
    """A day's block with deltas added. `new_distinct` counts the values a unique_count meter met on this day
    for the first time in the period's distinct-value rows. Blocks that are stored keep group values within
    their bounds; `bounded=False` is for readers combining two stored blocks, which lose nothing. `gs` is the
    budget the block's group values use, and only ever grows: subtracting from a value (a cancel) frees none."""
    cells = dict(block["m"]) if block else {}
    used = block["gs"] if block else 0
    for name, delta in per_meter.items():
        kind = delta.kind
        day_delta = delta.day
        assert day_delta is not None
        if new_distinct and name in new_distinct:
            day_delta = Cell(decimals.add(day_delta.value, Decimal(new_distinct[name])), day_delta.count)
        stored = cells.get(name) or {"k": kind.value, "d": None, "h": {}}
        updated = {"k": kind.value, "d": merge_json(kind, stored["d"], day_delta), "h": dict(stored["h"])}
        hours = updated["h"]
        for hour, cell in delta.hours.items():
            hours[hour] = merge_json(kind, hours.get(hour), cell)
        if delta.groups or delta.overflow or delta.absent or "g" in stored:
            cap = meters[name].max_group_values if name in meters else DEFAULT_MAX_GROUP_VALUES
            groups = dict(stored.get("g", {}))
            for dim in delta.groups.keys() | delta.overflow.keys() | delta.absent.keys():
                groups[dim], spent = _merge_groups(
                    kind,
                    cap if bounded else None,
                    stored=groups.get(dim),
                    deltas=delta.groups.get(dim, {}),
                    overflow_delta=delta.overflow.get(dim),
                    absent_delta=delta.absent.get(dim),
                    budget=GROUP_BUDGET - used if bounded else None,
                )
                used += spent
            updated["g"] = groups
        cells[name] = updated
    return {"day": day, "m": cells, "gs": used}


def block_deltas(block: Mapping[str, Any]) -> dict[str, DayDelta]:
    """A stored block as deltas, to add it to another block of the same day."""
    deltas: dict[str, DayDelta] = {}
    for name, stored in block["m"].items():
        delta = DayDelta(Aggregation(stored["k"]), Cell.from_json(stored["d"]))
        delta.hours = {hour: Cell.from_json(cell) for hour, cell in stored["h"].items()}
        for dim, group in stored.get("g", {}).items():
            delta.groups[dim] = {value: Cell.from_json(cell) for value, cell in group["v"].items()}
            if group["o"] is not None:
                delta.overflow[dim] = Cell.from_json(group["o"])
            if group.get("n") is not None:
                delta.absent[dim] = Cell.from_json(group["n"])
        deltas[name] = delta
    return deltas


def day_row(block: Mapping[str, Any], now: str) -> dict[str, Any]:
    return {"v": ROW_VERSION, **block, "updated": now}


def combine_blocks(blocks: Sequence[DayBlock]) -> DayBlock | None:
    """The blocks of one day (its row's and the state's) as one, for readers."""
    result: dict[str, Any] | None = None
    for block in blocks:
        if result is None:
            result = dict(block.data)
        else:
            result = add_to_block(result, day=block.day, per_meter=block_deltas(block.data), meters={}, bounded=False)
    return None if result is None else DayBlock(result)


def _merge_groups(
    kind: Aggregation,
    cap: int | None,
    *,
    stored: Mapping[str, Any] | None,
    deltas: Mapping[str, Cell],
    overflow_delta: Cell | None,
    absent_delta: Cell | None,
    budget: int | None,
) -> tuple[dict[str, Any], int]:
    """One dimension's values with deltas merged, and the budget its new values took. Without a cap and a
    budget (readers), every value is kept. The cell of events without the dimension is one cell whatever the
    values, so it takes no budget."""
    values = dict(stored["v"]) if stored else {}
    overflow = stored["o"] if stored else None
    absent = stored.get("n") if stored else None
    spent = 0
    for value, delta in deltas.items():
        if value in values:
            values[value] = merge_json(kind, values[value], delta)
            continue
        cell = merge_json(kind, None, delta)
        size = group_value_size(value, cell)
        if cap is None or budget is None or (len(values) < cap and spent + size <= budget):
            values[value] = cell
            spent += size
        else:
            overflow = merge_json(kind, overflow, delta)
    if overflow_delta is not None:
        overflow = merge_json(kind, overflow, overflow_delta)
    merged: dict[str, Any] = {"v": values, "o": overflow}
    if absent_delta is not None:
        absent = merge_json(kind, absent, absent_delta)
    if absent is not None:
        merged["n"] = absent
    return merged, spent


def group_value_size(value: str, cell: list[Any]) -> int:
    """What a group value adds to its row, as the store writes the row (ASCII JSON)."""
    return len(json.dumps(value)) + len(json.dumps(cell, separators=(",", ":"))) + _CELL_ROOM


def marker_row(planned: PlannedEvent, applied_at: str) -> dict[str, Any]:
    """A marker keeps the event's contribution (what a cancel subtracts) and its payload hash."""
    event = planned.event
    data: dict[str, Any] = {
        "k": event.dedupe_key,
        "h": planned.payload,
        "e": event.event_id,
        "m": event.metric,
        "q": decimals.to_str(event.quantity),
        "t": planned.timestamp,
        "d": planned.day,
        "a": applied_at,
    }
    if planned.groups:
        data["g"] = planned.groups
    # Only when not the default, so a marker of a plain event is as it always was; a cancel needs both.
    if event.count is not None and event.count != 1:
        data["n"] = event.count
    if event.sample_weight is not None and event.sample_weight != 1:
        data["w"] = event.sample_weight
    if planned.position is not None:
        data["p"] = [planned.position.partition, planned.position.sequence]
    if planned.resource is not None:
        data["r"] = planned.resource  # a cancel removes the point from this resource's points
    if planned.adjustment:
        # Counted on the day and hour it was carried, not those of its timestamp: a cancel needs them.
        data["adj"] = True
        data["hr"] = planned.hour
    return data


def claim_row(planned: PlannedEvent, applied_at: str) -> dict[str, Any]:
    """A claim holds the dedupe key for the payload applied in shard `s`: what the event is, not what it added."""
    event = planned.event
    return {
        "k": event.dedupe_key,
        "h": planned.payload,
        "e": event.event_id,
        "m": event.metric,
        "t": planned.timestamp,
        "d": planned.day,
        "a": applied_at,
        "s": planned.shard,
    }


def unique_row(metric: str, value: str, days: set[str], now: str) -> dict[str, Any]:
    return {"m": metric, "x": value, "days": sorted(days), "a": now}


def closed_state(
    state: Mapping[str, Any] | None, tenant_id: str, period: BillingPeriod, closed_at: datetime, catalog_version: str
) -> dict[str, Any]:
    """The state row as the closer leaves it: closed, with when and by which catalog (a period without a state
    row gets one, closed)."""
    base = state if state is not None else new_state(tenant_id, period)
    return {**base, "status": CLOSED, "closed_at": format_timestamp(closed_at), "catalog": catalog_version}


def conflict_row(conflict: Conflict, detected: str) -> dict[str, Any]:
    return {
        "dedupe_key": conflict.dedupe_key,
        "first_payload": conflict.first_payload,
        "event": conflict.event.to_json_dict(),
        "detected": detected,
    }
