"""Reading usage back: a period's aggregate, history in hour, day or period buckets, group breakdowns.

Everything is read from the aggregate rows (the state row for a period, day rows for days and hours, group
rows for breakdowns), never from markers, so a read costs one point read or one short range query per period.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from metering.core import decimals
from metering.core.clock import Clock, hour_key, utc_now
from metering.core.decimals import DecimalText
from metering.core.meters import Aggregation, Meter, MeterCatalog
from metering.core.periods import BillingPeriod, Granularity, PeriodSchedule, PeriodStatus, periods_between
from metering.ledger.batch import STATE_ROW, Cell, day_row_key, partition_key
from metering.ledger.control import closed_through
from metering.ledger.rows import CLOSED, cell_of, combine, combine_blocks
from metering.stores import Store

# History ranges are bounded so one request stays one short query per period.
MAX_HOUR_DAYS = 31
MAX_DAY_DAYS = 366
MAX_PERIOD_DAYS = 3 * 366


class UsageAggregate(BaseModel):
    """A tenant's usage of one meter over one billing period."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str
    metric: str
    unit: str
    aggregation: Aggregation
    period_start: datetime
    period_end: datetime
    status: PeriodStatus
    total: DecimalText
    event_count: int
    last_updated: datetime | None


class UsageBucket(BaseModel):
    model_config = ConfigDict(frozen=True)

    start: datetime
    end: datetime
    total: DecimalText
    event_count: int


class GroupTotal(BaseModel):
    """One value of a dimension; `key` is None for the overflow bucket past the meter's `max_group_values`."""

    model_config = ConfigDict(frozen=True)

    key: str | None
    total: DecimalText
    event_count: int


class UnknownMeter(LookupError):
    pass


class RangeError(ValueError):
    """A history request the store cannot answer cheaply or at all; the message says why."""


@dataclass(frozen=True, slots=True)
class _Span:
    cell: Cell | None

    @property
    def total(self) -> Decimal:
        return decimals.ZERO if self.cell is None else self.cell.value

    @property
    def count(self) -> int:
        return 0 if self.cell is None else self.cell.count


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

    def current(self, tenant_id: str, metric: str) -> UsageAggregate:
        return self.for_period(tenant_id, metric, self.schedule.period_at(tenant_id, self.clock()))

    def for_period(self, tenant_id: str, metric: str, period: BillingPeriod) -> UsageAggregate:
        meter = self.meter(metric)
        state = self.store.usage.read(partition_key(tenant_id, period), [STATE_ROW]).get(STATE_ROW)
        span = _Span(None)
        updated: datetime | None = None
        status = PeriodStatus.OPEN if self.clock() < period.end else PeriodStatus.GRACE
        if state is not None:
            span = _Span(cell_of(state.data["totals"].get(metric)))
            if state.data["updated"]:
                updated = datetime.fromisoformat(state.data["updated"])
            if state.data["status"] == CLOSED:
                status = PeriodStatus.CLOSED
        if status is PeriodStatus.GRACE and self._passed_by_closer(period):
            status = PeriodStatus.CLOSED
        return UsageAggregate(
            tenant_id=tenant_id,
            metric=metric,
            unit=meter.unit,
            aggregation=meter.aggregation,
            period_start=period.start,
            period_end=period.end,
            status=status,
            total=span.total,
            event_count=span.count,
            last_updated=updated,
        )

    def _passed_by_closer(self, period: BillingPeriod) -> bool:
        """A period without usage has no state row to close: it is closed once the closer has passed its end."""
        through = closed_through(self.store.control)
        return through is not None and period.end <= through

    def history(
        self, tenant_id: str, metric: str, start: date, end: date, granularity: Granularity = Granularity.DAY
    ) -> list[UsageBucket]:
        """Buckets from the start of `start` to the end of `end` (tenant-local dates), empty ones included."""
        meter = self.meter(metric)
        if end < start:
            raise RangeError("end must not be before start")
        days = (end - start).days + 1
        limit = {Granularity.HOUR: MAX_HOUR_DAYS, Granularity.DAY: MAX_DAY_DAYS, Granularity.PERIOD: MAX_PERIOD_DAYS}
        if days > limit[granularity]:
            raise RangeError(f"{granularity} history covers at most {limit[granularity]} days per request")
        if granularity is Granularity.HOUR and meter.aggregation is Aggregation.UNIQUE_COUNT:
            raise RangeError("unique_count meters keep day and period buckets, not hours")
        begin = self.schedule.day_bounds(tenant_id, start)[0]
        finish = self.schedule.day_bounds(tenant_id, end)[1]
        periods = list(periods_between(self.schedule, tenant_id, begin, finish))
        if granularity is Granularity.PERIOD:
            return [self._period_bucket(tenant_id, meter, period) for period in periods]
        day_rows = {day: block["m"] for day, block in self._day_blocks(tenant_id, periods, start, end).items()}
        if granularity is Granularity.DAY:
            return [self._day_bucket(tenant_id, meter, day, day_rows) for day in _dates(start, end)]
        return self._hour_buckets(meter, begin, finish, day_rows)

    def groups(self, tenant_id: str, metric: str, dimension: str, period: BillingPeriod) -> list[GroupTotal]:
        meter = self.meter(metric)
        if dimension not in meter.group_by:
            allowed = ", ".join(meter.group_by) or "none"
            raise RangeError(f"{metric} cannot be grouped by {dimension!r} (group_by dimensions: {allowed})")
        kind = meter.aggregation
        values: dict[str, Cell | None] = {}
        overflow: Cell | None = None
        for block in self._day_blocks(tenant_id, [period], None, None).values():
            stored = block["m"].get(metric, {}).get("g", {}).get(dimension)
            if stored is None:
                continue
            for value, data in stored["v"].items():
                values[value] = combine(kind, [values.get(value), cell_of(data)])
            overflow = combine(kind, [overflow, cell_of(stored["o"])])
        groups = [
            GroupTotal(key=k, total=_Span(c).total, event_count=_Span(c).count) for k, c in sorted(values.items())
        ]
        if overflow is not None:
            groups.append(GroupTotal(key=None, total=overflow.value, event_count=overflow.count))
        return groups

    # -- buckets -------------------------------------------------------------------------------------------

    def _period_bucket(self, tenant_id: str, meter: Meter, period: BillingPeriod) -> UsageBucket:
        aggregate = self.for_period(tenant_id, meter.name, period)
        return UsageBucket(start=period.start, end=period.end, total=aggregate.total, event_count=aggregate.event_count)

    def _day_blocks(
        self, tenant_id: str, periods: list[BillingPeriod], start: date | None, end: date | None
    ) -> dict[str, dict[str, Any]]:
        """The blocks of the days from start to end (all of the periods' days when None), each combined from its
        day row and, for the latest day, the state row."""
        first = day_row_key(start.isoformat() if start else "")
        stop = day_row_key((end + timedelta(days=1)).isoformat() if end else "~")
        found: dict[str, list[dict[str, Any]]] = {}
        for period in periods:
            partition = partition_key(tenant_id, period)
            for row in self.store.usage.range(partition, first, stop):
                found.setdefault(row.data["day"], []).append(row.data)
            state = self.store.usage.read(partition, [STATE_ROW]).get(STATE_ROW)
            today = state.data.get("today") if state else None
            if today and day_row_key(today["day"]) >= first and day_row_key(today["day"]) < stop:
                found.setdefault(today["day"], []).append(today)
        return {day: block for day, blocks in found.items() if (block := combine_blocks(blocks)) is not None}

    def _day_bucket(self, tenant_id: str, meter: Meter, day: date, day_rows: dict[str, dict]) -> UsageBucket:
        stored = day_rows.get(day.isoformat(), {}).get(meter.name)
        span = _Span(cell_of(stored["d"]) if stored else None)
        lo, hi = self.schedule.day_bounds(tenant_id, day)
        return UsageBucket(start=lo, end=hi, total=span.total, event_count=span.count)

    def _hour_buckets(
        self, meter: Meter, begin: datetime, finish: datetime, day_rows: dict[str, dict]
    ) -> list[UsageBucket]:
        # An hour of a tenant whose offset is not whole hours spans two local days: combine both rows' cells.
        hours: dict[str, Cell | None] = {}
        for cells in day_rows.values():
            stored = cells.get(meter.name)
            if stored:
                for hour, data in stored["h"].items():
                    hours[hour] = combine(meter.aggregation, [hours.get(hour), cell_of(data)])
        buckets = []
        instant = begin.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        while instant < finish:
            span = _Span(hours.get(hour_key(instant)))
            buckets.append(
                UsageBucket(start=instant, end=instant + timedelta(hours=1), total=span.total, event_count=span.count)
            )
            instant += timedelta(hours=1)
        return buckets


def _dates(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]
