"""Benchmark: the exactly-once aggregator against the floor any per-event-marker design pays.

    python bench/aggregate.py [--events 20000] [--tenants 50] [--batch 1000] [--duplicates 0.1]

Starts its own Azurite. Applies the workload through the ledger in batches (what the Event Hub trigger
delivers: messages of about 10 events), and, interleaved batch by batch so both meet the same Azurite, writes
the floor: the same new events' markers alone, in the same partitions and transactions of the same sizes, with
no aggregate rows and no reads. Prints both rates, raw 100-entity transactions for reference, the in-memory
pre-aggregation rate, and last `aggregate_vs_raw_ratio=R` (aggregator rate / floor rate). The gauge events
(storage levels) feed a `max` meter; the same workload is run first with them as points of a time_weighted meter,
which write more rows per event, and that mix's ratio is printed apart (`time_weighted_mix_ratio`).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import timeit
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metering.bootstrap import Services
from metering.core import decimals
from metering.core.clock import format_timestamp
from metering.core.events import UsageEvent
from metering.core.hub import Position
from metering.core.meters import load_catalog
from metering.core.periods import CalendarMonthUtc
from metering.devhost.azurite import Azurite
from metering.ledger.batch import SourcedEvent, chunk_deltas, payload_hash, plan_batch
from metering.settings import Settings
from metering.stores import Create, Operation, Row
from metering.stores.table import TableStore

# The gauge events: a level per event, by tier, the peak kept (a `max` meter). The run repeats the workload with them
# as points of a time_weighted meter (`storage.gb`, one resource per tier), which also write the resource's points
# and the day's history buckets (DESIGN.md 5.3), and prints that mix's ratio apart.
GAUGE, TIME_WEIGHTED = "storage.gb_peak", "storage.gb"
METRICS = [
    ("api.requests", 50),
    ("compute.seconds", 15),
    ("transfer.bytes", 15),
    ("users.active", 10),
    (GAUGE, 5),
    ("reports.generated", 5),
]
EVENTS_PER_MESSAGE = 10
# The services are wired on the benchmark's own store; the settings only name what nothing here reads.
BENCH_SETTINGS = Settings.model_validate({"storage_connection": "UseDevelopmentStorage=true"})


def make_event(rng: random.Random, index: int, tenants: int, at: datetime) -> UsageEvent:
    metric = rng.choices([m for m, _ in METRICS], weights=[w for _, w in METRICS])[0]
    tenant = f"tenant-{rng.randrange(tenants):03d}"
    dimensions: dict[str, str] = {}
    quantity = "1"
    if metric == "api.requests":
        dimensions = {
            "endpoint": rng.choice(["/v1/search", "/v1/items", "/v1/orders", "/v1/users", "/v1/export"]),
            "method": rng.choice(["GET", "POST"]),
            "region": rng.choice(["eu", "us", "ap"]),
        }
    elif metric == "compute.seconds":
        quantity = f"{rng.randint(1, 90_000) / 1000:.3f}"
        dimensions = {"instance_type": rng.choice(["s", "m", "l"]), "region": rng.choice(["eu", "us", "ap"])}
    elif metric == "transfer.bytes":
        quantity = str(rng.randint(100, 5_000_000))
        dimensions = {"direction": rng.choice(["in", "out"]), "region": rng.choice(["eu", "us", "ap"])}
    elif metric == GAUGE:
        quantity = f"{rng.randint(1, 500_000) / 100:.2f}"
        dimensions = {"tier": rng.choice(["hot", "cool"])}
    elif metric == "reports.generated":
        dimensions = {"format": rng.choice(["pdf", "csv"])}
    return UsageEvent(
        event_id=f"evt-{index:08d}",
        tenant_id=tenant,
        metric=metric,
        quantity=quantity,
        timestamp=at,
        source="bench",
        user_id=f"user-{rng.randrange(200)}" if metric == "users.active" else None,
        dimensions=dimensions,
    )


def workload(events: int, tenants: int, batch: int, duplicates: float, seed: int = 7) -> list[list[UsageEvent]]:
    """Batches of `batch` events; `duplicates` of them repeat an earlier event, half within the batch, half
    a client retry of an event from the batch before."""
    rng = random.Random(seed)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    batches: list[list[UsageEvent]] = []
    index = 0
    for b in range(events // batch):
        current: list[UsageEvent] = []
        for i in range(batch):
            previous = batches[-1] if batches else []
            if current and rng.random() < duplicates:
                pool = previous if previous and rng.random() < 0.5 else current
                current.append(rng.choice(pool))
                continue
            at = start + timedelta(seconds=(b * batch + i) * 0.3)
            current.append(make_event(rng, index, tenants, at))
            index += 1
        batches.append(current)
    return batches


def to_messages(batch: list[UsageEvent], first_sequence: int) -> list[SourcedEvent]:
    """As the ingest function packs them: one tenant's events per message, about 10 per message."""
    by_tenant: dict[str, list[UsageEvent]] = {}
    for event in batch:
        by_tenant.setdefault(event.tenant_id, []).append(event)
    sourced: list[SourcedEvent] = []
    sequence = first_sequence
    for events in by_tenant.values():
        for i in range(0, len(events), EVENTS_PER_MESSAGE):
            sourced.extend(SourcedEvent(e, Position("0", sequence)) for e in events[i : i + EVENTS_PER_MESSAGE])
            sequence += 1
    return sourced


def _size(partition: str, operations: Sequence[Operation]) -> int:
    """An entity's size as its keys and the JSON of its fields (what Cosmos DB stores; Table storage's own
    encoding is of the same order)."""
    return sum(len(partition) + len(op.key) + len(json.dumps(getattr(op, "data", None) or {})) for op in operations)


class MarkerRecorder:
    """Wraps the usage table and notes each commit's marker operations, so the floor writes the same
    markers in the same partitions and transactions. It adds a list append per commit."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.commits: list[tuple[str, list[Operation]]] = []
        # What the capacity model counts per event (README): transactions, entities written and their bytes
        # (the JSON of their fields, about what Table storage bills and Cosmos DB charges RUs by), reads.
        self.written: list[tuple[str, Sequence[Operation]]] = []
        self.reads = 0

    def counts(self) -> tuple[int, int, int]:
        """Transactions, entities and bytes written (counted after the timed run, so the count costs it nothing)."""
        entities = sum(len(ops) for _, ops in self.written)
        size = sum(_size(partition, ops) for partition, ops in self.written)
        return len(self.written), entities, size

    def read(self, partition: str, keys: Collection[str]) -> dict[str, Row]:
        self.reads += 1
        return self.inner.read(partition, keys)

    def range(self, partition: str, start: str, stop: str, limit: int | None = None) -> list[Row]:
        return self.inner.range(partition, start, stop, limit)

    def partition(self, partition: str) -> list[Row]:
        return self.inner.partition(partition)

    def upsert(self, partition: str, key: str, data: dict[str, Any]) -> None:
        self.inner.upsert(partition, key, data)

    def commit(self, partition: str, operations: Sequence[Operation]) -> list[str]:
        etags = self.inner.commit(partition, operations)
        self.written.append((partition, operations))
        self.commits.append((partition, [op for op in operations if op.key.startswith("m|")]))
        return etags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--duplicates", type=float, default=0.10)
    args = parser.parse_args()

    catalog = load_catalog()
    schedule = CalendarMonthUtc()
    batches = workload(args.events, args.tenants, args.batch, args.duplicates)
    sourced_batches = sourced(batches)
    total = sum(len(b) for b in batches)
    unique = len({(e.tenant_id, e.event_id) for b in batches for e in b})
    print(f"events={total} unique={unique} tenants={args.tenants} batch={args.batch} duplicates={args.duplicates:.0%}")

    # In-memory pre-aggregation, no I/O: store keys, periods and buckets, in-batch dedupe (marker keys), and the
    # merged deltas per partition. Best of three passes: CPU-bound, so the fastest pass is the least disturbed.
    def preaggregate() -> list[Any]:
        plans = [plan_batch(batch, catalog, schedule) for batch in sourced_batches]
        for plan in plans:
            for events in plan.partitions.values():
                chunk_deltas(events)
        return plans

    preaggregation_rate = total / min(timeit.repeat(preaggregate, number=1, repeat=3))
    # What a marker adds, computed when it is written (part of applying, shown apart): the event time as text and
    # the payload hash.
    planned = [p for plan in preaggregate() for events in plan.partitions.values() for p in events]
    hashes = lambda: [payload_hash(p.event, format_timestamp(p.event.timestamp)) for p in planned]  # noqa: E731
    hashing_rate = len(planned) / min(timeit.repeat(hashes, number=1, repeat=3))

    with tempfile.TemporaryDirectory() as folder, Azurite(Path(folder)) as azurite:
        raw_store = TableStore.from_connection_string(
            azurite.connection_string, usage_table="benchraw", conflicts_table="benchrawconflicts"
        )
        raw_store.ensure_ready()
        # Reference: raw 100-entity transactions of marker-sized entities.
        raw_entities = 0
        started = time.perf_counter()
        for t in range(20):
            raw_store.usage.commit(
                f"raw|{t}", [Create(f"m|{i:032x}", {"h": "0" * 32, "q": "1", "t": "x" * 27}) for i in range(100)]
            )
            raw_entities += 100
        raw_rate = raw_entities / (time.perf_counter() - started)
        gauges = run(
            azurite.connection_string,
            "gauge",
            batches=batches,
            sourced_batches=sourced_batches,
            unique=unique,
            catalog=catalog,
            schedule=schedule,
        )
        levels = time_weighted(batches)
        points = run(
            azurite.connection_string,
            "level",
            batches=levels,
            sourced_batches=sourced(levels),
            unique=unique,
            catalog=catalog,
            schedule=schedule,
        )

    print(f"pre-aggregation (in memory, no I/O): {preaggregation_rate:,.0f} events/s (target >= 100,000)")
    print(f"marker fields: time text, payload hash (no I/O): {hashing_rate:,.0f} events/s")
    print(f"raw 100-entity transactions:         {raw_rate:,.0f} entities/s")
    points.report(f"with the {GAUGE} events as points of {TIME_WEIGHTED} (time_weighted, one resource per tier)")
    print(f"time_weighted_mix_ratio={points.ratio:.2f}")
    gauges.report("the workload")
    print(f"aggregate_vs_raw_ratio={gauges.ratio:.2f}")


def time_weighted(batches: list[list[UsageEvent]]) -> list[list[UsageEvent]]:
    """The same batches with each gauge event a point of the time_weighted meter (a repeat stays a repeat)."""
    converted: dict[int, UsageEvent] = {}

    def convert(event: UsageEvent) -> UsageEvent:
        if event.metric != GAUGE:
            return event
        if id(event) not in converted:
            data = event.model_dump()
            data.update(metric=TIME_WEIGHTED, resource_id=event.dimensions["tier"], dimensions={})
            converted[id(event)] = UsageEvent.model_validate(data)
        return converted[id(event)]

    return [[convert(event) for event in batch] for batch in batches]


def sourced(batches: list[list[UsageEvent]]) -> list[list[SourcedEvent]]:
    found: list[list[SourcedEvent]] = []
    sequence = 0
    for batch in batches:
        found.append(to_messages(batch, sequence))
        sequence = found[-1][-1].position.sequence + 1  # type: ignore[union-attr]
    return found


@dataclass(frozen=True, slots=True)
class Run:
    aggregate_rate: float
    floor_rate: float
    unique: int
    transactions: int
    entities: int
    size: int
    reads: int
    floor_bytes: int
    floor_markers: int

    @property
    def ratio(self) -> float:
        return self.aggregate_rate / self.floor_rate

    def report(self, what: str) -> None:
        print(f"{what}:")
        print(f"  floor (markers only, same partitions and transaction sizes): {self.floor_rate:,.0f} events/s")
        print(f"  aggregator (exactly-once):           {self.aggregate_rate:,.0f} events/s; totals verified exact")
        print(
            f"  per unique event: {self.entities / self.unique:.2f} entities written in "
            f"{self.transactions / self.unique:.3f} transactions, {self.size / self.unique:,.0f} bytes of entity "
            f"data, {self.reads / self.unique:.3f} reads (markers alone: 1 entity of "
            f"{self.floor_bytes / max(self.floor_markers, 1):,.0f} bytes)"
        )


def run(
    connection: str,
    name: str,
    *,
    batches: list[list[UsageEvent]],
    sourced_batches: list[list[SourcedEvent]],
    unique: int,
    catalog: Any,
    schedule: Any,
) -> Run:
    """The workload through the ledger, interleaved batch by batch with its floor, in tables of its own."""
    store = TableStore.from_connection_string(
        connection, usage_table=f"bench{name}usage", conflicts_table=f"bench{name}conflicts"
    )
    floor_store = TableStore.from_connection_string(
        connection, usage_table=f"bench{name}floor", conflicts_table=f"bench{name}floorconflicts"
    )
    store.ensure_ready()
    floor_store.ensure_ready()
    recorder = MarkerRecorder(store.usage)
    store.usage = recorder  # type: ignore[assignment]
    services = Services(BENCH_SETTINGS, store=store, catalog=catalog, schedule=schedule)
    ledger = services.ledger
    total = sum(len(b) for b in batches)
    aggregate_seconds = 0.0
    floor_seconds = 0.0
    floor_markers = 0
    floor_bytes = 0
    for batch in sourced_batches:
        recorder.commits.clear()
        started = time.perf_counter()
        ledger.apply(batch)
        aggregate_seconds += time.perf_counter() - started
        recorded = list(recorder.commits)
        started = time.perf_counter()
        for partition, markers in recorded:
            if markers:
                floor_store.usage.commit(partition, markers)
                floor_markers += len(markers)
        floor_seconds += time.perf_counter() - started
        floor_bytes += sum(_size(partition, markers) for partition, markers in recorded)

    # The aggregates must be exact, or the rate means nothing.
    reader = services.usage
    expected: dict[str, Decimal] = {}
    seen: set[tuple[str, str | None]] = set()
    for batch in batches:
        for event in batch:
            if event.metric == "compute.seconds" and (event.tenant_id, event.event_id) not in seen:
                seen.add((event.tenant_id, event.event_id))
                expected[event.tenant_id] = decimals.add(expected.get(event.tenant_id, Decimal(0)), event.quantity)
    for tenant, value in expected.items():
        got = reader.current(tenant, "compute.seconds").total
        assert got == value, f"{tenant}: aggregate {got} != expected {value}"
    assert floor_markers == unique, (floor_markers, unique)
    transactions, entities, size = recorder.counts()
    return Run(
        total / aggregate_seconds,
        total / floor_seconds,
        unique,
        transactions,
        entities,
        size,
        recorder.reads,
        floor_bytes,
        floor_markers,
    )


if __name__ == "__main__":
    main()
