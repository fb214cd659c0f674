"""Billing periods: which period an instant belongs to, and the calendar buckets inside it.

Every other module asks this one, so per-tenant schedules (anchor day, time zone, their history) change one
place. Until tenants have settings, a period is the calendar month in UTC and a day is the UTC date.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BillingPeriod:
    """[start, end) of one tenant's billing period; `key` (its local start date) names it in store keys."""

    start: datetime
    end: datetime
    key: str

    def contains(self, instant: datetime) -> bool:
        return self.start <= instant < self.end


class PeriodSchedule(Protocol):
    def period_at(self, tenant_id: str, instant: datetime) -> BillingPeriod: ...

    def day_of(self, tenant_id: str, instant: datetime) -> date:
        """The tenant's calendar date of an instant: daily rollups follow it."""
        ...

    def day_bounds(self, tenant_id: str, day: date) -> tuple[datetime, datetime]: ...

    def period_starting(self, tenant_id: str, day: date) -> BillingPeriod | None: ...


def _month_start(year: int, month: int) -> datetime:
    return datetime(year, month, 1, tzinfo=UTC)


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


class CalendarMonthUtc:
    """Every tenant's period is the calendar month in UTC."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int], BillingPeriod] = {}

    def period_at(self, tenant_id: str, instant: datetime) -> BillingPeriod:
        utc = instant.astimezone(UTC)
        found = self._cache.get((utc.year, utc.month))
        if found is None:
            found = self._period(utc.year, utc.month)
        return found

    def _period(self, year: int, month: int) -> BillingPeriod:
        start = _month_start(year, month)
        period = BillingPeriod(start, _month_start(*_next_month(year, month)), start.date().isoformat())
        self._cache[(year, month)] = period
        return period

    def day_of(self, tenant_id: str, instant: datetime) -> date:
        return instant.astimezone(UTC).date()

    def day_bounds(self, tenant_id: str, day: date) -> tuple[datetime, datetime]:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return start, start + timedelta(days=1)

    def period_starting(self, tenant_id: str, day: date) -> BillingPeriod | None:
        if day.day != 1:
            return None
        return self._period(day.year, day.month)


def periods_between(
    schedule: PeriodSchedule, tenant_id: str, start: datetime, end: datetime
) -> Iterator[BillingPeriod]:
    """The periods that overlap [start, end), in order."""
    instant = start
    while instant < end:
        period = schedule.period_at(tenant_id, instant)
        yield period
        instant = period.end
