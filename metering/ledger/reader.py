"""Reading usage back: a period's figures, history in hour, day or period buckets, group breakdowns.

Everything is read from the aggregate rows (the state row for a period, day rows for days and hours and
their groups), never from markers, so a read costs one point read or one short range query per period and shard.
A period of several shards is read from each and combined by each meter's kind (shards.py). Results are cells
(exact figures with their event counts); the HTTP layer turns them into the contract's models.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from metering.core import decimals, estimates, integrals
from metering.core.clock import Clock, hour_key, utc_now
from metering.core.integrals import Bucket as LevelBucket
from metering.core.integrals import Integral, Point, Step, bucket_of
from metering.core.meters import Aggregation, GroupKind, Meter, MeterCatalog
from metering.core.periods import BillingPeriod, Granularity, PeriodSchedule, PeriodStatus, periods_between
from metering.ledger.cells import Cell, combine
from metering.ledger.control import closed_through
from metering.ledger.keys import (
    STATE_ROW,
    day_row_key,
    days,
    level_buckets,
    partition_key,
    partition_keys,
    points_key,
    resources,
)
from metering.ledger.levels import end_level, figures_at, last_day_key
from metering.ledger.placement import value_shard
from metering.ledger.rows import DayBlock, StateRow, combine_blocks
from metering.ledger.shards import all_carried, all_closed, combine_shards, period_state, shard_states
from metering.stores import Row, RowTable, Store

# History ranges are bounded so one request stays one short query per period.
MAX_HOUR_DAYS = 31
MAX_DAY_DAYS = 366
MAX_PERIOD_DAYS = 3 * 366


class UnknownMeter(LookupError):
    pass


class RangeError(ValueError):
    """A history request the store cannot answer cheaply or at all; the message says why."""


class _Figures:
    """A cell's figures, zero for no cell (a span without usage). A sampled meter's total is an estimate, shown
    with its error bound; other meters' figures have neither (None)."""

    __slots__ = ()
    cell: Cell | None
    sampled: bool

    @property
    def estimate(self) -> bool | None:
        return True if self.sampled else None

    @property
    def error_bound(self) -> Decimal | None:
        if not self.sampled:
            return None
        return estimates.error_bound(None if self.cell is None else self.cell.variance)

    @property
    def total(self) -> Decimal:
        return decimals.ZERO if self.cell is None else self.cell.value

    @property
    def event_count(self) -> int:
        return 0 if self.cell is None else self.cell.count


@dataclass(frozen=True, slots=True)
class PeriodUsage(_Figures):
    """A tenant's usage of one meter over one billing period."""

    tenant_id: str
    meter: Meter
    period: BillingPeriod
    status: PeriodStatus
    cell: Cell | None
    last_updated: datetime | None
    # time_weighted meters: the level at the instant read, and the average over the period so far.
    level: Decimal | None = None
    average: Decimal | None = None

    @property
    def sampled(self) -> bool:
        return self.meter.is_sampled

    @property
    def limited(self) -> Decimal:
        """The figure quotas compare with limits: a time_weighted meter's level, every other meter's total."""
        return self.level if self.level is not None else self.total

    @property
    def metric(self) -> str:
        return self.meter.name

    @property
    def unit(self) -> str:
        return self.meter.unit

    @property
    def aggregation(self) -> Aggregation:
        return self.meter.aggregation

    @property
    def period_start(self) -> datetime:
        return self.period.start

    @property
    def period_end(self) -> datetime:
        return self.period.end


@dataclass(frozen=True, slots=True)
class Bucket(_Figures):
    start: datetime
    end: datetime
    cell: Cell | None
    sampled: bool = False


@dataclass(frozen=True, slots=True)
class GroupUsage(_Figures):
    """One group of a breakdown: a value of the dimension (`key`), the events without the dimension, or the
    overflow bucket past the meter's `max_group_values` (those two with `key` None)."""

    key: str | None
    cell: Cell | None
    kind: GroupKind = GroupKind.VALUE
    sampled: bool = False


@dataclass(frozen=True, slots=True)
class PeriodChanges:
    """What changed in a tenant's period since a reader last looked (the exporters' view of it).

    `token` stands for the figures as they are now (per shard, the version of its state row): give it back as
    `since` to learn what changed after. `hours` are the UTC hours whose cells changed since then, or None when
    every hour may have (a first look, or more hours changed than the state rows keep a list of)."""

    token: dict[str, int]
    hours: frozenset[str] | None
    cells: dict[str, Cell]
    closed: bool


@dataclass(slots=True)
class ReadThrough:
    """The previous period's levels in a period they are not carried into yet: the integral they add, and the
    same as steps of the level for history buckets."""

    integral: Integral
    steps: list[Step]

    def add(self, level: Decimal, start: int, until: int | None) -> None:
        """`level` held from `start` (the period start) until `until` (None: from then on)."""
        self.integral = self.integral.plus(
            integrals.insertion(Point(start, "", level), None, _at(until), decimals.ZERO)
        )
        self.steps.append(Step(start, level))
        if until is not None:
            self.steps.append(Step(until, decimals.negate(level)))


def _at(until: int | None) -> Point | None:
    return None if until is None else Point(until, "", decimals.ZERO)


class UsageReader:
    def __init__(
        self, store: Store, catalog: MeterCatalog, schedule: PeriodSchedule, *, clock: Clock = utc_now
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.schedule = schedule
        self.clock = clock

    def meter(self, metric: str) -> Meter:
        meter = self.catalog.get(metric)
        if meter is None:
            raise UnknownMeter(metric)
        return meter

    def current(self, tenant_id: str, metric: str) -> PeriodUsage:
        return self.for_period(tenant_id, metric, self.schedule.period_at(tenant_id, self.clock()))

    def for_period(self, tenant_id: str, metric: str, period: BillingPeriod) -> PeriodUsage:
        meter = self.meter(metric)
        rows = shard_states(self.store.usage, tenant_id, period, self.schedule.shards(tenant_id, period))
        state = period_state(rows, self.catalog)
        status = PeriodStatus.OPEN if self.clock() < period.end else PeriodStatus.GRACE
        if all_closed(rows):
            status = PeriodStatus.CLOSED
        if status is PeriodStatus.GRACE and self._passed_by_closer(period):
            status = PeriodStatus.CLOSED
        usage = PeriodUsage(
            tenant_id=tenant_id,
            meter=meter,
            period=period,
            status=status,
            cell=state.total(metric) if state is not None else None,
            last_updated=state.updated if state is not None else None,
        )
        return self._levelled(usage, state, all_carried(rows))

    def _levelled(self, usage: PeriodUsage, state: StateRow | None, carried: bool) -> PeriodUsage:
        """A time_weighted meter's figures at the instant read: its integral (closed + L x t - M) to now, or to the
        period end once it ended, as unit-hours, with the level and the average."""
        if usage.meter.aggregation is not Aggregation.TIME_WEIGHTED:
            return usage
        period = usage.period
        figure = state.levels(usage.metric) if state is not None else Integral()
        if not carried:
            figure = figure.plus(self.read_through(usage.tenant_id, usage.meter, period).integral)
        latest = state.latest_point(usage.metric) if state is not None else None
        found = figures_at(figure, period.start, period.end, self.clock(), latest)
        if figure.is_zero and usage.cell is None:
            # No level in the period, and none carried in: no usage, as for any meter.
            return replace(usage, level=decimals.ZERO, average=decimals.ZERO)
        count = usage.cell.count if usage.cell is not None else 0
        return replace(usage, cell=Cell(found.total, count), level=found.level, average=found.average)

    def used_in(self, tenant_id: str, period: BillingPeriod) -> list[PeriodUsage]:
        """The period's usage of every meter of the catalog it counted events of, from one read of each shard's
        state row (a meter since removed from the catalog is left out)."""
        rows = shard_states(self.store.usage, tenant_id, period, self.schedule.shards(tenant_id, period))
        state = period_state(rows, self.catalog)
        if state is None:
            return []
        status = PeriodStatus.OPEN if self.clock() < period.end else PeriodStatus.GRACE
        if all_closed(rows) or (status is PeriodStatus.GRACE and self._passed_by_closer(period)):
            status = PeriodStatus.CLOSED
        totals = state.totals()
        levelled = {metric: Cell(decimals.ZERO, 0) for metric in state.data.get("tw", {}) if metric not in totals}
        return [
            self._levelled(PeriodUsage(tenant_id, meter, period, status, cell, state.updated), state, all_carried(rows))
            for metric, cell in sorted({**totals, **levelled}.items())
            if (meter := self.catalog.get(metric)) is not None
            and (cell.count > 0 or meter.aggregation is Aggregation.TIME_WEIGHTED)
        ]

    def changes(self, tenant_id: str, period: BillingPeriod, since: Mapping[str, int] | None) -> PeriodChanges:
        """The period's figures per meter and the hours changed since `since` (a token this returned before)."""
        token: dict[str, int] = {}
        hours: set[str] | None = set()
        shard_cells: list[dict[str, Cell]] = []
        closed = self._passed_by_closer(period)
        for shard, partition in enumerate(partition_keys(tenant_id, period, self.schedule.shards(tenant_id, period))):
            row = self.store.usage.read(partition, [STATE_ROW]).get(STATE_ROW)
            state = StateRow(row.data) if row is not None else None
            name = str(shard)
            token[name] = state.version if state is not None else 0
            if state is None:
                continue
            closed = closed or state.is_closed
            shard_cells.append(state.totals())
            seen = None if since is None else since.get(name)
            if hours is None or seen == token[name]:
                continue
            if seen is None or seen < state.changes_floor:
                hours = None
            else:
                hours |= {hour for hour, version in state.changed_hours.items() if version > seen}
        cells: dict[str, Cell] = {}
        for metric in {metric for found in shard_cells for metric in found}:
            meter = self.catalog.get(metric)
            if meter is not None:
                combined = combine_shards(meter.aggregation, [found.get(metric) for found in shard_cells])
                if combined is not None:
                    cells[metric] = combined
        return PeriodChanges(token, None if hours is None else frozenset(hours), cells, closed)

    def hour_cells(
        self, tenant_id: str, period: BillingPeriod, hours: Collection[str] | None
    ) -> dict[str, dict[str, Cell]]:
        """Per meter, the cells of the period's UTC `hours` that have any (every hour of it when None). Meters
        without hour cells (unique_count) are absent."""
        if hours is not None and not hours:
            return {}
        if hours is None:
            first, last = None, None
        else:
            starts = [datetime.fromisoformat(hour + ":00:00+00:00") for hour in hours]
            # An hour of a tenant whose offset is not whole hours falls on two local days.
            first = self.schedule.day_of(tenant_id, max(min(starts), period.start))
            last = self.schedule.day_of(tenant_id, min(max(starts) + timedelta(minutes=59, seconds=59), period.end))
        found: dict[str, dict[str, Cell]] = {}
        for block in self._day_blocks(tenant_id, [period], first, last).values():
            for metric in block.data["m"]:
                meter = self.catalog.get(metric)
                cells = block.meter(metric)
                if meter is None or cells is None:
                    continue
                for hour, cell in cells.hours():
                    if hours is None or hour in hours:
                        per_hour = found.setdefault(metric, {})
                        per_hour[hour] = combine(meter.aggregation, [per_hour.get(hour), cell]) or cell
        return found

    def _passed_by_closer(self, period: BillingPeriod) -> bool:
        """A period without usage has no state row to close: it is closed once the closer has passed its end."""
        through = closed_through(self.store.control)
        return through is not None and period.end <= through

    def history(
        self, tenant_id: str, metric: str, start: date, end: date, granularity: Granularity = Granularity.DAY
    ) -> list[Bucket]:
        """Buckets from the start of `start` to the end of `end` (tenant-local dates), empty ones included."""
        meter = self.meter(metric)
        if end < start:
            raise RangeError("end must not be before start")
        length = (end - start).days + 1
        limit = {Granularity.HOUR: MAX_HOUR_DAYS, Granularity.DAY: MAX_DAY_DAYS, Granularity.PERIOD: MAX_PERIOD_DAYS}
        if length > limit[granularity]:
            raise RangeError(f"{granularity} history covers at most {limit[granularity]} days per request")
        if granularity is Granularity.HOUR and meter.aggregation is Aggregation.UNIQUE_COUNT:
            raise RangeError("unique_count meters keep day and period buckets, not hours")
        begin = self.schedule.day_bounds(tenant_id, start)[0]
        finish = self.schedule.day_bounds(tenant_id, end)[1]
        periods = list(periods_between(self.schedule, tenant_id, begin, finish))
        if granularity is Granularity.PERIOD:
            return [self._period_bucket(tenant_id, meter, period) for period in periods]
        if meter.aggregation is Aggregation.TIME_WEIGHTED:
            return self._level_buckets(tenant_id, meter, periods, start, end, granularity=granularity)
        blocks = self._day_blocks(tenant_id, periods, start, end)
        if granularity is Granularity.DAY:
            return [self._day_bucket(tenant_id, meter, day, blocks) for day in _dates(start, end)]
        return self._hour_buckets(meter, begin, finish, blocks)

    def groups(self, tenant_id: str, metric: str, dimension: str, period: BillingPeriod) -> list[GroupUsage]:
        meter = self.meter(metric)
        if dimension not in meter.group_by:
            allowed = ", ".join(meter.group_by) or "none"
            raise RangeError(f"{metric} cannot be grouped by {dimension!r} (group_by dimensions: {allowed})")
        kind = meter.aggregation
        values: dict[str, Cell | None] = {}
        overflow: Cell | None = None
        absent: Cell | None = None
        for block in self._day_blocks(tenant_id, [period], None, None).values():
            cells = block.meter(metric)
            group = cells.group(dimension) if cells is not None else None
            if group is None:
                continue
            for value, cell in group.values.items():
                values[value] = combine(kind, [values.get(value), cell])
            overflow = combine(kind, [overflow, group.overflow])
            absent = combine(kind, [absent, group.absent])
        sampled = meter.is_sampled
        groups = [GroupUsage(key, cell, sampled=sampled) for key, cell in sorted(values.items())]
        if absent is not None:
            groups.append(GroupUsage(None, absent, GroupKind.ABSENT, sampled))
        if overflow is not None:
            groups.append(GroupUsage(None, overflow, GroupKind.OVERFLOW, sampled))
        return groups

    # -- buckets -------------------------------------------------------------------------------------------

    def _period_bucket(self, tenant_id: str, meter: Meter, period: BillingPeriod) -> Bucket:
        return Bucket(period.start, period.end, self.for_period(tenant_id, meter.name, period).cell, meter.is_sampled)

    def read_through(self, tenant_id: str, meter: Meter, period: BillingPeriod) -> ReadThrough:
        """What the previous period's levels add to a period they are not carried into yet, exactly: every resource
        of the previous period without a row here holds its end level from the period start; a resource whose
        first point here read its opening before the previous period's last points came in (its grace) holds the
        difference until that first point. (Once carried, the closer has written both into the rows.)"""
        previous = self.schedule.period_at(tenant_id, period.start - timedelta(microseconds=1))
        previous_shards = self.schedule.shards(tenant_id, previous)
        before = period_state(shard_states(self.store.usage, tenant_id, previous, previous_shards), self.catalog)
        if before is None:
            return ReadThrough(Integral(), [])
        start = integrals.micros(period.start)
        found = ReadThrough(Integral(), [])
        held = decimals.ZERO  # the end levels of the resources that have a row here
        for partition in partition_keys(tenant_id, period, self.schedule.shards(tenant_id, period)):
            here = self.store.usage.range(partition, *resources(meter.name))
            there: dict[str, set[str]] = {}  # the previous period's partition of each resource here
            for row in here:
                shard = value_shard(meter, row.data["x"], previous_shards) if previous_shards > 1 else 0
                there.setdefault(partition_key(tenant_id, previous, shard), set()).add(row.key)
            ends: dict[str, Decimal] = {}
            for previous_partition, keys in there.items():
                ends.update(end_levels_in(self.store.usage, previous_partition, keys))
            for row in here:
                ended = ends[row.key]
                held = decimals.add(held, ended)
                delta = decimals.subtract(ended, Decimal(row.data["o"]))
                if delta:
                    found.add(delta, start, self._first_point(partition, meter.name, row.data))
        rest = decimals.subtract(before.levels(meter.name).level, held)
        if rest:
            found.add(rest, start, None)
        return found

    def _first_point(self, partition: str, metric: str, resource: Mapping[str, Any]) -> int | None:
        if not resource["days"]:
            return None
        key = points_key(metric, resource["x"], resource["days"][0])
        row = self.store.usage.read(partition, [key]).get(key)
        return int(row.data["pts"][0][0]) if row is not None and row.data["pts"] else None

    def _level_buckets(
        self,
        tenant_id: str,
        meter: Meter,
        periods: list[BillingPeriod],
        start: date,
        end: date,
        *,
        granularity: Granularity,
    ) -> list[Bucket]:
        """A time_weighted meter's day or hour buckets: each period's bucket rows (every shard's, added) laid out
        from the period start, so each bucket's integral is its opening level x its length + its own steps."""
        blocks = self._day_blocks(tenant_id, periods, start, end)
        now = integrals.micros(self.clock())
        wanted: list[tuple[datetime, datetime]]
        if granularity is Granularity.DAY:
            wanted = [self.schedule.day_bounds(tenant_id, day) for day in _dates(start, end)]
        else:
            begin = self.schedule.day_bounds(tenant_id, start)[0].astimezone(UTC)
            finish = self.schedule.day_bounds(tenant_id, end)[1]
            instant = begin.replace(minute=0, second=0, microsecond=0)
            wanted = []
            while instant < finish:
                wanted.append((instant, instant + timedelta(hours=1)))
                instant += timedelta(hours=1)
        figures: dict[datetime, Decimal] = {}
        for period in periods:
            rows = shard_states(self.store.usage, tenant_id, period, self.schedule.shards(tenant_id, period))
            steps = [] if all_carried(rows) else self.read_through(tenant_id, meter, period).steps
            figures.update(self._period_level_buckets(tenant_id, meter, period, granularity, now=now, steps=steps))
        buckets = []
        for lo, hi in wanted:
            cells = blocks.get(self.schedule.day_of(tenant_id, lo).isoformat())
            day = cells.meter(meter.name) if cells is not None else None
            count = 0
            if day is not None:
                if granularity is Granularity.DAY:
                    count = day.day.count if day.day is not None else 0
                else:
                    count = sum(c.count for hour, c in day.hours() if hour == hour_key(lo))
            figure = figures.get(lo, decimals.ZERO)
            buckets.append(Bucket(lo, hi, Cell(integrals.unit_hours(figure), count) if figure or count else None))
        return buckets

    def _period_level_buckets(
        self,
        tenant_id: str,
        meter: Meter,
        period: BillingPeriod,
        granularity: Granularity,
        *,
        now: int,
        steps: list[Step],
    ) -> dict[datetime, Decimal]:
        """Every day or hour bucket of one period by its start, as an exact integral in unit-microseconds; `steps`
        are the level's changes read through from the previous period."""
        stored: dict[str, LevelBucket] = {}
        hours: dict[str, LevelBucket] = {}
        for partition in partition_keys(tenant_id, period, self.schedule.shards(tenant_id, period)):
            for row in self.store.usage.range(partition, *level_buckets(meter.name)):
                day = row.data["day"]
                stored[day] = stored.get(day, LevelBucket()).plus(LevelBucket.from_json(row.data["d"]))
                for hour, figures in row.data["h"].items():
                    hours[hour] = hours.get(hour, LevelBucket()).plus(LevelBucket.from_json(figures))
        for step in steps:
            moment = integrals.instant(step.at)
            local = self.schedule.day_of(tenant_id, moment)
            day_end = integrals.micros(self.schedule.day_bounds(tenant_id, local)[1])
            stored[local.isoformat()] = stored.get(local.isoformat(), LevelBucket()).plus(bucket_of(step, day_end))
            hour_end = step.at - step.at % integrals.MICROS_PER_HOUR + integrals.MICROS_PER_HOUR
            hours[hour_key(moment)] = hours.get(hour_key(moment), LevelBucket()).plus(bucket_of(step, hour_end))
        laid: list[tuple[int, int, LevelBucket]] = []
        starts: list[datetime] = []
        if granularity is Granularity.DAY:
            day = self.schedule.day_of(tenant_id, period.start)
            while True:
                lo, hi = self.schedule.day_bounds(tenant_id, day)
                if lo >= period.end:
                    break
                starts.append(lo)
                laid.append((integrals.micros(lo), integrals.micros(hi), stored.get(day.isoformat(), LevelBucket())))
                day += timedelta(days=1)
        else:
            instant = period.start
            while instant < period.end:
                starts.append(instant)
                at = integrals.micros(instant)
                laid.append((at, at + integrals.MICROS_PER_HOUR, hours.get(hour_key(instant), LevelBucket())))
                instant += timedelta(hours=1)
        found = integrals.bucket_integrals(decimals.ZERO, laid, until=max(now, integrals.micros(period.start)))
        return {lo: figure for lo, (figure, _) in zip(starts, found, strict=True)}

    def _day_blocks(
        self, tenant_id: str, periods: list[BillingPeriod], start: date | None, end: date | None
    ) -> dict[str, DayBlock]:
        """The blocks of the days from start to end (all of the periods' days when None), each combined from its
        day rows and, for each shard's latest day, its state row."""
        wanted = days(start.isoformat() if start else None, (end + timedelta(days=1)).isoformat() if end else None)
        found: dict[str, list[DayBlock]] = {}
        for period in periods:
            for partition in partition_keys(tenant_id, period, self.schedule.shards(tenant_id, period)):
                for row in self.store.usage.range(partition, *wanted):
                    block = DayBlock(row.data)
                    found.setdefault(block.day, []).append(block)
                row = self.store.usage.read(partition, [STATE_ROW]).get(STATE_ROW)
                today = StateRow(row.data).today if row is not None else None
                if today is not None and wanted.holds(day_row_key(today.day)):
                    found.setdefault(today.day, []).append(today)
        return {day: block for day, blocks in found.items() if (block := combine_blocks(blocks)) is not None}

    def _day_bucket(self, tenant_id: str, meter: Meter, day: date, blocks: dict[str, DayBlock]) -> Bucket:
        block = blocks.get(day.isoformat())
        cells = block.meter(meter.name) if block is not None else None
        lo, hi = self.schedule.day_bounds(tenant_id, day)
        return Bucket(lo, hi, cells.day if cells is not None else None, meter.is_sampled)

    def _hour_buckets(
        self, meter: Meter, begin: datetime, finish: datetime, blocks: dict[str, DayBlock]
    ) -> list[Bucket]:
        # An hour of a tenant whose offset is not whole hours spans two local days: combine both rows' cells.
        hours: dict[str, Cell | None] = {}
        for block in blocks.values():
            cells = block.meter(meter.name)
            if cells is not None:
                for hour, cell in cells.hours():
                    hours[hour] = combine(meter.aggregation, [hours.get(hour), cell])
        buckets = []
        instant = begin.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        while instant < finish:
            cell = hours.get(hour_key(instant))
            buckets.append(Bucket(instant, instant + timedelta(hours=1), cell, meter.is_sampled))
            instant += timedelta(hours=1)
        return buckets


def _dates(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def end_levels(table: RowTable, partition: str, rows: Sequence[Row]) -> dict[str, Decimal]:
    """The level at its period's end of each resource row of `partition` (by key): its last day's points are read
    in one go."""
    day_keys = {row.key: last_day_key(row.data) for row in rows}
    last_days = table.read(partition, sorted({key for key in day_keys.values() if key}))
    return {
        row.key: end_level(row.data, last_days.get(day_key) if (day_key := day_keys[row.key]) else None) for row in rows
    }


def end_levels_in(table: RowTable, partition: str, keys: Collection[str]) -> dict[str, Decimal]:
    """The same for resource keys, zero for a resource without a row in `partition`."""
    found = end_levels(table, partition, list(table.read(partition, keys).values()))
    return {key: found.get(key, decimals.ZERO) for key in keys}
