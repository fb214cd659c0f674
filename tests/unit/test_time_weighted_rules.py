"""Time-weighted meters through the ledger and the reader on the memory store: the issue's cases computed by hand,
out of order, duplicated, in several batches and shards, with the integral placed exactly between neighbours."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from metering.core.events import UsageEvent
from metering.core.hub import Position
from metering.core.limits import Decision, Limits
from metering.core.meters import Aggregation, Meter, MeterCatalog, load_catalog
from metering.core.periods import DEFAULT_HISTORY, Granularity, TenantSchedule, Terms
from metering.core.shards import ShardChange
from metering.ledger.batch import SourcedEvent
from metering.ledger.keys import partition_key, points_key, resource_key
from metering.ledger.rows import StateRow
from metering.notifications.outbox import DiscardSink
from metering.quotas.decisions import decide
from metering.stores.memory import MemoryStore
from metering.transport import EmptyBacklog
from tests.support import FixedClock, make_settings, wired

D = Decimal
NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
AFTER_NOVEMBER = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)  # ended, in grace, not closed
DEFAULT = load_catalog()
CATALOG = MeterCatalog(
    version=DEFAULT.version,
    meters={
        **DEFAULT.meters,
        "disk.gb": Meter(name="disk.gb", unit="GB", aggregation=Aggregation.TIME_WEIGHTED),
    },
)


def sharded(shards: int) -> TenantSchedule:
    return TenantSchedule(lambda _tenant: DEFAULT_HISTORY, lambda _tenant: (ShardChange(shards, None),))


def services_at(now: datetime, shards: int = 1) -> Any:
    return wired(MemoryStore(), catalog=CATALOG, clock=FixedClock(now), schedule=sharded(shards))


def level(i: int | str, when: datetime, quantity: Any, resource: str | None = "vol-1", **fields: Any) -> UsageEvent:
    return UsageEvent(
        event_id=f"e{i}",
        tenant_id="acme",
        metric="disk.gb",
        quantity=quantity,
        timestamp=when,
        source="test",
        resource_id=resource,
        **fields,
    )


def apply(services: Any, events: list[UsageEvent], start: int = 0) -> Any:
    return services.ledger.apply([SourcedEvent(e, Position("hub", start + i)) for i, e in enumerate(events)])


def november(services: Any) -> Any:
    return services.usage.for_period("acme", "disk.gb", services.schedule.period_at("acme", NOV_1))


def test_ten_gb_for_36_hours_then_four():
    # 10 GB x 36 h + 4 GB x 684 h = 3096 GB-hours over November's 720 hours: 4.3 GB-months.
    services = services_at(AFTER_NOVEMBER)
    apply(services, [level(1, NOV_1, 10), level(2, NOV_1 + timedelta(hours=36), 4)])
    usage = november(services)
    assert (usage.total, usage.level, usage.average, usage.event_count) == (D(3096), D(4), D("4.3"), 2)


def test_the_open_period_is_read_up_to_now():
    # 10 GB from 1 Nov 00:00, read at 1 Nov 12:00: 120 GB-hours over 12 hours, an average of 10.
    services = services_at(NOV_1 + timedelta(hours=12))
    apply(services, [level(1, NOV_1, 10)])
    usage = november(services)
    assert (usage.total, usage.level, usage.average) == (D(120), D(10), D(10))


@pytest.mark.parametrize("shards", [1, 3])
def test_resources_out_of_order_duplicated_and_in_batches(shards: int):
    # a: 2 GB from the 1st, 6 GB from the 3rd (arriving first), 0 from the 21st: 2 x 48 + 6 x 432 = 2688.
    # b: 5 GB from the 11th (480 h): 2400. c, the tenant as a whole (no resource): 1 GB from the 16th: 360.
    # Two points of b at one instant: "e5" sorts after "e4", so 5 GB holds, not 9.
    events = [
        level(2, NOV_1 + timedelta(days=2), 6, "a"),
        level(1, NOV_1, 2, "a"),
        level(3, NOV_1 + timedelta(days=20), 0, "a"),
        level(5, NOV_1 + timedelta(days=10), 5, "b"),
        level(4, NOV_1 + timedelta(days=10), 9, "b"),
        level(6, NOV_1 + timedelta(days=15), 1, None),
    ]
    services = services_at(AFTER_NOVEMBER, shards)
    rnd = random.Random(7)
    for round_ in range(3):
        shuffled = events + events[:2]
        rnd.shuffle(shuffled)
        apply(services, shuffled[:3], start=100 * round_)
        apply(services, shuffled[3:], start=100 * round_ + 3)
    usage = november(services)
    assert usage.total == D(2688 + 2400 + 360)
    assert usage.level == D(6)
    assert usage.average == D("7.566666666667")  # 5448 / 720, rounded half-even to 12 places
    assert usage.event_count == 6


def test_history_buckets_hold_their_own_integrals():
    # 10 GB from 1 Nov 00:30, 4 GB from 02:15: hours 0..3 hold 5, 10, 5.5, 4; the 1st 24.5 + 4 x 20 (hours 4..23).
    services = services_at(AFTER_NOVEMBER)
    apply(services, [level(2, NOV_1 + timedelta(hours=2, minutes=15), 4), level(1, NOV_1 + timedelta(minutes=30), 10)])
    hours = services.usage.history("acme", "disk.gb", date(2026, 11, 1), date(2026, 11, 1), Granularity.HOUR)
    assert [b.total for b in hours[:4]] == [D(5), D(10), D("5.5"), D(4)]
    assert [b.event_count for b in hours[:4]] == [1, 0, 1, 0]
    days = services.usage.history("acme", "disk.gb", date(2026, 11, 1), date(2026, 11, 3), Granularity.DAY)
    assert [b.total for b in days] == [D("104.5"), D(96), D(96)]
    assert (
        sum(
            b.total
            for b in services.usage.history("acme", "disk.gb", date(2026, 11, 1), date(2026, 11, 30), Granularity.DAY)
        )
        == november(services).total
    )


# -- across periods ---------------------------------------------------------------------------------------------

DEC_1 = datetime(2026, 12, 1, tzinfo=UTC)
JAN_1 = datetime(2027, 1, 1, tzinfo=UTC)


def closing_services(now: datetime, shards: int = 1) -> Any:
    return wired(
        MemoryStore(),
        settings=make_settings(grace_hours=1),
        catalog=CATALOG,
        clock=FixedClock(now),
        schedule=sharded(shards),
        backlog=EmptyBacklog(),
        sink=DiscardSink(),
    )


def usage_of(services: Any, start: datetime) -> Any:
    return services.usage.for_period("acme", "disk.gb", services.schedule.period_at("acme", start))


def statement_line(services: Any, start: datetime) -> Any:
    period = services.schedule.period_at("acme", start)
    stored = services.store.statements.read("acme", [period.key])[period.key]
    return next(line for line in stored.data["lines"] if line["metric"] == "disk.gb")


@pytest.mark.parametrize("shards", [1, 3])
def test_a_level_is_read_through_then_carried_and_a_period_without_events_bills_it(shards: int):
    # 10 GB from 30 Nov 12:00: November holds 120 GB-h. December, read on 1 Dec 00:30 (November in grace), reads
    # the level through: 5 GB-h. Closed, November carries it: all of December is 10 x 744 = 7440 GB-h, 10
    # GB-months, and so is January, which has no event at all and still closes and bills it.
    services = closing_services(DEC_1 + timedelta(minutes=30), shards)
    apply(services, [level(1, datetime(2026, 11, 30, 12, tzinfo=UTC), 10)])
    assert usage_of(services, DEC_1).total == D(5)
    services.clock.now = DEC_1 + timedelta(hours=2)
    services.closer.run()
    assert usage_of(services, DEC_1).total == D(20)
    assert statement_line(services, NOV_1)["quantity"] == "120"
    services.clock.now = JAN_1 + timedelta(hours=2)
    services.closer.run()
    december = statement_line(services, DEC_1)
    assert (december["quantity"], december["level"], december["average"], december["event_count"]) == (
        "7440",
        "10",
        "10",
        0,
    )
    services.clock.now = datetime(2027, 2, 1, 2, tzinfo=UTC)
    services.closer.run()
    assert statement_line(services, JAN_1)["quantity"] == "7440"


def test_an_opening_read_through_before_a_late_point_of_grace_is_corrected_at_the_close():
    # December's first point (1 GB on 2 Dec) reads November's 10 GB through; then a point of 30 Nov 18:00 (5 GB)
    # arrives in November's grace. Closing November corrects December's opening to 5: 5 x 24 + 1 x 720 = 840.
    services = closing_services(DEC_1 + timedelta(minutes=30))
    apply(services, [level(1, datetime(2026, 11, 30, 12, tzinfo=UTC), 10)])
    apply(services, [level(2, DEC_1 + timedelta(days=1), 1)], start=10)
    apply(services, [level(3, datetime(2026, 11, 30, 18, tzinfo=UTC), 5)], start=20)
    services.clock.now = JAN_1 + timedelta(hours=2)
    services.closer.run()
    assert statement_line(services, NOV_1)["quantity"] == str(10 * 6 + 5 * 6)
    assert statement_line(services, DEC_1)["quantity"] == "840"
    days = services.usage.history("acme", "disk.gb", date(2026, 12, 1), date(2026, 12, 3), Granularity.DAY)
    assert [b.total for b in days] == [D(120), D(24), D(24)]


# -- cancels and limits -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shards", [1, 3])
def test_a_cancel_removes_its_point_exactly(shards: int):
    # 10 GB from the 1st, 2.5 GB from the 5th, 4 GB from the 9th: cancelling the 5th's point leaves
    # 10 x 192 + 4 x 528 = 4032 GB-h; cancelling the 9th's then reopens 10 GB to the end: 7200.
    services = services_at(AFTER_NOVEMBER, shards)
    apply(
        services,
        [level(1, NOV_1, 10), level(2, NOV_1 + timedelta(days=4), "2.5"), level(3, NOV_1 + timedelta(days=8), 4)],
    )
    result = services.cancels.cancel("acme", "e:e2")
    assert result.quantity == "2.5"
    assert (november(services).total, november(services).event_count) == (D(4032), 2)
    assert services.cancels.cancel("acme", "e:e2") == result  # a repeat answers the same, changes nothing
    assert november(services).total == D(4032)
    services.cancels.cancel("acme", "e:e3")
    usage = november(services)
    assert (usage.total, usage.level, usage.event_count) == (D(7200), D(10), 1)
    days = services.usage.history("acme", "disk.gb", date(2026, 11, 1), date(2026, 11, 30), Granularity.DAY)
    assert [b.total for b in days] == [D(240)] * 30
    # The point can come back (a new event): placed again between the neighbours left.
    apply(services, [level(4, NOV_1 + timedelta(days=8), 4)], start=50)
    assert november(services).total == D(10 * 192 + 4 * 528)


def test_quotas_and_alerts_compare_the_level_and_a_request_adds_to_it():
    services = services_at(NOV_1 + timedelta(days=3))
    apply(services, [level(1, NOV_1, 40, "a"), level(2, NOV_1, 30, "b")])
    usage = november(services)
    assert usage.limited == D(70)  # not the 5040 GB-hours held so far
    verdict = decide(usage.meter, usage.limited, D(25), Limits(soft=D(80), hard=D(100)))
    assert (verdict.decision, verdict.projected, verdict.remaining) == (Decision.WARNING, D(95), D(5))
    state = services.usage.store.usage.read("acme|2026-11-01|0", ["s"])["s"]
    assert StateRow(state.data).limit_figures()["disk.gb"].value == D(70)


def test_a_month_with_a_daylight_saving_change_has_its_elapsed_hours():
    # A Berlin tenant's March 2026 is 743 elapsed hours (28 Feb 23:00 UTC to 31 Mar 22:00 UTC): 2 GB held all
    # month is 1486 GB-h and 2 GB-months; its 29 March (the change) is a 23-hour day bucket: 46 GB-h.
    berlin = (Terms(timezone="Europe/Berlin"),)
    schedule = TenantSchedule(lambda _t: berlin, lambda _t: (ShardChange(1, None),))
    start = datetime(2026, 2, 28, 23, tzinfo=UTC)
    services = wired(
        MemoryStore(), catalog=CATALOG, clock=FixedClock(datetime(2026, 4, 2, tzinfo=UTC)), schedule=schedule
    )
    apply(services, [level(1, start, 2)])
    usage = services.usage.for_period("acme", "disk.gb", schedule.period_at("acme", start))
    assert (usage.total, usage.average) == (D(1486), D(2))
    days = services.usage.history("acme", "disk.gb", date(2026, 3, 28), date(2026, 3, 30), Granularity.DAY)
    assert [b.total for b in days] == [D(48), D(46), D(48)]


def test_a_carry_of_more_resources_than_one_transaction_holds_is_written_in_several_and_once():
    # 130 volumes of 1 GB from 30 Nov 00:00 (24 h each in November): 130 GB all of December, 96,720 GB-hours.
    services = closing_services(DEC_1 + timedelta(minutes=30), shards=2)
    volumes = [level(i, datetime(2026, 11, 30, tzinfo=UTC), 1, f"vol-{i}") for i in range(130)]
    apply(services, volumes)
    services.clock.now = DEC_1 + timedelta(hours=2)
    services.closer.run()
    services.closer.run()  # nothing more: carried once
    services.clock.now = JAN_1 + timedelta(hours=2)
    services.closer.run()
    assert statement_line(services, NOV_1)["quantity"] == str(130 * 24)
    december = statement_line(services, DEC_1)
    assert (december["quantity"], december["level"], december["average"]) == (str(130 * 744), "130", "130")


def test_a_point_on_a_day_with_points_leaves_the_resource_row_alone():
    # The resource row changes only with its days (and opening): a second point of the same UTC day rewrites the
    # day's points and buckets, not it; a point on a new day adds the day. The end level is the last day's last
    # point (read through into December here).
    services = services_at(AFTER_NOVEMBER)
    period = services.schedule.period_at("acme", NOV_1)
    partition = partition_key("acme", period, 0)
    resource, day_one = resource_key("disk.gb", "vol-1"), points_key("disk.gb", "vol-1", "2026-11-01")

    def rows() -> dict[str, Any]:
        return services.store.usage.read(partition, [resource, day_one])

    apply(services, [level(1, NOV_1 + timedelta(hours=1), 3)])
    first = rows()
    apply(services, [level(2, NOV_1 + timedelta(hours=2), 7)], start=1)
    second = rows()
    assert second[resource].etag == first[resource].etag
    assert second[day_one].etag != first[day_one].etag
    apply(services, [level(3, NOV_1 + timedelta(days=1), 5)], start=2)
    third = rows()
    assert third[resource].etag != second[resource].etag
    assert third[resource].data["days"] == ["2026-11-01", "2026-11-02"]
    december = services.schedule.period_at("acme", AFTER_NOVEMBER)
    assert services.usage.for_period("acme", "disk.gb", december).level == D(5)
