"""A chunk's time-weighted points placed between their neighbours: the rows they change (pure: no I/O).

A point of a time_weighted meter changes the integral by what its neighbours say (core/integrals.py), so unlike a
cell it cannot be pre-aggregated blind: the ledger gives this module the rows it read, and this module either
names the rows it still needs (`Missing`) or returns every row the chunk writes and the exact change of each
meter's integral (`LevelChanges`). Rows, all in the resource's shard (placement.by_resource):

    r|<meter>|<resource>            the resource's opening level and the UTC days with points (its last point
                                    is the last of its last day's: the row changes only with the days, so a
                                    point on a day that has points already writes two rows, not three)
    p|<meter>|<resource>|<UTC day>  its points of one UTC day: a row stays small (a point a minute is 1,440)
    w|<meter>|<day>                 the meter's history buckets of one tenant-local day: the day's and each UTC
                                    hour's steps D and weighted steps W (integrals.Bucket)

Only the point's own day row is written; the neighbours may be on the nearest earlier and later days with
points, which the resource row lists, so at most three point rows are read per point.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from metering.core import decimals, integrals
from metering.core.integrals import Bucket, Integral, Point, Step
from metering.ledger.keys import level_buckets_key, points_key, resource_key
from metering.stores import Row

if TYPE_CHECKING:
    from metering.ledger.batch import PlannedEvent
    from metering.ledger.rows import Marker

# A tenant-local day of an instant (microseconds): its ISO date and the instant (microseconds) it ends at.
Locate = Callable[[int], tuple[str, int]]


@dataclass(frozen=True, slots=True)
class Missing:
    """Rows the ledger must read before the chunk can be placed."""

    keys: frozenset[str]


@dataclass(slots=True)
class LevelChanges:
    """What a chunk's points write: rows by key (new data), and per meter the change of its integral and the
    latest point instant it saw (a read is never taken before a point: see reader)."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    integrals: dict[str, Integral] = field(default_factory=dict)
    latest: dict[str, int] = field(default_factory=dict)
    # Per meter, the opening levels read through from the previous period and added here (the carry, when the
    # closer writes it, adds the rest: billing/carry.py).
    captured: dict[str, Decimal] = field(default_factory=dict)


# A resource's level at its period's start, read through from the previous period: asked only for a resource the
# period has no row of yet.
OpeningOf = Callable[["PlannedEvent"], Decimal]
# The tenant's figures before the closer carried the previous period's levels in: every opening read through is
# added to the integral from the period start. After it, the carry holds them: nothing is added.


def _no_opening(_planned: PlannedEvent) -> Decimal:
    return decimals.ZERO


def point_of(planned: PlannedEvent) -> Point:
    """Points of one instant are ordered by event id; the dedupe key after it only tells apart two events that
    share an id under different idempotency keys (neither may hide the other)."""
    event = planned.event
    order = f"{event.event_id or ''}\0{event.dedupe_key}"
    return Point(integrals.micros(event.timestamp), order, event.quantity)


def utc_day(at: int) -> str:
    return integrals.instant(at).date().isoformat()


def _hour(at: int) -> tuple[str, int]:
    start = at - at % integrals.MICROS_PER_HOUR
    return integrals.instant(start).strftime("%Y-%m-%dT%H"), start + integrals.MICROS_PER_HOUR


def level_events(chunk: Sequence[PlannedEvent]) -> list[PlannedEvent]:
    return [p for p in chunk if p.resource is not None and not p.claim]


def resource_keys(chunk: Sequence[PlannedEvent]) -> set[str]:
    return {resource_key(p.meter.name, p.resource) for p in level_events(chunk) if p.resource is not None}


def place(
    chunk: Sequence[PlannedEvent],
    rows: Mapping[str, Row | None],
    locate: Locate,
    *,
    opening_of: OpeningOf = _no_opening,
    carried: bool = False,
) -> LevelChanges | Missing:
    """Insert the chunk's points, in its order, between their neighbours as the rows say; rows not in `rows` are
    named as missing (a key mapped to None is known to be absent). A resource new to the period opens at
    `opening_of` its level, which is added from the period start unless the previous period's levels were
    `carried` in already."""
    events = level_events(chunk)
    if not events:
        return LevelChanges()
    needed = _points_needed(events, rows)
    if needed:
        return Missing(frozenset(needed))
    changes = _inserted(events, rows, locate, opening_of, carried)
    missing = {key for key in changes.rows if key.startswith("w|") and key not in rows}
    if missing:
        return Missing(frozenset(missing))
    return changes


def _points_needed(events: Sequence[PlannedEvent], rows: Mapping[str, Row | None]) -> set[str]:
    """The resource rows not read yet, else the point rows around each point not read yet."""
    needed = resource_keys(events) - rows.keys()
    if needed:
        return needed
    for planned in events:
        day = utc_day(point_of(planned).at)
        for other in (day, *_around(_resource(rows, planned)["days"], day)):
            key = points_key(planned.meter.name, planned.resource or "", other)
            if key not in rows:
                needed.add(key)
    return needed


def _inserted(
    events: Sequence[PlannedEvent],
    rows: Mapping[str, Row | None],
    locate: Locate,
    opening_of: OpeningOf,
    carried: bool,
) -> LevelChanges:
    changes = LevelChanges()
    resources: dict[str, dict[str, Any]] = {}
    held: dict[str, dict[str, list[Point]]] = {}  # resource key -> UTC day -> points
    for planned in events:
        name, resource = planned.meter.name, planned.resource or ""
        rkey = resource_key(name, resource)
        if rkey not in resources:
            resources[rkey] = _resource(rows, planned)
            held[rkey] = {}
            if rows.get(rkey) is None:
                level = opening_of(planned)
                resources[rkey]["o"] = decimals.to_str(level)
                if level and not carried:
                    start = integrals.micros(planned.period.start)
                    _add_integral(changes, name, integrals.opening(level, start))
                    changes.captured[name] = decimals.add(changes.captured.get(name, decimals.ZERO), level)
                    add_step(changes, rows, name, Step(start, level), locate)
        record = resources[rkey]
        days = held[rkey]
        point = point_of(planned)
        day = utc_day(point.at)
        for other in (day, *_around(record["days"], day)):
            if other not in days:
                days[other] = _points(rows.get(points_key(name, resource, other)))
        ordered = sorted(days)
        # The points of the loaded days around this one are contiguous in the resource's order: the nearest
        # earlier and later days with points are among them.
        nearby = [p for d in ordered for p in days[d]]
        change = integrals.insert(nearby, point, Decimal(record["o"]))
        if len(change.points) == len(nearby):
            continue  # already there: a replay whose marker this instance had forgotten
        days[day] = [p for p in change.points if utc_day(p.at) == day]
        if day not in record["days"]:
            record["days"] = sorted([*record["days"], day])
        changes.rows[points_key(name, resource, day)] = {
            "m": name,
            "x": resource,
            "day": day,
            "pts": [_point_json(p) for p in days[day]],
        }
        _add_integral(changes, name, change.integral)
        changes.latest[name] = max(changes.latest.get(name, point.at), point.at)
        for step in change.steps:
            add_step(changes, rows, name, step, locate)
    for rkey, record in resources.items():
        _write_if_changed(changes, rows, rkey, record)
    return changes


def _write_if_changed(changes: LevelChanges, rows: Mapping[str, Row | None], key: str, record: dict[str, Any]) -> None:
    """A resource row is written when it is new or its opening or days change: most points leave it as it is."""
    stored = rows.get(key)
    if stored is None or record != stored.data:
        changes.rows[key] = record


def _add_integral(changes: LevelChanges, name: str, change: Integral) -> None:
    changes.integrals[name] = changes.integrals.get(name, Integral()).plus(change)


def add_step(changes: LevelChanges, rows: Mapping[str, Row | None], name: str, step: Step, locate: Locate) -> None:
    day, day_end = locate(step.at)
    key = level_buckets_key(name, day)
    if key not in changes.rows:
        stored = rows.get(key)
        base = stored.data if stored is not None else {"m": name, "day": day, "d": None, "h": {}}
        changes.rows[key] = {**base, "h": dict(base["h"])}
    data = changes.rows[key]
    data["d"] = Bucket.from_json(data["d"]).plus(integrals.bucket_of(step, day_end)).to_json()
    hour, hour_end = _hour(step.at)
    data["h"][hour] = Bucket.from_json(data["h"].get(hour)).plus(integrals.bucket_of(step, hour_end)).to_json()


def _around(days: Sequence[str], day: str) -> list[str]:
    """The nearest listed days before and after `day`."""
    before = [d for d in days if d < day]
    after = [d for d in days if d > day]
    return ([before[-1]] if before else []) + ([after[0]] if after else [])


def _resource(rows: Mapping[str, Row | None], planned: PlannedEvent) -> dict[str, Any]:
    row = rows.get(resource_key(planned.meter.name, planned.resource or ""))
    if row is not None:
        return {**row.data, "days": list(row.data["days"])}
    return new_resource(planned.meter.name, planned.resource or "", decimals.ZERO)


def new_resource(metric: str, resource: str, opening: Decimal) -> dict[str, Any]:
    return {"m": metric, "x": resource, "o": decimals.to_str(opening), "days": []}


def _points(row: Row | None) -> list[Point]:
    if row is None:
        return []
    return [Point(int(at), event_id, Decimal(level)) for at, event_id, level in row.data["pts"]]


def _point_json(point: Point) -> list[Any]:
    return [point.at, point.event_id, decimals.to_str(point.level)]


def day_locator(day_of: Callable[[datetime], str], day_end: Callable[[str], datetime]) -> Locate:
    """A `Locate` from a tenant's schedule (day of an instant, end of a day), each day's end computed once."""
    ends: dict[str, int] = {}

    def locate(at: int) -> tuple[str, int]:
        day = day_of(integrals.instant(at))
        if day not in ends:
            ends[day] = integrals.micros(day_end(day))
        return day, ends[day]

    return locate


@dataclass(frozen=True, slots=True)
class LevelFigures:
    """A time_weighted meter's figures at an instant: the exact integral (unit-microseconds), and what is shown
    and priced from it, each by one division rounded half-even to 12 places."""

    integral: Decimal
    total: Decimal  # unit-hours
    level: Decimal
    average: Decimal


def figures_at(
    figure: Integral, period_start: datetime, period_end: datetime, now: datetime, latest: int | None
) -> LevelFigures:
    """The figures up to now (an open period) or to the period end (an ended one); never before the latest point
    (ingest accepts points a few minutes ahead of its clock)."""
    start, end = integrals.micros(period_start), integrals.micros(period_end)
    until = max(start, min(end, integrals.micros(now)))
    if latest is not None:
        until = max(until, min(end, latest))
    exact = figure.at(until)
    return LevelFigures(exact, integrals.unit_hours(exact), figure.level, integrals.average(exact, until - start))


def last_day_key(resource: Mapping[str, Any]) -> str | None:
    """The points row holding a resource's last point (its last day with points), if it has points."""
    days = resource["days"]
    return points_key(resource["m"], resource["x"], days[-1]) if days else None


def end_level(resource: Mapping[str, Any], last_day: Row | None) -> Decimal:
    """A resource row's level at its period's end: its last point's (the last of `last_day`, the row
    `last_day_key` names), or the level it opened with."""
    points = last_day.data["pts"] if last_day is not None else []
    return Decimal(points[-1][2]) if points else Decimal(resource.get("o", "0"))


def unplace(marker: Marker, rows: Mapping[str, Row | None], locate: Locate) -> LevelChanges | Missing:
    """A cancel's removal of a counted point, the exact inverse of its insertion given the neighbours left: the
    rows it changes, or the rows it still needs read."""
    name, resource = marker.metric, marker.resource or ""
    rkey = resource_key(name, resource)
    if rkey not in rows:
        return Missing(frozenset({rkey}))
    stored = rows[rkey]
    assert stored is not None, "a counted point's resource has its row"
    record = {**stored.data, "days": list(stored.data["days"])}
    point = Point(
        integrals.micros(datetime.fromisoformat(marker.data["t"])),
        f"{marker.event_id or ''}\0{marker.dedupe_key}",
        marker.quantity,
    )
    day = utc_day(point.at)
    wanted = [day, *_around(record["days"], day)]
    missing = {points_key(name, resource, d) for d in wanted} - rows.keys()
    if missing:
        return Missing(frozenset(missing))
    days = {d: _points(rows.get(points_key(name, resource, d))) for d in wanted}
    nearby = [p for d in sorted(days) for p in days[d]]
    change = integrals.remove(nearby, point, Decimal(record["o"]))
    changes = LevelChanges()
    if len(change.points) == len(nearby):
        return changes  # not among the points: nothing to remove
    kept = [p for p in change.points if utc_day(p.at) == day]
    if not kept:
        record["days"] = [d for d in record["days"] if d != day]
    changes.rows[points_key(name, resource, day)] = {
        "m": name,
        "x": resource,
        "day": day,
        "pts": [_point_json(p) for p in kept],
    }
    _write_if_changed(changes, rows, rkey, record)
    changes.integrals[name] = change.integral
    for step in change.steps:
        add_step(changes, rows, name, step, locate)
    missing = {key for key in changes.rows if key.startswith("w|") and key not in rows}
    if missing:
        return Missing(frozenset(missing))
    return changes
