"""Exactly once, as a property: whatever the delivery does, the aggregates equal a ground truth computed
independently from the unique events (the first payload of each dedupe key).

Each example draws a stream of events over several tenants, every meter and two billing periods, with exact
duplicates (inside a batch and across batches), retries under an idempotency key with a new event id, and
conflicting payloads under a key already counted, the same key reused for another meter of another kind among
them. The tenants' periods have 1, 2 or 4 shards (one tenant goes from 2 to 4 at the period boundary), so
distinct values are applied away from their events' key shards through claims, and the crashes below fall
between a claim and its application too. Phase 1 delivers it in batches that are replayed whole, replayed
split differently, or cut short by a crash before or after a commit reached the store (with the same instance
retrying or a new one taking over), on transactions small enough that batches span several. Phase 2 has two
aggregators apply overlapping batches at the same time, then a third redeliver the whole phase. Phase 3 closes
both periods, then redelivers everything together with new events of the closed periods: each period's
statement equals the ground truth, the replayed events are recognised as counted, and exactly the new ones are
recorded as late events.

Some dedupe keys are poisoned: the store refuses every commit that holds their marker, as it refuses an entity
it cannot take (injected at the store boundary). The aggregates must equal the ground truth of the other events,
and the events the ledger returns as rejected (the ones the consumer dead-letters) must be exactly the poisoned.
Rejection here is never systematic (`poison_share=1.0`): the 1 % rule has its own test.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metering.billing.closing import Statement
from metering.core import decimals
from metering.core.clock import format_timestamp
from metering.core.events import UsageEvent
from metering.core.hub import Position
from metering.core.integrals import Point, independent_integral, micros, unit_hours
from metering.core.meters import Aggregation, load_catalog
from metering.core.periods import DEFAULT_HISTORY, Granularity, TenantSchedule
from metering.core.shards import ShardChange
from metering.ledger.batch import SourcedEvent, payload_hash
from metering.ledger.keys import conflict_payload, marker_key
from metering.ledger.ledger import Ledger
from metering.notifications.outbox import DiscardSink
from metering.notifications.queue import QueueSink
from metering.settings import LateEventPolicy
from metering.stores.memory import MemoryStore
from metering.transport import EmptyBacklog
from metering.transport.queue import QueueBacklog, queue_client
from tests.support import (
    NEEDS_REAL_COSMOS,
    REAL_COSMOS,
    FixedClock,
    InjectedCrash,
    ProbedStore,
    fresh_cosmos_store,
    fresh_table_store,
    make_settings,
    wired,
)

CATALOG = load_catalog()
METERS = sorted(CATALOG.meters)
TENANTS = ["t1", "t2", "t3"]
START = datetime(2026, 10, 30, tzinfo=UTC)  # four days across the October / November boundary
# One shard, two then four from November, four: every shard rule meets one, several and a change of count.
SHARDS = {
    "t1": (ShardChange(1, None),),
    "t2": (ShardChange(2, None), ShardChange(4, datetime(2026, 11, 1, tzinfo=UTC))),
    "t3": (ShardChange(4, None),),
}


def sharded() -> TenantSchedule:
    return TenantSchedule(lambda _tenant: DEFAULT_HISTORY, SHARDS.__getitem__)


DAYS = [date(2026, 10, 30) + timedelta(days=i) for i in range(4)]
DIMENSION_VALUES = ["a", "b", "c"]


@st.composite
def quantities(draw: st.DrawFn, metric: str) -> Decimal:
    places = draw(st.integers(0, 12))
    negative = CATALOG.meters[metric].allow_negative
    bound = draw(st.sampled_from([10, 10**6, 10**17]))
    return draw(st.decimals(min_value=-bound if negative else 0, max_value=bound, places=places, allow_nan=False))


# Distinct values are the meter whose events go through claims with several shards: drawn more often.
DRAWN_METERS = [*METERS, *[m for m in METERS if CATALOG.meters[m].aggregation is Aggregation.UNIQUE_COUNT] * 2]


@st.composite
def logical_events(draw: st.DrawFn, index: int) -> UsageEvent:
    metric = draw(st.sampled_from(DRAWN_METERS))
    meter = CATALOG.meters[metric]
    dimensions = {dim: draw(st.sampled_from(DIMENSION_VALUES)) for dim in meter.group_by if draw(st.booleans())}
    return UsageEvent(
        event_id=f"e{index}",
        idempotency_key=f"k{index}" if draw(st.integers(0, 3)) == 0 else None,
        tenant_id=draw(st.sampled_from(TENANTS)),
        metric=metric,
        # As a string, the way any quantity with more than 15 significant digits must travel.
        quantity=format(draw(quantities(metric)), "f"),
        timestamp=START + timedelta(minutes=draw(st.integers(0, 4 * 24 * 60 - 1))),
        source="prop",
        user_id=draw(st.sampled_from(["u1", "u2", "u3", "u4"])),
        dimensions=dimensions,
    )


def variant(original: UsageEvent, kind: str, quantity: Decimal, hour: int, metric: str) -> UsageEvent:
    """A repeat of an event: the same payload, a retry with a new id under its idempotency key, a conflict
    (another payload, same day so the same period), or the key reused for another meter of another kind."""
    if kind == "new_id" and original.idempotency_key is not None:
        return original.model_copy(update={"event_id": f"{original.event_id}-retry"})
    if kind == "conflict":
        moved = original.timestamp.replace(hour=hour)
        return original.model_copy(update={"quantity": original.quantity + quantity, "timestamp": moved})
    if kind == "other_meter":
        return original.model_copy(update={"metric": metric, "quantity": quantity, "dimensions": {}})
    return original


def other_kind(metric: str, index: int) -> str:
    """A meter of another aggregation kind than `metric`'s."""
    kind = CATALOG.meters[metric].aggregation
    others = [m for m in METERS if CATALOG.meters[m].aggregation is not kind]
    return others[index % len(others)]


@st.composite
def streams(draw: st.DrawFn, originals: list[UsageEvent], conflict_sources: list[UsageEvent]) -> list[UsageEvent]:
    """Originals in order, with repeats inserted after the event they repeat. Conflicting payloads only repeat
    `conflict_sources`, so which payload is first never depends on how concurrent aggregators interleave."""
    stream = list(originals)
    for _ in range(draw(st.integers(0, len(originals)))):
        kind = draw(st.sampled_from(["same", "new_id", "conflict", "other_meter"]))
        pool = conflict_sources if kind in ("conflict", "other_meter") else originals + conflict_sources
        source = pool[draw(st.integers(0, len(pool) - 1))]
        metric = other_kind(source.metric, draw(st.integers(0, 10)))
        repeat = variant(source, kind, Decimal(draw(st.integers(1, 9))), draw(st.integers(0, 23)), metric)
        after = stream.index(source) + 1 if source in stream else 0
        stream.insert(draw(st.integers(after, len(stream))), repeat)
    return stream


def cuts(draw: st.DrawFn, size: int) -> list[tuple[int, int]]:
    """Split [0, size) into consecutive non-empty ranges."""
    points = sorted(set(draw(st.lists(st.integers(1, max(size - 1, 1)), max_size=6)))) if size > 1 else []
    bounds = [0, *points, size]
    return [(a, b) for a, b in itertools.pairwise(bounds) if a < b]


@dataclass
class Delivery:
    start: int
    stop: int
    action: str  # once | replay | resplit | crash | claim_crash (right after the first claim is committed)
    crash_after: int = 0
    crash_applies: bool = False
    same_instance: bool = False
    resplit: list[tuple[int, int]] | None = None


@dataclass
class Scenario:
    phase1: list[UsageEvent]
    phase2: list[UsageEvent]
    max_ops: int
    deliveries: list[Delivery]
    window_a: tuple[int, int]
    window_b: tuple[int, int]
    late: list[UsageEvent]
    poisoned: frozenset[tuple[str, str]]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n1 = draw(st.integers(1, 24))
    n2 = draw(st.integers(1, 16))
    originals = [draw(logical_events(i)) for i in range(n1 + n2)]
    phase1 = draw(streams(originals[:n1], originals[:n1]))
    # Phase 2 may repeat phase 1's events: conflicts only against those, already counted before it starts.
    phase2 = draw(streams(originals[n1:], originals[:n1]))
    deliveries = []
    for start, stop in cuts(draw, len(phase1)):
        action = draw(st.sampled_from(["once", "replay", "resplit", "crash", "claim_crash"]))
        resplit = [(start + a, start + b) for a, b in cuts(draw, stop - start)]
        deliveries.append(
            Delivery(
                start,
                stop,
                action,
                crash_after=draw(st.integers(0, 4)),
                crash_applies=draw(st.booleans()),
                same_instance=draw(st.booleans()),
                resplit=resplit,
            )
        )
    size = len(phase2)
    a0 = draw(st.integers(0, size - 1))
    b0 = draw(st.integers(0, size - 1))
    late = [
        draw(logical_events(n1 + n2 + i)).model_copy(update={"event_id": f"late{i}", "idempotency_key": None})
        for i in range(draw(st.integers(0, 4)))
    ]
    poisoned = frozenset(
        (originals[i].tenant_id, originals[i].dedupe_key)
        for i in draw(st.sets(st.integers(0, n1 + n2 - 1), max_size=2))
    )
    return Scenario(
        poisoned=poisoned,
        late=late,
        phase1=phase1,
        phase2=phase2,
        max_ops=draw(st.sampled_from([8, 13, 100])),
        deliveries=deliveries,
        window_a=(a0, draw(st.integers(a0 + 1, size))),
        window_b=(b0, draw(st.integers(b0 + 1, size))),
    )


# -- ground truth, computed without the ledger ----------------------------------------------------------------


def winners(
    stream: list[UsageEvent], poisoned: frozenset[tuple[str, str]] = frozenset()
) -> dict[tuple[str, str], UsageEvent]:
    first: dict[tuple[str, str], UsageEvent] = {}
    for event in stream:
        if (event.tenant_id, event.dedupe_key) not in poisoned:
            first.setdefault((event.tenant_id, event.dedupe_key), event)
    return first


def expected_cell(metric: str, events: list[UsageEvent]) -> tuple[str, int]:
    kind = CATALOG.meters[metric].aggregation
    if not events:
        return "0", 0
    values = [e.quantity for e in events]
    if kind is Aggregation.SUM:
        result = Decimal(0)
        for value in values:
            result = decimals.add(result, value)
    elif kind is Aggregation.COUNT:
        result = Decimal(len(events))
    elif kind is Aggregation.MAX:
        result = max(values)
    elif kind is Aggregation.MIN:
        result = min(values)
    elif kind is Aggregation.LATEST:
        result = max(events, key=lambda e: (format_timestamp(e.timestamp), e.event_id)).quantity
    else:
        result = Decimal(len({e.user_id for e in events}))
    return decimals.to_str(result), len(events)


def level_figures(events: list[UsageEvent], start: datetime, end: datetime) -> tuple[str, int]:
    """A time_weighted meter's bucket: the integral over [start, end) of the level the sorted points hold (the
    ones before `start` carry their last level in), in unit-hours, and the events inside."""
    points = [("", Point(micros(e.timestamp), f"{e.event_id or ''}\0{e.dedupe_key}", e.quantity)) for e in events]
    begin, finish = micros(start), micros(end)
    carried: dict[str, Decimal] = {}
    for resource, point in sorted(points, key=lambda rp: rp[1].order):
        if point.at < begin:
            carried[resource] = point.level
    inside = [(r, p) for r, p in points if begin <= p.at < finish]
    exact = independent_integral(inside, begin, finish, carried)
    return decimals.to_str(unit_hours(exact)), len(inside)


def bucket_figures(metric: str, events: list[UsageEvent], start: datetime, end: datetime) -> tuple[str, int]:
    if CATALOG.meters[metric].aggregation is Aggregation.TIME_WEIGHTED:
        return level_figures(events, start, end)
    return expected_cell(metric, [e for e in events if start <= e.timestamp < end])


def check(store: Any, unique: list[UsageEvent], conflicts: set[tuple[str, str, str]]) -> None:
    schedule = sharded()
    reader = wired(store, clock=lambda: datetime(2026, 12, 5, tzinfo=UTC), schedule=schedule).usage
    by: dict[tuple[str, str], list[UsageEvent]] = defaultdict(list)
    for event in unique:
        by[(event.tenant_id, event.metric)].append(event)
    # Every pair that has events, and one that has none (reads must say zero, not fail).
    empty = next(((t, m) for t in TENANTS for m in METERS if (t, m) not in by), None)
    for tenant, metric in sorted([*by, *([empty] if empty else [])]):
        events = by[(tenant, metric)]
        meter = CATALOG.meters[metric]
        periods = reader.history(tenant, metric, DAYS[0], DAYS[-1], Granularity.PERIOD)
        for bucket in periods:
            inside = [e for e in events if bucket.start <= e.timestamp < bucket.end]
            got = (decimals.to_str(bucket.total), bucket.event_count)
            assert got == bucket_figures(metric, events, bucket.start, bucket.end), (tenant, metric, bucket.start)
            period = schedule.period_at(tenant, bucket.start)
            for dim in meter.group_by:
                groups = {
                    g.key: (decimals.to_str(g.total), g.event_count) for g in reader.groups(tenant, metric, dim, period)
                }
                values = {e.dimensions[dim] for e in inside if dim in e.dimensions}
                expected = {v: expected_cell(metric, [e for e in inside if e.dimensions.get(dim) == v]) for v in values}
                # Events without the dimension are a group of their own: the groups add up to the total.
                if without := [e for e in inside if dim not in e.dimensions]:
                    expected[None] = expected_cell(metric, without)
                assert groups == expected, (tenant, metric, dim)
        days = reader.history(tenant, metric, DAYS[0], DAYS[-1], Granularity.DAY)
        for bucket in days:
            expected_day = bucket_figures(metric, events, bucket.start, bucket.end)
            assert (decimals.to_str(bucket.total), bucket.event_count) == expected_day
        if meter.aggregation is not Aggregation.UNIQUE_COUNT:
            hours = reader.history(tenant, metric, DAYS[0], DAYS[-1], Granularity.HOUR)
            for bucket in hours:
                expected_hour = bucket_figures(metric, events, bucket.start, bucket.end)
                assert (decimals.to_str(bucket.total), bucket.event_count) == expected_hour
    recorded = {
        (tenant, row.data["dedupe_key"], conflict_payload(row.key))
        for tenant in TENANTS
        for row in store.conflicts.partition(tenant)
    }
    assert recorded == conflicts


def expected_conflicts(stream: list[UsageEvent], poisoned: frozenset[tuple[str, str]]) -> set[tuple[str, str, str]]:
    first = winners(stream, poisoned)
    found = set()
    for event in stream:
        if (event.tenant_id, event.dedupe_key) in poisoned:
            continue
        winner = first[(event.tenant_id, event.dedupe_key)]
        if payload_hash(event) != payload_hash(winner):
            found.add((event.tenant_id, event.dedupe_key, payload_hash(event)))
    return found


# -- delivery ---------------------------------------------------------------------------------------------------


def sourced(stream: list[UsageEvent], start: int, stop: int, offset: int = 0) -> list[SourcedEvent]:
    return [SourcedEvent(stream[i], Position("0", offset + i)) for i in range(start, stop)]


class Refused(set[tuple[str, str]]):
    """The (tenant, dedupe key) of every event a ledger returned as rejected, over a whole run."""

    def apply(self, ledger: Ledger, batch: list[SourcedEvent]) -> None:
        result = ledger.apply(batch)
        self.update((r.item.event.tenant_id, r.item.event.dedupe_key) for r in result.rejected)


def new_ledger(store: Any, scenario: Scenario, **parts: Any) -> Ledger:
    services = wired(store, schedule=sharded(), catalog=CATALOG, **parts)
    return services.new_ledger(max_ops=scenario.max_ops, poison_share=1.0)


def deliver_phase1(store: ProbedStore, scenario: Scenario, refused: Refused, *, atomic: bool = True) -> None:
    make = lambda: new_ledger(store, scenario)  # noqa: E731
    ledger = make()
    stream = scenario.phase1
    for delivery in scenario.deliveries:
        batch = sourced(stream, delivery.start, delivery.stop)
        if delivery.action in ("crash", "claim_crash") and atomic:
            if delivery.action == "crash":
                store.probe.crash_after = store.probe.commits + delivery.crash_after
                store.probe.crash_applies = delivery.crash_applies
            else:
                store.probe.crash_after_claim = True
            try:
                refused.apply(ledger, batch)
            except InjectedCrash:
                ledger = ledger if delivery.same_instance else make()
            store.probe.crash_after = None
            store.probe.crash_after_claim = False
            for a, b in delivery.resplit or []:
                refused.apply(ledger, sourced(stream, a, b))
            continue
        refused.apply(ledger, batch)
        if delivery.action == "replay":
            refused.apply(make(), batch)
        elif delivery.action in ("resplit", "crash", "claim_crash"):
            replayer = make() if not delivery.same_instance else ledger
            for a, b in delivery.resplit or []:
                refused.apply(replayer, sourced(stream, a, b))


def deliver_phase2(
    store: ProbedStore, scenario: Scenario, offset: int, refused: Refused, *, concurrent: bool = True
) -> None:
    stream = scenario.phase2
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def apply_window(window: tuple[int, int]) -> None:
        ledger = new_ledger(store, scenario)
        try:
            if concurrent:
                barrier.wait(timeout=30)
            for a in range(window[0], window[1], 7):
                refused.apply(ledger, sourced(stream, a, min(a + 7, window[1]), offset))
        except BaseException as error:  # surfaced below, on the test's thread
            errors.append(error)

    threads = [threading.Thread(target=apply_window, args=(w,)) for w in (scenario.window_a, scenario.window_b)]
    for thread in threads:
        thread.start()
        if not concurrent:
            thread.join(timeout=120)
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    # The partition moves to a third instance, which receives everything from the last checkpoint.
    refused.apply(new_ledger(store, scenario), sourced(stream, 0, len(stream), offset))


SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
}


@settings(max_examples=int(os.environ.get("EXACTLY_ONCE_EXAMPLES", "150")), **SETTINGS)
@given(scenario=scenarios())
def test_every_event_counts_exactly_once(azurite, scenario: Scenario) -> None:
    store = fresh_table_store(azurite)
    try:
        run(ProbedStore(store), scenario, azurite_parts(azurite))
    finally:
        store.close()


@settings(max_examples=int(os.environ.get("EXACTLY_ONCE_MEMORY_EXAMPLES", "1000")), **SETTINGS)
@given(scenario=scenarios())
def test_every_event_counts_exactly_once_in_memory(scenario: Scenario) -> None:
    """The same streams on the memory store, which keeps the port's promises (atomic commits, ETags) as the
    conformance suite checks: milliseconds an example, so many more examples on every run."""
    run(ProbedStore(MemoryStore()), scenario, {"backlog": EmptyBacklog(), "sink": DiscardSink()})


@pytest.mark.store
# Each example on the local server takes about 25 s with shards: a few by default keep the suite within its time,
# the Azurite and memory tests carry the many (EXACTLY_ONCE_LOCAL_COSMOS_EXAMPLES for more).
@settings(max_examples=int(os.environ.get("EXACTLY_ONCE_LOCAL_COSMOS_EXAMPLES", "4")), **SETTINGS)
@given(scenario=scenarios())
def test_every_event_counts_exactly_once_on_the_local_cosmos_server(azurite, cosmos_server, scenario: Scenario) -> None:
    """The same streams on the Cosmos store, against the local server, whose commits are not atomic: without
    the crashes (a crash between its writes would leave half a commit) and with the two aggregators one after
    the other. Both run against a real Cosmos DB in the test below when one is configured."""
    store = fresh_cosmos_store(cosmos_server.endpoint, cosmos_server.key, non_atomic_local=True)
    try:
        run(ProbedStore(store), scenario, azurite_parts(azurite), atomic=False)
    finally:
        store.drop()
        store.close()


@pytest.mark.store
@NEEDS_REAL_COSMOS
@settings(max_examples=int(os.environ.get("EXACTLY_ONCE_COSMOS_EXAMPLES", "8")), **SETTINGS)
@given(scenario=scenarios())
def test_every_event_counts_exactly_once_on_a_real_cosmos_db(azurite, scenario: Scenario) -> None:
    store = fresh_cosmos_store(*REAL_COSMOS, non_atomic_local=False)
    try:
        run(ProbedStore(store), scenario, azurite_parts(azurite))
    finally:
        store.drop()
        store.close()


def azurite_parts(azurite: Any) -> dict[str, Any]:
    """The closer's hub and the notifications sink as real Azurite queues. A hub queue that was never created
    holds nothing: every hub position counts as applied."""
    return {
        "backlog": QueueBacklog(queue_client(azurite.connection_string, "hubneverused")),
        "sink": QueueSink(queue_client(azurite.connection_string, "propnotifications")),
    }


def run(store: ProbedStore, scenario: Scenario, parts: dict[str, Any], *, atomic: bool = True) -> None:
    store.probe.refuse = {marker_key(tenant, key) for tenant, key in scenario.poisoned}
    refused = Refused()
    deliver_phase1(store, scenario, refused, atomic=atomic)
    deliver_phase2(store, scenario, len(scenario.phase1), refused, concurrent=atomic)
    assert refused == scenario.poisoned
    stream = scenario.phase1 + scenario.phase2
    unique = list(winners(stream, scenario.poisoned).values())
    conflicts = expected_conflicts(stream, scenario.poisoned)
    check(store, unique, conflicts)
    close_and_replay(store, scenario, parts, unique)


def close_and_replay(store: ProbedStore, scenario: Scenario, parts: dict[str, Any], unique: list[UsageEvent]) -> None:
    clock = FixedClock(datetime(2026, 12, 5, tzinfo=UTC))
    schedule = sharded()
    closing = make_settings(grace_hours=24, dedupe_retention_days=35, late_event_policy=LateEventPolicy.REVIEW)
    services = wired(store, settings=closing, clock=clock, schedule=schedule, catalog=CATALOG, **parts)
    closed = {(c.tenant_id, c.period.key) for c in services.closer.run().closed}
    touched = {(e.tenant_id, schedule.period_at(e.tenant_id, e.timestamp).key) for e in unique}
    assert touched <= closed
    expected: dict[tuple[str, str], dict[str, tuple[str, int]]] = {}
    for tenant, key in touched:
        lines = Statement.model_validate(store.statements.read(tenant, [key])[key].data).lines
        period = schedule.period_starting(tenant, date.fromisoformat(key))
        assert period is not None
        inside = [e for e in unique if e.tenant_id == tenant and period.contains(e.timestamp)]
        metrics = {e.metric for e in inside}
        expected[(tenant, key)] = {m: expected_cell(m, [e for e in inside if e.metric == m]) for m in metrics}
        # A time_weighted meter's line is its integral, with levels carried in from earlier periods (a line even
        # without an event in the period, when a level was carried).
        for meter in (m for m in CATALOG.meters.values() if m.aggregation is Aggregation.TIME_WEIGHTED):
            mine = [e for e in unique if e.tenant_id == tenant and e.metric == meter.name]
            figure = level_figures(mine, period.start, period.end)
            if meter.name in metrics or figure != ("0", 0):
                expected[(tenant, key)][meter.name] = figure
        got = {line.metric: (decimals.to_str(line.quantity), line.event_count) for line in lines}
        assert got == expected[(tenant, key)]
    ledger = services.new_ledger(max_ops=scenario.max_ops, poison_share=1.0)
    late = services.late_events
    stream = scenario.phase1 + scenario.phase2 + scenario.late
    for start in range(0, len(stream), 9):
        result = ledger.apply(sourced(stream, start, min(start + 9, len(stream)), offset=10_000))
        assert result.applied == 0
        late.handle(result.late)
    recorded = {(t, UsageEvent.model_validate(item.event).dedupe_key) for t in TENANTS for item in late.list(t)}
    # Poisoned events were never counted, so after the close they are late like any event nobody counted.
    assert recorded == {(e.tenant_id, e.dedupe_key) for e in scenario.late} | scenario.poisoned
    # Closed is closed: the replay and the late events changed no total of a closed period.
    reader = services.usage
    for (tenant, key), metrics in expected.items():
        period = schedule.period_starting(tenant, date.fromisoformat(key))
        assert period is not None
        for metric, cell in metrics.items():
            aggregate = reader.for_period(tenant, metric, period)
            assert (decimals.to_str(aggregate.total), aggregate.event_count, aggregate.status) == (*cell, "closed")
