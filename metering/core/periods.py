"""Billing periods: which period an instant belongs to, and the calendar buckets inside it (pure).

A tenant's *terms* (billing anchor day and IANA time zone) say where its periods start: at local midnight of
the anchor day of each month. A local midnight that does not exist (a daylight-saving jump over it) starts at
the first valid instant after it; one that happens twice starts at the first. Terms change only at a period
boundary, so a tenant's *history* of terms cuts time into periods with no gap and no overlap, and an old event
replayed later lands in the period it landed in before. Daily rollups follow the tenant's local date under the
terms in force; hourly rollups are UTC hours.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from enum import StrEnum
from functools import cache
from itertools import pairwise
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from metering.core.shards import DEFAULT_SHARDS, ShardHistory, shards_at

MIN_ANCHOR_DAY = 1
# Every month has a 28th: an anchor day never needs clamping, so every period of a tenant starts on the same
# day of the month.
MAX_ANCHOR_DAY = 28


class PeriodStatus(StrEnum):
    """Open until its end; in grace until it closes (late events still count); closed: its totals are final."""

    OPEN = "open"
    GRACE = "grace"
    CLOSED = "closed"


class Granularity(StrEnum):
    """The buckets of a usage history: UTC hours, the tenant's local days, or whole billing periods."""

    HOUR = "hour"
    DAY = "day"
    PERIOD = "period"


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

    def shards(self, tenant_id: str, period: BillingPeriod) -> int:
        """How many store partitions the tenant's period is spread over (core/shards.py): fixed per period."""
        ...


class TermsError(ValueError):
    pass


@cache
def zone(name: str) -> tzinfo:
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # a folder such as "America" is an OSError
        raise TermsError(f"{name!r} is not an IANA time zone (e.g. Europe/Berlin)") from None


@dataclass(frozen=True, slots=True)
class Terms:
    """Where a tenant's periods start, from `effective_from` (None: since always) until the next terms."""

    anchor_day: int = 1
    timezone: str = "UTC"
    effective_from: datetime | None = None

    def __post_init__(self) -> None:
        if not MIN_ANCHOR_DAY <= self.anchor_day <= MAX_ANCHOR_DAY:
            raise TermsError(f"billing anchor day must be {MIN_ANCHOR_DAY} to {MAX_ANCHOR_DAY}")
        zone(self.timezone)

    @property
    def tz(self) -> tzinfo:
        return zone(self.timezone)

    def same_schedule(self, other: Terms) -> bool:
        return (self.anchor_day, self.timezone) == (other.anchor_day, other.timezone)


DEFAULT_TERMS = Terms()
History = tuple[Terms, ...]
DEFAULT_HISTORY: History = (DEFAULT_TERMS,)


def local_midnight(day: date, tz: tzinfo) -> datetime:
    """The first instant of a local date, in UTC: midnight, or the end of a daylight-saving gap over it."""
    wall = datetime(day.year, day.month, day.day)
    if tz is UTC:
        return wall.replace(tzinfo=UTC)
    early = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if early.astimezone(tz).replace(tzinfo=None) == wall:
        return early
    # Midnight is skipped. The two readings of it bracket the transition: find the first instant whose wall
    # time is past midnight (transitions fall on whole seconds).
    late = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    lo, hi = min(early, late), max(early, late)
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        mid = mid.replace(microsecond=0)
        if mid.astimezone(tz).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return hi if lo.astimezone(tz).replace(tzinfo=None) < wall else lo


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, day.day)


def _anchor_on_or_before(local: date, anchor: int) -> date:
    candidate = local.replace(day=anchor)
    return candidate if candidate <= local else _add_months(candidate, -1)


def _segment(history: History, instant: datetime) -> int:
    index = 0
    for i, terms in enumerate(history):
        if terms.effective_from is None or terms.effective_from <= instant:
            index = i
    return index


def period_in(history: History, instant: datetime) -> BillingPeriod:
    """The period of `history` that contains `instant`."""
    index = _segment(history, instant)
    terms = history[index]
    tz = terms.tz
    start_day = _anchor_on_or_before(instant.astimezone(tz).date(), terms.anchor_day)
    start = local_midnight(start_day, tz)
    if start > instant:  # the instant lies in a gap-shifted start's shadow: it belongs to the period before
        start_day = _add_months(start_day, -1)
        start = local_midnight(start_day, tz)
    end = local_midnight(_add_months(start_day, 1), tz)
    begin = terms.effective_from
    if begin is not None and start < begin:
        start, start_day = begin, begin.astimezone(tz).date()
    if index + 1 < len(history):
        following = history[index + 1].effective_from
        if following is not None and following < end:
            end = following
    return BillingPeriod(start, end, start_day.isoformat())


def day_of(history: History, instant: datetime) -> date:
    return instant.astimezone(history[_segment(history, instant)].tz).date()


def day_bounds(history: History, day: date) -> tuple[datetime, datetime]:
    """The instants of a local date, under the terms in force when it starts."""
    for terms in reversed(history):
        start = local_midnight(day, terms.tz)
        if terms.effective_from is None or start >= terms.effective_from:
            return start, local_midnight(day + timedelta(days=1), terms.tz)
    raise AssertionError("the first terms of a history hold since always")


def period_starting(history: History, day: date) -> BillingPeriod | None:
    """The period whose key (local start date) is `day`, if there is one. Around a change of time zone the
    local date spans different instants under each terms, so all of them are searched."""
    instant = min(local_midnight(day, terms.tz) for terms in history)
    end = max(local_midnight(day + timedelta(days=1), terms.tz) for terms in history)
    while instant < end:
        period = period_in(history, instant)
        if period.key == day.isoformat():
            return period
        instant = period.end
    return None


def next_boundary(history: History, after: datetime) -> datetime:
    """The first period boundary at or after `after`: where new terms may take effect."""
    period = period_in(history, after)
    return after if period.start == after else period.end


def change_terms(history: History, terms: Terms, not_before: datetime) -> History:
    """The history with `terms` in force from the first boundary at or after `not_before`. Terms not yet in
    force are replaced (an operator may change their mind before they apply); a change to what is already in
    force is no change. A period's key is its local start date, so a boundary whose first new period would
    share its key with the period before (two changes within days) is passed over for the next one."""
    settled = tuple(t for t in history if t.effective_from is None or t.effective_from <= not_before)
    if terms.same_schedule(settled[-1]):
        return settled
    after = not_before
    while True:
        start = next_boundary(settled, after)
        changed = (*settled, Terms(terms.anchor_day, terms.timezone, start))
        before = period_in(settled, start - timedelta(microseconds=1))
        if period_in(changed, start).key > before.key:
            return changed
        after = start + timedelta(microseconds=1)


def check_history(history: Sequence[Terms]) -> History:
    if not history or history[0].effective_from is not None:
        raise TermsError("a history starts with terms in force since always")
    for before, after in pairwise(history):
        if after.effective_from is None or (before.effective_from and after.effective_from <= before.effective_from):
            raise TermsError("terms must take effect in order")
    return tuple(history)


HistoryOf = Callable[[str], History]
ShardsOf = Callable[[str], ShardHistory]


def _one_shard(_tenant: str) -> ShardHistory:
    return DEFAULT_SHARDS


@dataclass
class TenantSchedule:
    """Periods per tenant, from each tenant's history of terms, and each period's shard count from the tenant's
    shard history. The last period met per tenant is kept, so the aggregator's hot path (thousands of events of a
    tenant in one period) costs a comparison per event."""

    history_of: HistoryOf
    shards_of: ShardsOf = _one_shard
    _last: dict[str, tuple[History, BillingPeriod]] = field(default_factory=dict)

    def _history(self, tenant_id: str) -> History:
        return self.history_of(tenant_id)

    def period_at(self, tenant_id: str, instant: datetime) -> BillingPeriod:
        history = self._history(tenant_id)
        last = self._last.get(tenant_id)
        if last is not None and last[0] is history and last[1].start <= instant < last[1].end:
            return last[1]
        period = period_in(history, instant)
        if len(self._last) > 100_000:
            self._last.clear()
        self._last[tenant_id] = (history, period)
        return period

    def day_of(self, tenant_id: str, instant: datetime) -> date:
        history = self._history(tenant_id)
        if len(history) == 1 and history[0].tz is UTC:
            return instant.astimezone(UTC).date()
        return day_of(history, instant)

    def day_bounds(self, tenant_id: str, day: date) -> tuple[datetime, datetime]:
        return day_bounds(self._history(tenant_id), day)

    def period_starting(self, tenant_id: str, day: date) -> BillingPeriod | None:
        return period_starting(self._history(tenant_id), day)

    def shards(self, tenant_id: str, period: BillingPeriod) -> int:
        return shards_at(self.shards_of(tenant_id), period.start)


def calendar_month_utc() -> TenantSchedule:
    """Every tenant's period is the calendar month in UTC (the default terms)."""
    return TenantSchedule(lambda _tenant: DEFAULT_HISTORY)


# Kept as a name for the default schedule: tests and benchmarks that need no tenant settings use it.
CalendarMonthUtc = calendar_month_utc


def periods_between(
    schedule: PeriodSchedule, tenant_id: str, start: datetime, end: datetime
) -> Iterator[BillingPeriod]:
    """The periods that overlap [start, end), in order."""
    instant = start
    while instant < end:
        period = schedule.period_at(tenant_id, instant)
        yield period
        instant = period.end
