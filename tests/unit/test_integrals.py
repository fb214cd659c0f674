"""The arithmetic of time-weighted levels, against figures computed by hand."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.core import integrals
from metering.core.decimals import derived_quotient
from metering.core.integrals import Bucket, Integral, Point, bucket_of, micros

D = Decimal
NOVEMBER = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
DECEMBER = (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


def at(day: int, hour: int = 0, minute: int = 0, second: int = 0, month: int = 11) -> int:
    return micros(datetime(2026, month, day, hour, minute, second, tzinfo=UTC))


def fold(points: list[Point], start: datetime, opening: Decimal = Decimal(0)) -> tuple[list[Point], Integral]:
    """Insert points one by one, in the order given, from an opening tail at the period start."""
    held: list[Point] = []
    total = integrals.opening(opening, micros(start))
    for point in points:
        change = integrals.insert(held, point, opening)
        held, total = change.points, total.plus(change.integral)
    return held, total


def period_figures(resources: dict[str, list[Point]], period: tuple[datetime, datetime], carried=None):
    total = Integral()
    start, end = map(micros, period)
    for resource, points in resources.items():
        opening = (carried or {}).get(resource, D(0))
        _, integral = fold(points, period[0], opening)
        total = total.plus(integral)
    for resource, level in (carried or {}).items():
        if resource not in resources:
            total = total.plus(integrals.opening(level, start))
    figure = total.at(end)
    return figure, integrals.unit_hours(figure), integrals.average(figure, end - start)


def test_ten_gb_for_36_hours_then_four():
    # November has 720 hours: 10 GB x 36 h + 4 GB x 684 h = 3096 GB-hours; 3096 / 720 = 4.3 GB-months.
    points = [Point(at(1), "a", D(10)), Point(at(2, 12), "b", D(4))]
    figure, hours, average = period_figures({"disk": points}, NOVEMBER)
    assert figure == D(3096) * integrals.MICROS_PER_HOUR
    assert hours == D("3096")
    assert average == D("4.3")


def test_several_resources_add():
    # a: 10 GB all month (7200), b: 5 GB from the 11th (480 h: 2400): 9600 GB-h, 13.333333333333 GB-months.
    resources = {"a": [Point(at(1), "1", D(10))], "b": [Point(at(11), "2", D(5))]}
    _, hours, average = period_figures(resources, NOVEMBER)
    assert hours == D(9600)
    assert average == D("13.333333333333")


def test_zero_ends_a_resource():
    # 8 GB for 6 hours, then 0: 48 GB-h; 48 / 720 = 0.0666... rounded half-even to 12 places.
    _, hours, average = period_figures({"a": [Point(at(1), "1", D(8)), Point(at(1, 6), "2", D(0))]}, NOVEMBER)
    assert hours == D(48)
    assert average == D("0.066666666667")


def test_an_older_event_arriving_later_is_put_in_its_place():
    # 2 GB from the 1st, 6 GB from the 3rd: 2 x 48 + 6 x 672 = 4128, whichever arrives first.
    early, late = Point(at(1), "1", D(2)), Point(at(3), "2", D(6))
    assert period_figures({"a": [late, early]}, NOVEMBER)[1] == D(4128)
    assert period_figures({"a": [early, late]}, NOVEMBER)[1] == D(4128)


def test_two_points_at_one_instant_are_ordered_by_event_id():
    # Both at the period start: "b" sorts after "a", so 7 GB holds all month: 5040.
    a, b = Point(at(1), "a", D(3)), Point(at(1), "b", D(7))
    assert period_figures({"r": [b, a]}, NOVEMBER)[1] == D(5040)
    assert period_figures({"r": [a, b]}, NOVEMBER)[1] == D(5040)


def test_a_period_without_events_bills_the_level_carried_in():
    # 4 GB carried into December (744 h): 2976 GB-h, 4 GB-months.
    _, hours, average = period_figures({}, DECEMBER, carried={"a": D(4)})
    assert (hours, average) == (D(2976), D(4))


def test_a_period_boundary_inside_a_level():
    # 10 GB from 30 November 12:00: 12 h in November (120), all of December (7440), carried by the end level.
    points = [Point(at(30, 12), "1", D(10))]
    held, _ = fold(points, NOVEMBER[0])
    assert period_figures({"a": points}, NOVEMBER)[1] == D(120)
    carried = {"a": integrals.level_at_end(held, D(0))}
    assert period_figures({}, DECEMBER, carried)[1] == D(7440)
    # A December point ends the carried level: 10 GB x 24 h, then 1 GB x 720 h.
    later = {"a": [Point(at(2, month=12), "2", D(1))]}
    assert period_figures(later, DECEMBER, carried)[1] == D(960)


def test_hours_are_elapsed_time_in_a_month_with_a_daylight_saving_change():
    # Berlin's March 2026 runs from 28 Feb 23:00 UTC to 31 Mar 22:00 UTC: 743 elapsed hours.
    berlin = ZoneInfo("Europe/Berlin")
    march = (
        datetime(2026, 3, 1, tzinfo=berlin).astimezone(UTC),
        datetime(2026, 4, 1, tzinfo=berlin).astimezone(UTC),
    )
    _, hours, average = period_figures({"a": [Point(micros(march[0]), "1", D(1))]}, march)
    assert hours == D(743)
    assert average == D(1)


def test_a_cancel_removes_its_point_exactly():
    points = [Point(at(1), "1", D(10)), Point(at(5), "2", D("2.5")), Point(at(9), "3", D(4))]
    held, total = fold(points, NOVEMBER[0])
    change = integrals.remove(held, points[1], D(0))
    _, without = fold([points[0], points[2]], NOVEMBER[0])
    assert change.points == [points[0], points[2]]
    assert total.plus(change.integral).at(micros(NOVEMBER[1])) == without.at(micros(NOVEMBER[1]))
    # 10 x 192 + 4 x 528 = 4032
    assert integrals.unit_hours(without.at(micros(NOVEMBER[1]))) == D(4032)
    # Cancelling the last point reopens the tail of the one before it.
    last = integrals.remove(held, points[2], D(0))
    assert integrals.unit_hours(total.plus(last.integral).at(micros(NOVEMBER[1]))) == D(10 * 96 + D("2.5") * 624)


def test_one_gb_for_one_second_is_rounded_once_half_even():
    figure = period_figures({"a": [Point(at(1), "1", D(1)), Point(at(1, 0, 0, 1), "2", D(0))]}, NOVEMBER)[0]
    assert figure == D(1_000_000)  # exact, in GB-microseconds
    assert integrals.unit_hours(figure) == D("0.000277777778")
    assert derived_quotient(D("0.0000000000025"), 1) == D("0.000000000002")  # a tie goes to the even digit
    assert derived_quotient(D("0.0000000000035"), 1) == D("0.000000000004")


def test_a_repeated_point_changes_nothing():
    point = Point(at(3), "1", D(5))
    held, _ = fold([point], NOVEMBER[0])
    assert integrals.insert(held, point, D(0)).integral.is_zero


def test_neighbours_by_instant_then_event_id():
    points = [Point(at(1), "a", D(1)), Point(at(2), "a", D(2)), Point(at(2), "c", D(3))]
    assert integrals.neighbours(points, Point(at(2), "b", D(9))) == (points[1], points[2])
    assert integrals.neighbours(points, Point(at(1, month=12), "z", D(9))) == (points[2], None)
    with pytest.raises(ValueError, match="already there"):
        integrals.neighbours(points, Point(at(2), "a", D(0)))


def test_hour_buckets_hold_their_own_integral():
    # 10 GB from 00:30, 4 GB from 02:15 on 1 November: hours 0, 1, 2, 3 hold 5, 10, 2.5 + 3, 4 GB-h.
    points = [Point(at(1, 0, 30), "1", D(10)), Point(at(1, 2, 15), "2", D(4))]
    buckets: dict[int, Bucket] = {}
    held: list[Point] = []
    for point in reversed(points):  # out of order on purpose
        change = integrals.insert(held, point, D(0))
        held = change.points
        for step in change.steps:
            start = step.at - step.at % integrals.MICROS_PER_HOUR
            buckets[start] = buckets.get(start, Bucket()).plus(bucket_of(step, start + integrals.MICROS_PER_HOUR))
    hours = [at(1, h) for h in range(4)]
    laid_out = [(h, h + integrals.MICROS_PER_HOUR, buckets.get(h, Bucket())) for h in hours]
    found = integrals.bucket_integrals(D(0), laid_out)
    assert [integrals.unit_hours(figure) for figure, _ in found] == [D(5), D(10), D("5.5"), D(4)]
    assert [level for _, level in found] == [D(10), D(10), D(4), D(4)]
    # Cut short at 02:30 (now): hour 2 holds 2.25 h x 10 / 0.25... 10 x 0.25 + 4 x 0.25 = 3.5; hour 3 nothing.
    cut = integrals.bucket_integrals(D(0), laid_out, until=at(1, 2, 30))
    assert [integrals.unit_hours(figure) for figure, _ in cut] == [D(5), D(10), D("3.5"), D(0)]


points_strategy = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.integers(min_value=0, max_value=40 * 24 * 60),  # minutes from 1 November: some fall in December
        st.sampled_from(["x", "y", "z"]),
        st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False, allow_infinity=False),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(points_strategy, st.randoms(use_true_random=False))
def test_any_order_and_any_cancels_give_the_integral_of_the_sorted_points(raw, rnd: random.Random):
    start = NOVEMBER[0]
    by_key = {(r, m, e): Point(micros(start + timedelta(minutes=m)), e, q) for r, m, e, q in raw}
    cancelled = {key for key in by_key if rnd.random() < 0.2}
    for period in (NOVEMBER, DECEMBER):
        begin, end = map(micros, period)
        # Levels carried in: each resource's last point before the period (an independent fold).
        carried = {}
        for (r, m, e), p in sorted(by_key.items(), key=lambda kv: kv[1].order):
            if p.at < begin and (r, m, e) not in cancelled:
                carried[r] = p.level
        inside = [(k, p) for k, p in by_key.items() if begin <= p.at < end]
        order = inside + [kv for kv in inside if rnd.random() < 0.3]  # some twice
        rnd.shuffle(order)
        total = Integral()
        held: dict[str, list[Point]] = {}
        for level in carried.values():
            total = total.plus(integrals.opening(level, begin))
        for (r, _, _), point in order:
            change = integrals.insert(held.get(r, []), point, carried.get(r, D(0)))
            held[r], total = change.points, total.plus(change.integral)
        for key in cancelled:
            point = by_key[key]
            if begin <= point.at < end:
                change = integrals.remove(held.get(key[0], []), point, carried.get(key[0], D(0)))
                held[key[0]], total = change.points, total.plus(change.integral)
        kept = [(k[0], p) for k, p in inside if k not in cancelled]
        assert total.at(end) == integrals.independent_integral(kept, begin, end, carried)
