"""Billing periods per tenant: anchor day and time zone, daylight-saving edges, and histories of terms.

Expected instants in the examples come from the time zone rules (tzdata), not from the code under test; the
property tests check the code against a brute-force scan of the zone's wall clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from itertools import pairwise
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.core.periods import (
    DEFAULT_HISTORY,
    BillingPeriod,
    History,
    TenantSchedule,
    Terms,
    TermsError,
    calendar_month_utc,
    change_terms,
    check_history,
    day_bounds,
    day_of,
    local_midnight,
    next_boundary,
    period_in,
    period_starting,
    periods_between,
)

MICROSECOND = timedelta(microseconds=1)

# Zones with every kind of edge: daylight saving at local midnight (a skipped midnight, a doubled one, a doubled
# hour before midnight), ordinary transitions at 02:00/03:00, a 30-minute shift, offsets that are not whole hours,
# the extremes of the offset range, a skipped calendar day (Samoa, 2011-12-30), and zones that dropped daylight
# saving within the range.
ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Santiago",
    "America/Havana",
    "America/Sao_Paulo",
    "Asia/Beirut",
    "Asia/Damascus",
    "Asia/Tehran",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "Pacific/Apia",
)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def first_instant(day: date, zone_name: str) -> datetime:
    """The first instant whose wall clock in the zone reads `day` 00:00 or later, by scanning the clock.

    Every offset lies within -12:00..+14:00, so that instant lies within 15 hours of midnight read as UTC. Samples
    every 15 minutes find the quarter hour it lies in, minutes pin it (transitions since 2000 fall on whole
    minutes)."""
    tz = ZoneInfo(zone_name)
    wall = datetime.combine(day, time())

    def reached(instant: datetime) -> bool:
        return instant.astimezone(tz).replace(tzinfo=None) >= wall

    instant = wall.replace(tzinfo=UTC) - timedelta(hours=15)
    assert not reached(instant)
    while not reached(instant):
        instant += timedelta(minutes=15)
    instant -= timedelta(minutes=15)
    while not reached(instant):
        instant += timedelta(minutes=1)
    return instant


def month_after(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, day.day)


def next_anchor_after(day: date, anchor: int) -> date:
    """The first date after `day` that falls on the anchor day of its month."""
    return day.replace(day=anchor) if day.day < anchor else month_after(day.replace(day=anchor))


def terms_at(history: History, instant: datetime) -> Terms:
    return [t for t in history if t.effective_from is None or t.effective_from <= instant][-1]


def walk(history: History, start: datetime, stop: datetime) -> Iterator[BillingPeriod]:
    """The periods from the one holding `start` to the one holding `stop`, each found from its predecessor's end
    (checked to start there, so a period that does not move time forward fails instead of looping)."""
    period = period_in(history, start)
    yield period
    while period.end <= stop:
        following = period_in(history, period.end)
        assert period.start < period.end == following.start, (period, following)
        period = following
        yield period


def keys_of(history: History, start: datetime, stop: datetime) -> list[str]:
    return [period.key for period in walk(history, start, stop)]


# terms and their validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize("anchor", [0, -1, 29, 31])
def test_an_anchor_day_outside_1_to_28_is_refused(anchor: int) -> None:
    with pytest.raises(TermsError, match="anchor day must be 1 to 28"):
        Terms(anchor, "UTC")


@pytest.mark.parametrize("anchor", [1, 28])
def test_anchor_days_1_and_28_are_accepted(anchor: int) -> None:
    assert Terms(anchor, "Europe/Berlin").anchor_day == anchor


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("Mars/Olympus", id="unknown"),
        pytest.param("Europe/berlin", id="wrong-case"),
        pytest.param(" UTC", id="padded"),
        pytest.param("Europe/Berlin\n", id="newline"),
        pytest.param("Europe/Berlin\x00", id="nul"),
        pytest.param("../../../etc/passwd", id="relative-path"),
        pytest.param("/etc/localtime", id="absolute-path"),
        pytest.param("Europe/", id="trailing-slash"),
        pytest.param("zone.tab", id="data-file"),
        pytest.param("America", id="region-folder"),
        pytest.param("Etc", id="etc-folder"),
        pytest.param("a" * 300, id="too-long"),
    ],
)
def test_a_name_that_is_not_an_iana_zone_is_refused_as_bad_terms(name: str) -> None:
    with pytest.raises(TermsError, match="is not an IANA time zone"):
        Terms(1, name)


@settings(max_examples=60, deadline=None)
@given(st.integers().filter(lambda day: not 1 <= day <= 28))
def test_any_anchor_day_outside_1_to_28_is_refused(anchor: int) -> None:
    with pytest.raises(TermsError):
        Terms(anchor, "UTC")


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40).filter(lambda name: name not in available_timezones() and name != "UTC"))
def test_any_unknown_zone_name_is_refused(name: str) -> None:
    with pytest.raises(TermsError):
        Terms(1, name)


def test_a_history_starts_with_terms_since_always_and_changes_in_order() -> None:
    first = Terms(1, "UTC")
    march = Terms(15, "Europe/Berlin", utc(2024, 3, 1))
    april = Terms(1, "Asia/Tokyo", utc(2024, 4, 14, 22))
    assert check_history([first, march, april]) == (first, march, april)
    with pytest.raises(TermsError, match="starts with terms in force since always"):
        check_history([])
    with pytest.raises(TermsError, match="starts with terms in force since always"):
        check_history([march])
    with pytest.raises(TermsError, match="in order"):
        check_history([first, april, march])
    with pytest.raises(TermsError, match="in order"):
        check_history([first, march, Terms(1, "Asia/Tokyo", utc(2024, 3, 1))])
    with pytest.raises(TermsError, match="in order"):
        check_history([first, Terms(1, "Asia/Tokyo")])


# local midnight and calendar days -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "expected"),
    [
        pytest.param("UTC", date(2024, 2, 29), utc(2024, 2, 29), id="utc-leap-day"),
        # 2024-09-08 00:00 does not exist in Santiago: clocks go from 23:59:59 -04 to 01:00 -03.
        pytest.param("America/Santiago", date(2024, 9, 8), utc(2024, 9, 8, 4), id="santiago-skipped-midnight"),
        # 2024-04-07 00:00 -03 became 2024-04-06 23:00 -04: the 6th has 25 hours, the 7th starts once, at -04.
        pytest.param("America/Santiago", date(2024, 4, 7), utc(2024, 4, 7, 4), id="santiago-after-doubled-hour"),
        pytest.param("America/Havana", date(2024, 3, 10), utc(2024, 3, 10, 5), id="havana-skipped-midnight"),
        # 01:00 -04 became 00:00 -05: midnight of 2024-11-03 happens twice, the period starts at the first.
        pytest.param("America/Havana", date(2024, 11, 3), utc(2024, 11, 3, 4), id="havana-doubled-midnight"),
        pytest.param("Asia/Beirut", date(2024, 3, 31), utc(2024, 3, 30, 22), id="beirut-skipped-midnight"),
        pytest.param("Asia/Damascus", date(2000, 4, 1), utc(2000, 3, 31, 22), id="damascus-skipped-midnight"),
        pytest.param("Asia/Tehran", date(2022, 3, 22), utc(2022, 3, 21, 20, 30), id="tehran-skipped-midnight"),
        pytest.param("America/Sao_Paulo", date(2018, 11, 4), utc(2018, 11, 4, 3), id="sao-paulo-skipped"),
        pytest.param("Europe/Berlin", date(2024, 3, 31), utc(2024, 3, 30, 23), id="berlin-spring-day"),
        pytest.param("Europe/Berlin", date(2024, 10, 27), utc(2024, 10, 26, 22), id="berlin-autumn-day"),
        pytest.param("America/New_York", date(2024, 11, 3), utc(2024, 11, 3, 4), id="new-york-autumn-day"),
        pytest.param("Australia/Lord_Howe", date(2024, 4, 7), utc(2024, 4, 6, 13), id="lord-howe-half-hour"),
        pytest.param("Asia/Kolkata", date(2024, 6, 15), utc(2024, 6, 14, 18, 30), id="kolkata"),
        pytest.param("Asia/Kathmandu", date(2024, 1, 1), utc(2023, 12, 31, 18, 15), id="kathmandu"),
        pytest.param("Pacific/Chatham", date(2024, 1, 1), utc(2023, 12, 31, 10, 15), id="chatham"),
        pytest.param("Pacific/Kiritimati", date(2024, 1, 1), utc(2023, 12, 31, 10), id="kiritimati"),
        # Samoa skipped 2011-12-30: the 29th ended at 10:00Z and the 31st began at the same instant.
        pytest.param("Pacific/Apia", date(2011, 12, 30), utc(2011, 12, 30, 10), id="apia-skipped-day"),
        pytest.param("Pacific/Apia", date(2011, 12, 31), utc(2011, 12, 30, 10), id="apia-day-after-skip"),
    ],
)
def test_local_midnight_is_the_first_instant_of_the_local_date(zone: str, day: date, expected: datetime) -> None:
    assert local_midnight(day, Terms(1, zone).tz) == expected
    assert first_instant(day, zone) == expected


@pytest.mark.parametrize(
    ("zone", "day", "start", "hours"),
    [
        pytest.param("Europe/Berlin", date(2024, 3, 31), utc(2024, 3, 30, 23), 23, id="berlin-spring"),
        pytest.param("Europe/Berlin", date(2024, 10, 27), utc(2024, 10, 26, 22), 25, id="berlin-autumn"),
        pytest.param("America/Santiago", date(2024, 9, 8), utc(2024, 9, 8, 4), 23, id="santiago-spring"),
        pytest.param("America/Santiago", date(2024, 4, 6), utc(2024, 4, 6, 3), 25, id="santiago-autumn"),
        pytest.param("America/Havana", date(2024, 11, 3), utc(2024, 11, 3, 4), 25, id="havana-autumn"),
        pytest.param("Australia/Lord_Howe", date(2024, 4, 7), utc(2024, 4, 6, 13), 24.5, id="lord-howe-autumn"),
        pytest.param("Australia/Lord_Howe", date(2024, 10, 6), utc(2024, 10, 5, 13, 30), 23.5, id="lord-howe-spring"),
        pytest.param("Asia/Kolkata", date(2024, 6, 15), utc(2024, 6, 14, 18, 30), 24, id="kolkata"),
        pytest.param("Pacific/Apia", date(2011, 12, 30), utc(2011, 12, 30, 10), 0, id="apia-skipped-day"),
    ],
)
def test_day_bounds_follow_the_local_calendar(zone: str, day: date, start: datetime, hours: float) -> None:
    assert day_bounds((Terms(1, zone),), day) == (start, start + timedelta(hours=hours))


@pytest.mark.parametrize(
    ("zone", "instant", "expected"),
    [
        pytest.param("Pacific/Kiritimati", utc(2023, 12, 31, 12), date(2024, 1, 1), id="kiritimati-ahead-of-utc"),
        pytest.param("Pacific/Pago_Pago", utc(2024, 1, 1, 10), date(2023, 12, 31), id="pago-pago-behind-utc"),
        pytest.param("America/Santiago", utc(2024, 9, 8, 3, 59, 59), date(2024, 9, 7), id="santiago-before-jump"),
        pytest.param("America/Santiago", utc(2024, 9, 8, 4), date(2024, 9, 8), id="santiago-after-jump"),
        pytest.param("America/Havana", utc(2024, 11, 3, 5, 30), date(2024, 11, 3), id="havana-second-midnight"),
        pytest.param("Asia/Kolkata", utc(2024, 6, 14, 18, 29, 59), date(2024, 6, 14), id="kolkata-before"),
        pytest.param("Asia/Kolkata", utc(2024, 6, 14, 18, 30), date(2024, 6, 15), id="kolkata-at-midnight"),
    ],
)
def test_day_of_is_the_tenant_local_date(zone: str, instant: datetime, expected: date) -> None:
    assert day_of((Terms(1, zone),), instant) == expected
    assert TenantSchedule(lambda _tenant: (Terms(1, zone),)).day_of("t", instant) == expected


# periods under one set of terms ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "anchor", "instant", "expected"),
    [
        pytest.param(
            "UTC",
            1,
            utc(2024, 2, 15, 12),
            BillingPeriod(utc(2024, 2, 1), utc(2024, 3, 1), "2024-02-01"),
            id="utc-month",
        ),
        pytest.param(
            "UTC", 28, utc(2024, 2, 28), BillingPeriod(utc(2024, 2, 28), utc(2024, 3, 28), "2024-02-28"), id="utc-28th"
        ),
        pytest.param(
            "UTC",
            28,
            utc(2024, 2, 28) - MICROSECOND,
            BillingPeriod(utc(2024, 1, 28), utc(2024, 2, 28), "2024-01-28"),
            id="utc-last-instant-before-the-28th",
        ),
        pytest.param(
            "America/Santiago",
            8,
            utc(2024, 9, 20, 12),
            BillingPeriod(utc(2024, 9, 8, 4), utc(2024, 10, 8, 3), "2024-09-08"),
            id="santiago-starts-after-the-jump",
        ),
        pytest.param(
            "America/Santiago",
            8,
            utc(2024, 9, 8, 3, 59, 59),
            BillingPeriod(utc(2024, 8, 8, 4), utc(2024, 9, 8, 4), "2024-08-08"),
            id="santiago-last-second-before-the-jump",
        ),
        pytest.param(
            "America/Santiago",
            7,
            utc(2024, 4, 7, 3, 30),
            BillingPeriod(utc(2024, 3, 7, 3), utc(2024, 4, 7, 4), "2024-03-07"),
            id="santiago-doubled-hour-before-midnight",
        ),
        pytest.param(
            "America/Santiago",
            7,
            utc(2024, 4, 7, 4),
            BillingPeriod(utc(2024, 4, 7, 4), utc(2024, 5, 7, 4), "2024-04-07"),
            id="santiago-after-doubled-hour",
        ),
        pytest.param(
            "America/Havana",
            10,
            utc(2024, 3, 10, 5),
            BillingPeriod(utc(2024, 3, 10, 5), utc(2024, 4, 10, 4), "2024-03-10"),
            id="havana-skipped-midnight",
        ),
        pytest.param(
            "America/Havana",
            10,
            utc(2024, 3, 10, 4, 59, 59),
            BillingPeriod(utc(2024, 2, 10, 5), utc(2024, 3, 10, 5), "2024-02-10"),
            id="havana-before-skipped-midnight",
        ),
        pytest.param(
            "America/Havana",
            3,
            utc(2024, 11, 3, 5, 30),
            BillingPeriod(utc(2024, 11, 3, 4), utc(2024, 12, 3, 5), "2024-11-03"),
            id="havana-second-midnight-is-inside",
        ),
        pytest.param(
            "America/Havana",
            3,
            utc(2024, 11, 3, 3, 59, 59),
            BillingPeriod(utc(2024, 10, 3, 4), utc(2024, 11, 3, 4), "2024-10-03"),
            id="havana-before-first-midnight",
        ),
        pytest.param(
            "Asia/Beirut",
            28,
            utc(2021, 4, 1),
            BillingPeriod(utc(2021, 3, 27, 22), utc(2021, 4, 27, 21), "2021-03-28"),
            id="beirut-skipped-midnight",
        ),
        pytest.param(
            "Asia/Damascus",
            1,
            utc(2000, 4, 15),
            BillingPeriod(utc(2000, 3, 31, 22), utc(2000, 4, 30, 21), "2000-04-01"),
            id="damascus-skipped-first-of-month",
        ),
        pytest.param(
            "America/Sao_Paulo",
            4,
            utc(2018, 11, 10),
            BillingPeriod(utc(2018, 11, 4, 3), utc(2018, 12, 4, 2), "2018-11-04"),
            id="sao-paulo-skipped-midnight",
        ),
        pytest.param(
            "Europe/Berlin",
            1,
            utc(2024, 3, 15),
            BillingPeriod(utc(2024, 2, 29, 23), utc(2024, 3, 31, 22), "2024-03-01"),
            id="berlin-month-with-spring-forward",
        ),
        pytest.param(
            "Europe/Berlin",
            27,
            utc(2024, 10, 27, 12),
            BillingPeriod(utc(2024, 10, 26, 22), utc(2024, 11, 26, 23), "2024-10-27"),
            id="berlin-autumn-anchor",
        ),
        pytest.param(
            "America/New_York",
            10,
            utc(2024, 3, 10, 6),
            BillingPeriod(utc(2024, 3, 10, 5), utc(2024, 4, 10, 4), "2024-03-10"),
            id="new-york-spring-anchor",
        ),
        pytest.param(
            "America/New_York",
            3,
            utc(2024, 11, 3, 6, 30),
            BillingPeriod(utc(2024, 11, 3, 4), utc(2024, 12, 3, 5), "2024-11-03"),
            id="new-york-doubled-hour-inside",
        ),
        pytest.param(
            "Australia/Lord_Howe",
            7,
            utc(2024, 4, 7),
            BillingPeriod(utc(2024, 4, 6, 13), utc(2024, 5, 6, 13, 30), "2024-04-07"),
            id="lord-howe-autumn",
        ),
        pytest.param(
            "Australia/Lord_Howe",
            6,
            utc(2024, 10, 6),
            BillingPeriod(utc(2024, 10, 5, 13, 30), utc(2024, 11, 5, 13), "2024-10-06"),
            id="lord-howe-spring",
        ),
        pytest.param(
            "Asia/Kolkata",
            15,
            utc(2024, 6, 14, 18, 30),
            BillingPeriod(utc(2024, 6, 14, 18, 30), utc(2024, 7, 14, 18, 30), "2024-06-15"),
            id="kolkata-at-start",
        ),
        pytest.param(
            "Asia/Kolkata",
            15,
            utc(2024, 6, 14, 18, 29, 59),
            BillingPeriod(utc(2024, 5, 14, 18, 30), utc(2024, 6, 14, 18, 30), "2024-05-15"),
            id="kolkata-just-before",
        ),
        pytest.param(
            "Pacific/Kiritimati",
            1,
            utc(2023, 12, 31, 12),
            BillingPeriod(utc(2023, 12, 31, 10), utc(2024, 1, 31, 10), "2024-01-01"),
            id="kiritimati-new-year-on-utc-new-years-eve",
        ),
        pytest.param(
            "Pacific/Apia",
            28,
            utc(2011, 12, 31),
            BillingPeriod(utc(2011, 12, 28, 10), utc(2012, 1, 27, 10), "2011-12-28"),
            id="apia-period-over-skipped-day",
        ),
    ],
)
def test_period_in_known_zones(zone: str, anchor: int, instant: datetime, expected: BillingPeriod) -> None:
    history = (Terms(anchor, zone),)
    period = period_in(history, instant)
    assert period == expected
    assert period.contains(instant)
    assert period_starting(history, date.fromisoformat(expected.key)) == period


def test_the_default_history_is_the_calendar_month_in_utc() -> None:
    assert period_in(DEFAULT_HISTORY, utc(2024, 2, 29, 23, 59)) == BillingPeriod(
        utc(2024, 2, 1), utc(2024, 3, 1), "2024-02-01"
    )
    schedule = calendar_month_utc()
    assert schedule.period_at("any", utc(2024, 12, 31, 23, 59, 59)) == BillingPeriod(
        utc(2024, 12, 1), utc(2025, 1, 1), "2024-12-01"
    )
    assert schedule.day_of("any", utc(2024, 3, 1, 23, 59)) == date(2024, 3, 1)
    assert schedule.day_bounds("any", date(2024, 3, 1)) == (utc(2024, 3, 1), utc(2024, 3, 2))
    assert schedule.period_starting("any", date(2024, 3, 1)) == BillingPeriod(
        utc(2024, 3, 1), utc(2024, 4, 1), "2024-03-01"
    )
    assert schedule.period_starting("any", date(2024, 3, 2)) is None


def test_a_period_contains_its_start_and_not_its_end() -> None:
    period = BillingPeriod(utc(2024, 3, 1), utc(2024, 4, 1), "2024-03-01")
    assert period.contains(utc(2024, 3, 1))
    assert period.contains(utc(2024, 4, 1) - MICROSECOND)
    assert not period.contains(utc(2024, 4, 1))
    assert not period.contains(utc(2024, 3, 1) - MICROSECOND)


def test_period_starting_finds_only_period_starts() -> None:
    history = (Terms(8, "America/Santiago"),)
    assert period_starting(history, date(2024, 9, 8)) == BillingPeriod(
        utc(2024, 9, 8, 4), utc(2024, 10, 8, 3), "2024-09-08"
    )
    assert period_starting(history, date(2024, 9, 7)) is None
    assert period_starting(history, date(2024, 9, 9)) is None


def test_next_boundary_is_the_instant_itself_at_a_boundary_else_the_period_end() -> None:
    assert next_boundary(DEFAULT_HISTORY, utc(2024, 2, 10, 12)) == utc(2024, 3, 1)
    assert next_boundary(DEFAULT_HISTORY, utc(2024, 3, 1)) == utc(2024, 3, 1)
    assert next_boundary(DEFAULT_HISTORY, utc(2024, 3, 1) + MICROSECOND) == utc(2024, 4, 1)
    santiago = (Terms(8, "America/Santiago"),)
    assert next_boundary(santiago, utc(2024, 9, 1)) == utc(2024, 9, 8, 4)
    assert next_boundary(santiago, utc(2024, 9, 8, 4)) == utc(2024, 9, 8, 4)


def test_periods_between_lists_the_overlapping_periods_in_order() -> None:
    monthly = [p.key for p in periods_between(calendar_month_utc(), "t", utc(2024, 1, 15), utc(2024, 4, 1))]
    assert monthly == ["2024-01-01", "2024-02-01", "2024-03-01"]
    santiago = TenantSchedule(lambda _tenant: (Terms(8, "America/Santiago"),))
    periods = list(periods_between(santiago, "t", utc(2024, 9, 8, 3), utc(2024, 9, 8, 5)))
    assert periods == [
        BillingPeriod(utc(2024, 8, 8, 4), utc(2024, 9, 8, 4), "2024-08-08"),
        BillingPeriod(utc(2024, 9, 8, 4), utc(2024, 10, 8, 3), "2024-09-08"),
    ]


# changing terms -------------------------------------------------------------------------------------------------

UTC_MONTHS: History = (Terms(1, "UTC"),)
TO_BERLIN_15TH = change_terms(UTC_MONTHS, Terms(15, "Europe/Berlin"), utc(2024, 2, 10, 12))


def test_new_terms_take_effect_where_the_current_period_ends() -> None:
    assert (Terms(1, "UTC"), Terms(15, "Europe/Berlin", utc(2024, 3, 1))) == TO_BERLIN_15TH
    periods = list(walk(TO_BERLIN_15TH, utc(2024, 2, 1), utc(2024, 4, 1)))
    assert periods == [
        BillingPeriod(utc(2024, 2, 1), utc(2024, 3, 1), "2024-02-01"),
        # The stub from the change to the first anchor under the new terms is named by its Berlin start date.
        BillingPeriod(utc(2024, 3, 1), utc(2024, 3, 14, 23), "2024-03-01"),
        BillingPeriod(utc(2024, 3, 14, 23), utc(2024, 4, 14, 22), "2024-03-15"),
    ]
    for period in periods:
        assert period_starting(TO_BERLIN_15TH, date.fromisoformat(period.key)) == period


def test_an_old_instant_keeps_its_period_after_a_change() -> None:
    for instant in (utc(2024, 1, 31, 23), utc(2024, 2, 10, 12), utc(2024, 2, 29, 23, 59, 59)):
        assert period_in(TO_BERLIN_15TH, instant) == period_in(UTC_MONTHS, instant)


def test_a_change_at_a_boundary_takes_effect_at_once() -> None:
    history = change_terms(UTC_MONTHS, Terms(1, "Asia/Tokyo"), utc(2024, 3, 1))
    assert history[-1] == Terms(1, "Asia/Tokyo", utc(2024, 3, 1))
    assert period_in(history, utc(2024, 3, 1)) == BillingPeriod(utc(2024, 3, 1), utc(2024, 3, 31, 15), "2024-03-01")


def test_terms_not_yet_in_force_are_replaced() -> None:
    again = change_terms(TO_BERLIN_15TH, Terms(20, "America/New_York"), utc(2024, 2, 20))
    assert again == (Terms(1, "UTC"), Terms(20, "America/New_York", utc(2024, 3, 1)))
    # Changing back to the terms in force cancels the pending change.
    assert change_terms(TO_BERLIN_15TH, Terms(1, "UTC"), utc(2024, 2, 20)) == UTC_MONTHS


def test_a_change_to_the_terms_in_force_is_no_change() -> None:
    assert change_terms(UTC_MONTHS, Terms(1, "UTC"), utc(2024, 2, 10)) == UTC_MONTHS
    assert change_terms(TO_BERLIN_15TH, Terms(15, "Europe/Berlin"), utc(2024, 3, 5)) == TO_BERLIN_15TH


def test_a_change_during_a_stub_takes_effect_at_the_stub_end() -> None:
    history = change_terms(TO_BERLIN_15TH, Terms(1, "UTC"), utc(2024, 3, 5))
    assert history == (*TO_BERLIN_15TH, Terms(1, "UTC", utc(2024, 3, 14, 23)))
    assert [p.key for p in walk(history, utc(2024, 2, 1), utc(2024, 4, 1))] == [
        "2024-02-01",
        "2024-03-01",
        "2024-03-14",
        "2024-04-01",
    ]


def test_the_first_period_after_a_change_to_a_zone_behind_is_found_by_its_key() -> None:
    # UTC midnight of 1 March is 2024-02-29 19:00 in New York: the stub until New York's midnight is named
    # 2024-02-29, and late events and period reads look it up by that name.
    history = change_terms(UTC_MONTHS, Terms(1, "America/New_York"), utc(2024, 2, 15))
    stub = period_in(history, utc(2024, 3, 1))
    assert stub == BillingPeriod(utc(2024, 3, 1), utc(2024, 3, 1, 5), "2024-02-29")
    assert period_starting(history, date(2024, 2, 29)) == stub


@pytest.mark.parametrize(
    ("first", "second", "second_made_at"),
    [
        # Berlin's 2 March starts at 23:00Z on the 1st: going back to UTC during that stub starts a UTC period
        # on 1 March, the date the stub is named by.
        pytest.param(Terms(2, "Europe/Berlin"), Terms(1, "UTC"), utc(2024, 3, 1, 12), id="berlin-and-back"),
        # UTC midnight of 1 March is 29 February in New York, and the New York stub's end is still 29 February
        # in Honolulu.
        pytest.param(
            Terms(1, "America/New_York"), Terms(1, "Pacific/Honolulu"), utc(2024, 3, 1, 1), id="new-york-then-honolulu"
        ),
    ],
)
def test_keys_stay_unique_after_two_changes_in_one_month(first: Terms, second: Terms, second_made_at: datetime) -> None:
    history = change_terms(UTC_MONTHS, first, utc(2024, 2, 15))
    stub = period_in(history, utc(2024, 3, 1))
    assert stub.start == utc(2024, 3, 1) < second_made_at < stub.end
    history = change_terms(history, second, second_made_at)
    keys = keys_of(history, utc(2024, 2, 1), utc(2024, 4, 1))
    assert len(set(keys)) == len(keys), keys
    assert keys == sorted(keys)


# tenant schedules -----------------------------------------------------------------------------------------------


def test_each_tenant_has_its_own_periods_and_days() -> None:
    histories = {"acme": (Terms(8, "America/Santiago"),), "globex": TO_BERLIN_15TH}
    schedule = TenantSchedule(histories.__getitem__)
    instant = utc(2024, 3, 10)
    assert schedule.period_at("acme", instant) == BillingPeriod(utc(2024, 3, 8, 3), utc(2024, 4, 8, 4), "2024-03-08")
    assert schedule.period_at("globex", instant) == BillingPeriod(utc(2024, 3, 1), utc(2024, 3, 14, 23), "2024-03-01")
    assert schedule.day_of("acme", utc(2024, 3, 10, 2)) == date(2024, 3, 9)
    assert schedule.day_of("globex", utc(2024, 3, 10, 23, 30)) == date(2024, 3, 11)
    assert schedule.day_bounds("acme", date(2024, 9, 8)) == (utc(2024, 9, 8, 4), utc(2024, 9, 9, 3))
    assert schedule.period_starting("globex", date(2024, 3, 15)) == period_in(TO_BERLIN_15TH, utc(2024, 3, 20))


def test_a_tenant_schedule_follows_a_changed_history() -> None:
    histories = {"acme": UTC_MONTHS}
    schedule = TenantSchedule(histories.__getitem__)
    instant = utc(2024, 3, 5)
    assert schedule.period_at("acme", instant) == BillingPeriod(utc(2024, 3, 1), utc(2024, 4, 1), "2024-03-01")
    histories["acme"] = TO_BERLIN_15TH
    assert schedule.period_at("acme", instant) == BillingPeriod(utc(2024, 3, 1), utc(2024, 3, 14, 23), "2024-03-01")
    assert schedule.period_at("acme", utc(2024, 3, 20)) == BillingPeriod(
        utc(2024, 3, 14, 23), utc(2024, 4, 14, 22), "2024-03-15"
    )
    assert schedule.period_at("acme", utc(2024, 2, 20)) == BillingPeriod(utc(2024, 2, 1), utc(2024, 3, 1), "2024-02-01")


# properties under one set of terms ------------------------------------------------------------------------------

anchors = st.integers(min_value=1, max_value=28)
zones = st.sampled_from(ZONES)
instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 12, 31), timezones=st.just(UTC))


@settings(max_examples=200, deadline=None)
@given(anchors, zones, instants)
def test_the_period_of_an_instant_runs_between_local_midnights_of_the_anchor_day(
    anchor: int, zone: str, instant: datetime
) -> None:
    period = period_in((Terms(anchor, zone),), instant)
    start_day = date.fromisoformat(period.key)
    assert start_day.day == anchor
    assert period.start == first_instant(start_day, zone)
    assert period.end == first_instant(month_after(start_day), zone)
    assert period.contains(instant)


@settings(max_examples=200, deadline=None)
@given(anchors, zones, instants)
def test_consecutive_periods_tile_time_with_increasing_keys(anchor: int, zone: str, instant: datetime) -> None:
    history = (Terms(anchor, zone),)
    period = period_in(history, instant)
    before = period_in(history, period.start - MICROSECOND)
    after = period_in(history, period.end)
    assert before.end == period.start
    assert after.start == period.end
    assert before.key < period.key < after.key
    assert period_in(history, period.start) == period
    assert period_in(history, period.end - MICROSECOND) == period
    assert next_boundary(history, instant) == (instant if instant == period.start else period.end)


@settings(max_examples=150, deadline=None)
@given(anchors, zones, instants)
def test_a_period_is_found_by_its_key_and_only_by_it(anchor: int, zone: str, instant: datetime) -> None:
    history = (Terms(anchor, zone),)
    period = period_in(history, instant)
    start_day = date.fromisoformat(period.key)
    assert period_starting(history, start_day) == period
    assert period_starting(history, start_day + timedelta(days=1)) is None
    assert period_starting(history, start_day - timedelta(days=1)) is None


@settings(max_examples=200, deadline=None)
@given(anchors, zones, instants)
def test_days_follow_the_local_date(anchor: int, zone: str, instant: datetime) -> None:
    history = (Terms(anchor, zone),)
    day = day_of(history, instant)
    assert day == instant.astimezone(ZoneInfo(zone)).date()
    assert TenantSchedule(lambda _tenant: history).day_of("t", instant) == day
    start, end = day_bounds(history, day)
    assert (start, end) == (first_instant(day, zone), first_instant(day + timedelta(days=1), zone))
    assert start <= instant < end


DAYLIGHT_SAVING_ZONES = tuple(
    zone
    for zone in ZONES
    if zone not in {"UTC", "Asia/Kolkata", "Asia/Kathmandu", "Pacific/Kiritimati", "Pacific/Pago_Pago"}
)


@cache
def offset_change_days(zone_name: str) -> tuple[date, ...]:
    """The days from 2000 to 2040 whose noon offset differs from the day before's: each has a transition between
    the two noons, so its midnight is next to one."""
    tz = ZoneInfo(zone_name)
    days = []
    day = date(2000, 1, 1)
    previous = datetime.combine(day, time(12), tzinfo=tz).utcoffset()
    while day < date(2040, 12, 31):
        day += timedelta(days=1)
        offset = datetime.combine(day, time(12), tzinfo=tz).utcoffset()
        if offset != previous:
            days.append(day)
        previous = offset
    return tuple(days)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(DAYLIGHT_SAVING_ZONES), st.data())
def test_days_and_periods_next_to_a_transition_start_at_the_first_instant_of_the_day(
    zone: str, data: st.DataObject
) -> None:
    changed = data.draw(st.sampled_from(offset_change_days(zone)), label="day with a new offset")
    for day in (changed - timedelta(days=1), changed, changed + timedelta(days=1)):
        start, end = first_instant(day, zone), first_instant(day + timedelta(days=1), zone)
        assert local_midnight(day, Terms(1, zone).tz) == start
        assert day_bounds((Terms(1, zone),), day) == (start, end)
        if day.day <= 28:
            history = (Terms(day.day, zone),)
            period = period_in(history, start)
            assert (period.start, period.key) == (start, day.isoformat())
            assert period_in(history, start - MICROSECOND).end == start
            assert period_starting(history, day) == period


# properties of histories with changes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    before: History
    terms: Terms
    not_before: datetime
    after: History


@dataclass(frozen=True)
class Story:
    origin: datetime
    changes: tuple[Change, ...]

    @property
    def history(self) -> History:
        return self.changes[-1].after

    @property
    def horizon(self) -> datetime:
        """Two months past the last change's boundary."""
        last = max(t.effective_from or self.origin for t in self.history)
        return max(last, self.changes[-1].not_before) + timedelta(days=62)


@st.composite
def stories(draw: st.DrawFn) -> Story:
    """A tenant's terms changed one to three times: each change made some periods after the previous one (often
    inside the stub period it created, sometimes before it took effect, sometimes right at a boundary)."""
    origin = draw(
        st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2036, 12, 31), timezones=st.just(UTC))
    )
    history: History = (Terms(draw(anchors), draw(zones)),)
    cursor = origin
    changes = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        # Tenants mostly move to another zone and keep their anchor day (or the next one): such changes make
        # the shortest stubs.
        current = history[-1].anchor_day
        anchor = draw(st.one_of(st.sampled_from(sorted({current, min(current + 1, 28)})), anchors))
        terms = Terms(anchor, draw(zones))
        period = period_in(history, cursor)
        for _ in range(draw(st.integers(min_value=0, max_value=2))):
            period = period_in(history, period.end)
        permille = draw(st.integers(min_value=0, max_value=999))
        not_before = max(cursor, period.start + (period.end - period.start) * permille / 1000)
        after = change_terms(history, terms, not_before)
        changes.append(Change(history, terms, not_before, after))
        history, cursor = after, not_before
    return Story(origin, tuple(changes))


@settings(max_examples=100, deadline=None)
@given(stories())
def test_a_change_takes_effect_at_the_next_boundary_and_leaves_the_past_alone(story: Story) -> None:
    for change in story.changes:
        settled = tuple(t for t in change.before if t.effective_from is None or t.effective_from <= change.not_before)
        current = settled[-1]
        if change.terms.same_schedule(current):
            assert change.after == settled
            continue
        holding = period_in(settled, change.not_before)
        boundary = change.not_before if holding.start == change.not_before else holding.end
        # The next boundary, unless the first new period there would take the name of the period before it
        # (a second change within days): then the boundary after.
        while True:
            candidate = (*settled, Terms(change.terms.anchor_day, change.terms.timezone, boundary))
            if period_in(candidate, boundary).key > period_in(settled, boundary - MICROSECOND).key:
                break
            boundary = period_in(settled, boundary).end
        assert change.after == (*settled, Terms(change.terms.anchor_day, change.terms.timezone, boundary))
        assert next_boundary(settled, change.not_before) <= boundary
        assert period_in(change.after, boundary).start == boundary
        assert period_in(change.after, boundary - MICROSECOND).end == boundary
        # Every period that began before the change was made keeps its start and name; the ones that ended
        # by then are untouched.
        for old in walk(change.before, story.origin, change.not_before):
            if old.start >= change.not_before:
                break
            new = period_in(change.after, old.start)
            assert (new.start, new.key) == (old.start, old.key)
            if old.end <= change.not_before:
                assert new == old
        if settled == change.before:  # nothing was pending: everything before the boundary is as it was
            for old in walk(change.before, story.origin, boundary - MICROSECOND):
                if old.start >= boundary:
                    break
                assert period_in(change.after, old.start) == old


@settings(max_examples=100, deadline=None)
@given(stories())
def test_a_history_with_changes_tiles_time_by_its_terms(story: Story) -> None:
    history = story.history
    starts = {t.effective_from for t in history if t.effective_from is not None}
    for period in walk(history, story.origin, story.horizon):
        terms = terms_at(history, period.start)
        start_day = date.fromisoformat(period.key)
        if period.start in starts:  # the first period under new terms starts where they take effect
            assert start_day == period.start.astimezone(ZoneInfo(terms.timezone)).date()
        else:
            assert start_day.day == terms.anchor_day
            assert period.start == first_instant(start_day, terms.timezone)
        natural_end = first_instant(next_anchor_after(start_day, terms.anchor_day), terms.timezone)
        next_change = min((s for s in starts if s > period.start), default=natural_end)
        assert period.end == min(natural_end, next_change)
        assert period_in(history, period.end - MICROSECOND) == period
        assert period_in(history, period.end).start == period.end
        middle = period.start + (period.end - period.start) / 2
        assert period_in(history, middle) == period
        assert day_of(history, middle) == middle.astimezone(ZoneInfo(terms_at(history, middle).timezone)).date()
        if all(abs(middle - s) > timedelta(days=2) for s in starts):  # no terms change that day
            start, end = day_bounds(history, day_of(history, middle))
            assert start <= middle < end


@settings(max_examples=100, deadline=None)
@given(stories())
def test_keys_of_a_history_with_changes_are_unique_and_increasing(story: Story) -> None:
    keys = keys_of(story.history, story.origin, story.horizon)
    assert all(earlier < later for earlier, later in pairwise(keys)), keys


@settings(max_examples=100, deadline=None)
@given(stories())
def test_every_period_of_a_history_with_changes_is_found_by_its_key(story: Story) -> None:
    for period in walk(story.history, story.origin, story.horizon):
        assert period_starting(story.history, date.fromisoformat(period.key)) == period
