"""Time-weighted meters against an independent integral: random points over several resources, shuffled,
duplicated, split across batches, replayed and crashed mid-commit, in several shards, give the integral computed
plainly from the sorted points, to the last digit, on the memory store (many examples) and on Azurite (a few)."""

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
from tests.support import FixedClock, InjectedCrash, ProbedStore, fresh_table_store, wired

NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
NOV_END = datetime(2026, 12, 1, tzinfo=UTC)
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


@st.composite
def scenarios(draw: Any) -> Scenario:
    count = draw(st.integers(1, 24))
    events = []
    for i in range(count):
        minute = draw(st.integers(0, 30 * 24 * 60 - 1))
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
    return Scenario(events, deliveries, crashes, draw(st.sampled_from([1, 2, 3])))


def expected(events: list[UsageEvent]) -> Decimal:
    """Each resource's points sorted by (timestamp, event id), each level times how long it held."""
    points = [(e.resource_id or "", Point(integrals.micros(e.timestamp), e.event_id or "", e.quantity)) for e in events]
    return integrals.independent_integral(points, integrals.micros(NOV_1), integrals.micros(NOV_END), {})


def run(store: ProbedStore, scenario: Scenario, parts: dict[str, Any]) -> None:
    schedule = TenantSchedule(lambda _t: DEFAULT_HISTORY, lambda _t: (ShardChange(scenario.shards, None),))

    def services() -> Any:
        return wired(
            store, catalog=CATALOG, clock=FixedClock(NOV_END + timedelta(minutes=5)), schedule=schedule, **parts
        )

    current = services()
    for index, batch in enumerate(scenario.deliveries):
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
    usage = services().usage.for_period("acme", "disk.gb", schedule.period_at("acme", NOV_1))
    distinct = {e.event_id: e for e in scenario.events}
    exact = expected(list(distinct.values()))
    assert usage.total == integrals.unit_hours(exact)
    assert usage.average == integrals.average(exact, integrals.micros(NOV_END) - integrals.micros(NOV_1))
    assert usage.event_count == len(distinct)


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
