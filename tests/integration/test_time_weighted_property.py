"""Time-weighted meters against an independent integral: random points over several resources and two periods,
shuffled, duplicated, split across batches, replayed and crashed mid-commit, in several shards, with the first
period closed (and its levels carried) somewhere in the stream, give the integral computed plainly from the sorted
points, to the last digit, on the memory store (many examples) and on Azurite (a few). Points of the first period
delivered after it closed are late: counted nowhere, carried nowhere."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metering.core import integrals
from metering.core.events import UsageEvent
from metering.core.hub import Position
from metering.core.integrals import Point
from metering.core.meters import Aggregation, Meter, MeterCatalog, load_catalog
from metering.core.periods import DEFAULT_HISTORY, TenantSchedule
from metering.core.shards import ShardChange
from metering.ledger.batch import SourcedEvent
from metering.notifications.outbox import DiscardSink
from metering.stores.memory import MemoryStore
from metering.transport import EmptyBacklog
from tests.support import FixedClock, InjectedCrash, ProbedStore, fresh_table_store, make_settings, wired

NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
NOV_END = datetime(2026, 12, 1, tzinfo=UTC)
DEC_END = datetime(2027, 1, 1, tzinfo=UTC)
DEFAULT = load_catalog()
CATALOG = MeterCatalog(
    version=DEFAULT.version,
    meters={**DEFAULT.meters, "disk.gb": Meter(name="disk.gb", unit="GB", aggregation=Aggregation.TIME_WEIGHTED)},
)
SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
}


@dataclass
class Scenario:
    events: list[UsageEvent]
    deliveries: list[list[int]]  # each a batch: indexes into events, in delivery order
    crashes: dict[int, tuple[int, bool]]  # batch index -> (commits before the crash, whether the commit applied)
    shards: int
    close_after: int  # November closes after this many deliveries


@st.composite
def scenarios(draw: Any) -> Scenario:
    count = draw(st.integers(1, 24))
    events = []
    for i in range(count):
        minute = draw(st.integers(0, 61 * 24 * 60 - 1))  # November and December
        events.append(
            UsageEvent(
                event_id=draw(st.sampled_from([f"e{i}", f"s{i % 3}x{i}"])),
                tenant_id="acme",
                metric="disk.gb",
                quantity=draw(st.decimals(0, 10**4, places=draw(st.integers(0, 6)), allow_nan=False)),
                # Seconds and microseconds too; every fifth point at one instant (ordered by event id).
                timestamp=NOV_1 + timedelta(minutes=minute, microseconds=draw(st.integers(0, 59_999_999)))
                if i % 5
                else NOV_1 + timedelta(days=3),
                source="test",
                resource_id=draw(st.sampled_from(["a", "b", "c", "d", None])),
            )
        )
    rnd = random.Random(draw(st.integers(0, 2**32)))
    order = list(range(count)) + [i for i in range(count) if rnd.random() < 0.3]  # some twice
    rnd.shuffle(order)
    deliveries: list[list[int]] = []
    while order:
        size = rnd.randint(1, 8)
        deliveries.append(order[:size])
        order = order[size:]
    deliveries += [deliveries[i] for i in range(len(deliveries)) if rnd.random() < 0.3]  # replays
    crashes = {i: (rnd.randint(0, 2), rnd.random() < 0.5) for i in range(len(deliveries)) if rnd.random() < 0.25}
    close_after = draw(st.integers(len(deliveries) // 2, len(deliveries)))
    return Scenario(events, deliveries, crashes, draw(st.sampled_from([1, 2, 3])), close_after)


def expected(events: list[UsageEvent], start: datetime, end: datetime) -> Decimal:
    """Each resource's points sorted by (timestamp, event id), each level times how long it held; the levels
    before `start` carried in."""
    points = [(e.resource_id or "", _point(e)) for e in events]
    carried: dict[str, Decimal] = {}
    for resource, point in sorted(points, key=lambda rp: rp[1].order):
        if point.at < integrals.micros(start):
            carried[resource] = point.level
    inside = [(r, p) for r, p in points if p.at >= integrals.micros(start)]
    return integrals.independent_integral(inside, integrals.micros(start), integrals.micros(end), carried)


def _point(event: UsageEvent) -> Point:
    return Point(integrals.micros(event.timestamp), event.event_id or "", event.quantity)


def run(store: ProbedStore, scenario: Scenario, parts: dict[str, Any]) -> None:
    schedule = TenantSchedule(lambda _t: DEFAULT_HISTORY, lambda _t: (ShardChange(scenario.shards, None),))
    clock = FixedClock(NOV_END + timedelta(minutes=5))

    def services() -> Any:
        settings = make_settings(grace_hours=1)
        return wired(store, settings=settings, catalog=CATALOG, clock=clock, schedule=schedule, **parts)

    current = services()
    counted: set[int] = set()
    for index, batch in enumerate(scenario.deliveries):
        if index == scenario.close_after:
            clock.now = NOV_END + timedelta(hours=2)
            current.closer.run()
        if index < scenario.close_after:
            counted |= set(batch)
        items = [SourcedEvent(scenario.events[i], Position("hub", 1000 * index + n)) for n, i in enumerate(batch)]
        crash = scenario.crashes.get(index)
        if crash is not None:
            store.probe.crash_after = store.probe.commits + crash[0]
            store.probe.crash_applies = crash[1]
            try:
                current.ledger.apply(items)
            except InjectedCrash:
                current = services()  # a new instance after the crash: nothing cached
            store.probe.crash_after = None
        current.ledger.apply(items)
    clock.now = DEC_END + timedelta(hours=2)
    services().closer.run()
    services().closer.run()  # December, indexed by the carry of a November that closed only in the run before
    november = [e for i, e in enumerate(scenario.events) if e.timestamp < NOV_END and i in counted]
    december = [e for e in scenario.events if e.timestamp >= NOV_END]
    for start, end, events in ((NOV_1, NOV_END, november), (NOV_END, DEC_END, [*november, *december])):
        exact = expected(events, start, end)
        usage = services().usage.for_period("acme", "disk.gb", schedule.period_at("acme", start))
        assert usage.total == integrals.unit_hours(exact), (start, usage.total)
        assert usage.average == integrals.average(exact, integrals.micros(end) - integrals.micros(start))
        assert usage.event_count == len([e for e in events if e.timestamp >= start])
        assert usage.status == "closed"


@settings(max_examples=int(os.environ.get("TIME_WEIGHTED_MEMORY_EXAMPLES", "300")), **SETTINGS)
@given(scenario=scenarios())
def test_time_weighted_integrals_are_exact_in_memory(scenario: Scenario) -> None:
    run(ProbedStore(MemoryStore()), scenario, {"backlog": EmptyBacklog(), "sink": DiscardSink()})


@settings(max_examples=int(os.environ.get("TIME_WEIGHTED_EXAMPLES", "12")), **SETTINGS)
@given(scenario=scenarios())
def test_time_weighted_integrals_are_exact_on_table_storage(azurite: Any, scenario: Scenario) -> None:
    store = fresh_table_store(azurite)
    try:
        run(ProbedStore(store), scenario, {"backlog": EmptyBacklog(), "sink": DiscardSink()})
    finally:
        store.close()
