"""Time-weighted levels (pure): points, their neighbours, and the exact integral of a level over time.

A resource's level is a step function: each point (instant, event id, level) holds until the resource's next point
by (instant, event id), never by arrival. The tenant's level is the sum over resources. The integral is kept in
unit-microseconds as an exact decimal (a level times a whole number of microseconds): nothing here rounds;
only `unit_hours` and `average`, the figures shown and priced, divide, once each (decimals.derived_quotient).

The integral is additive once a point knows its neighbours (DESIGN.md 5.3). Inserting (t, v) after (t0, v0) and
before (t1, ...) changes the level on [t, t1) from v0 to v: the closed part grows by (v - v0) x (t1 - t). Inserting
after the last point changes the open tail, which is kept as L (the sum of the current levels) and M (the sum of
level x the instant it started), so that the integral up to any instant t after every point is
closed + L x t - M, and time passing rewrites nothing. Removing a point (a cancel) is the inverse of inserting it.

The same change seen as steps of the tenant's level (+(v - v0) at t, and -(v - v0) at t1 when there is a next
point) is what a history bucket keeps: per bucket the sum of its steps D and the sum of step x (bucket end -
instant) W, so a bucket's integral is its opening level x its length + W, exactly, and the opening level of the
next bucket is this one's plus D.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from metering.core import decimals

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
MICROS_PER_HOUR = 3_600_000_000


def micros(instant: datetime) -> int:
    """An aware instant as whole microseconds since the Unix epoch, exactly (timedelta arithmetic, no float)."""
    return (instant - EPOCH) // MICROSECOND


def instant(at: int) -> datetime:
    return EPOCH + timedelta(microseconds=at)


@dataclass(frozen=True, slots=True, order=True)
class Point:
    """A resource's level from `at` (microseconds) on; points of one instant are ordered by event id."""

    at: int
    event_id: str
    level: Decimal

    @property
    def order(self) -> tuple[int, str]:
        return (self.at, self.event_id)


def neighbours(points: Sequence[Point], point: Point) -> tuple[Point | None, Point | None]:
    """The points of `points` (sorted by order, `point` not among them) just before and just after `point`."""
    orders = [p.order for p in points]
    index = bisect_left(orders, point.order)
    before = points[index - 1] if index > 0 else None
    after = points[index] if index < len(points) else None
    if after is not None and after.order == point.order:
        raise ValueError(f"a point at {point.order} is already there")
    return before, after


def sorted_points(points: Iterable[Point]) -> list[Point]:
    return sorted(points, key=lambda p: p.order)


@dataclass(frozen=True, slots=True)
class Step:
    """A change of the tenant's level by `delta` at `at` (microseconds)."""

    at: int
    delta: Decimal


@dataclass(frozen=True, slots=True)
class Integral:
    """An integral in unit-microseconds as closed + L x t - M (DESIGN.md 5.3), or a change of one."""

    closed: Decimal = decimals.ZERO
    level: Decimal = decimals.ZERO  # L: the sum of the current levels
    moment: Decimal = decimals.ZERO  # M: the sum of level x the instant (microseconds) it started

    def at(self, t: int) -> Decimal:
        """The integral from the first instant counted to `t`, which must not precede any open tail's start."""
        return decimals.add(decimals.subtract(self.closed, self.moment), decimals.multiply(self.level, Decimal(t)))

    def plus(self, other: Integral) -> Integral:
        return Integral(
            decimals.add(self.closed, other.closed),
            decimals.add(self.level, other.level),
            decimals.add(self.moment, other.moment),
        )

    def negated(self) -> Integral:
        return Integral(decimals.negate(self.closed), decimals.negate(self.level), decimals.negate(self.moment))

    @property
    def is_zero(self) -> bool:
        return not (self.closed or self.level or self.moment)

    def to_json(self) -> list[str]:
        return [decimals.to_str(self.closed), decimals.to_str(self.level), decimals.to_str(self.moment)]

    @classmethod
    def from_json(cls, data: Sequence[str] | None) -> Integral:
        if not data:
            return cls()
        return cls(Decimal(data[0]), Decimal(data[1]), Decimal(data[2]))


def opening(level: Decimal, start: int) -> Integral:
    """A level carried in from `start` (a period's first instant): an open tail from then."""
    return Integral(decimals.ZERO, level, decimals.multiply(level, Decimal(start)))


def insertion(point: Point, before: Point | None, after: Point | None, opening_level: Decimal) -> Integral:
    """What inserting `point` between its neighbours changes; `opening_level` is the resource's level before its
    first point (carried in, or 0), which holds from the period start (where an opening tail is kept)."""
    previous = before.level if before is not None else opening_level
    delta = decimals.subtract(point.level, previous)
    if after is not None:
        return Integral(closed=decimals.multiply(delta, Decimal(after.at - point.at)))
    # The new last point: the open tail of `previous` since `before` ends at t and closes into the closed part,
    # and the tail of the new level starts. Moving L by delta and M by delta x t is the same figure.
    return Integral(level=delta, moment=decimals.multiply(delta, Decimal(point.at)))


def removal(point: Point, before: Point | None, after: Point | None, opening_level: Decimal) -> Integral:
    """What removing `point` (a cancel) changes, its neighbours being those left: the inverse of inserting it."""
    return insertion(point, before, after, opening_level).negated()


def steps(point: Point, before: Point | None, after: Point | None, opening_level: Decimal) -> list[Step]:
    """The same insertion as changes of the tenant's level, for history buckets."""
    previous = before.level if before is not None else opening_level
    delta = decimals.subtract(point.level, previous)
    if not delta:
        return []
    found = [Step(point.at, delta)]
    if after is not None:
        found.append(Step(after.at, decimals.negate(delta)))
    return found


@dataclass(frozen=True, slots=True)
class Bucket:
    """A history bucket's own figures: D, the sum of the level's steps in it, and W, the sum of step x (bucket
    end - step instant) in unit-microseconds. Additive: buckets of several shards or commits add."""

    steps: Decimal = decimals.ZERO
    weighted: Decimal = decimals.ZERO

    def plus(self, other: Bucket) -> Bucket:
        return Bucket(decimals.add(self.steps, other.steps), decimals.add(self.weighted, other.weighted))

    def negated(self) -> Bucket:
        return Bucket(decimals.negate(self.steps), decimals.negate(self.weighted))

    def to_json(self) -> list[str]:
        return [decimals.to_str(self.steps), decimals.to_str(self.weighted)]

    @classmethod
    def from_json(cls, data: Sequence[str] | None) -> Bucket:
        return cls() if not data else cls(Decimal(data[0]), Decimal(data[1]))


def bucket_of(step: Step, end: int) -> Bucket:
    """A step's share of the bucket ending at `end` (microseconds) that holds it."""
    return Bucket(step.delta, decimals.multiply(step.delta, Decimal(end - step.at)))


def bucket_integrals(
    opening_level: Decimal, buckets: Sequence[tuple[int, int, Bucket]], until: int | None = None
) -> list[tuple[Decimal, Decimal]]:
    """Each bucket's (integral in unit-microseconds, level at its end), buckets given in order as (start, end,
    figures), the first starting at the level `opening_level`. `until` (now, for an open period) cuts the buckets
    short: a bucket that starts after it integrates nothing, one that holds it integrates up to it."""
    found: list[tuple[Decimal, Decimal]] = []
    level = opening_level
    for start, end, bucket in buckets:
        stop = end if until is None else max(start, min(end, until))
        held = decimals.multiply(level, Decimal(stop - start))
        # W is measured to the bucket's end; steps up to `stop` were held (end - stop) less each.
        inside = decimals.subtract(bucket.weighted, decimals.multiply(bucket.steps, Decimal(end - stop)))
        found.append((decimals.add(held, inside), decimals.add(level, bucket.steps) if stop == end else level))
        level = decimals.add(level, bucket.steps)
    return found


def unit_hours(integral: Decimal) -> Decimal:
    """unit-microseconds as unit-hours (GB-hours for a GB meter), rounded half-even to 12 places."""
    return decimals.derived_quotient(integral, MICROS_PER_HOUR)


def average(integral: Decimal, elapsed: int) -> Decimal:
    """The average level over `elapsed` microseconds (for a monthly period, the GB-month figure), rounded half-even
    to 12 places; 0 when no time has elapsed."""
    return decimals.derived_quotient(integral, elapsed) if elapsed > 0 else decimals.ZERO


def independent_integral(
    points: Iterable[tuple[str, Point]], start: int, end: int, carried: dict[str, Decimal]
) -> Decimal:
    """The integral over [start, end) from every resource's sorted points, the plain way (a reference for tests and
    the rebuild's diff): each level times how long it held."""
    by_resource: dict[str, list[Point]] = {}
    for resource, point in points:
        by_resource.setdefault(resource, []).append(point)
    total = decimals.ZERO
    for resource in by_resource.keys() | carried.keys():
        level = carried.get(resource, decimals.ZERO)
        held_from = start
        for point in sorted_points(by_resource.get(resource, [])):
            if point.at >= end:
                break
            at = max(point.at, start)
            total = decimals.add(total, decimals.multiply(level, Decimal(at - held_from)))
            level, held_from = point.level, at
        total = decimals.add(total, decimals.multiply(level, Decimal(end - held_from)))
    return total


@dataclass(frozen=True, slots=True)
class Change:
    """What one point's insertion or removal does to a resource's points, the integral and the buckets."""

    points: list[Point]
    integral: Integral
    steps: list[Step]


def insert(points: Sequence[Point], point: Point, opening_level: Decimal) -> Change:
    """`point` inserted into a resource's sorted points (a point of the same order is already there: nothing)."""
    orders = [p.order for p in points]
    index = bisect_left(orders, point.order)
    if index < len(points) and points[index].order == point.order:
        return Change(list(points), Integral(), [])
    before = points[index - 1] if index > 0 else None
    after = points[index] if index < len(points) else None
    return Change(
        [*points[:index], point, *points[index:]],
        insertion(point, before, after, opening_level),
        steps(point, before, after, opening_level),
    )


def remove(points: Sequence[Point], point: Point, opening_level: Decimal) -> Change:
    """`point` removed from a resource's sorted points (not there: nothing), the exact inverse of inserting it."""
    orders = [p.order for p in points]
    index = bisect_left(orders, point.order)
    if index >= len(points) or points[index].order != point.order:
        return Change(list(points), Integral(), [])
    kept = [*points[:index], *points[index + 1 :]]
    before = kept[index - 1] if index > 0 else None
    after = kept[index] if index < len(kept) else None
    undone = [Step(s.at, decimals.negate(s.delta)) for s in steps(points[index], before, after, opening_level)]
    return Change(kept, removal(points[index], before, after, opening_level), undone)


def level_at_end(points: Sequence[Point], opening_level: Decimal) -> Decimal:
    """The resource's level after its last point: what it carries into the next period."""
    return points[-1].level if points else opening_level
