"""Pre-aggregating a batch of usage events in memory (pure: no I/O).

An event contributes a *cell* (a value, an event count and, for `latest`, the position that orders it) to the
period total, to its day and UTC hour, and to the groups of the dimensions its meter breaks down by. Cells of
the same key merge by the meter's aggregation, so a batch of thousands of events becomes a few rows of deltas.
This module also derives every store key of an event: where its dedupe marker lives is a pure function of the
tenant, the dedupe key and the event's billing period, so a redelivered event always meets its own marker.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from hashlib import blake2b
from typing import Any

from metering import decimals
from metering.events import UsageEvent, check_against_catalog, format_timestamp, unique_value
from metering.meters import Aggregation, Meter, MeterCatalog
from metering.periods import BillingPeriod, PeriodSchedule

STATE_ROW = "s"
PERIOD_BUCKET = "p"
# One shard per tenant and period. Unique counts must see every distinct value of a period in one partition
# to stay exact; spreading a hot tenant over several shards needs a second step for them (README, Limits).
SHARD = 0


def digest(text: str) -> str:
    """128-bit hex digest: user strings never go into store keys raw (keys forbid / \\ # ? and controls)."""
    return blake2b(text.encode(), digest_size=16).hexdigest()


def partition_key(tenant_id: str, period: BillingPeriod, shard: int = SHARD) -> str:
    # Tenant ids are restricted to A-Z a-z 0-9 . _ : - , all legal in a PartitionKey.
    return f"{tenant_id}|{period.key}|{shard}"


def marker_key(tenant_id: str, dedupe_key: str) -> str:
    return "m|" + digest(f"{tenant_id}\n{dedupe_key}")


def day_row_key(day: str) -> str:
    return "d|" + day


def group_row_key(metric: str, day: str) -> str:
    return f"g|{metric}|{day}"


def unique_key(metric: str, bucket: str, value: str) -> str:
    return f"u|{metric}|{bucket}|{digest(value)}"


def payload_hash(event: UsageEvent) -> str:
    """What "the same event" means: every field but the unit (a given unit equals the meter's) and, when an
    idempotency key identifies the event, its event id (a retry without an id gets a new one)."""
    parts = [
        event.tenant_id,
        event.metric,
        decimals.to_str(event.quantity),
        format_timestamp(event.timestamp),
        event.source,
        "\0" if event.user_id is None else event.user_id,
        "\0" if event.resource_id is None else event.resource_id,
        "\x1e".join(f"{k}={v}" for k, v in sorted(event.dimensions.items())),
        "\0" if event.idempotency_key is None else event.idempotency_key,
        (event.event_id or "") if event.idempotency_key is None else "",
    ]
    return digest("\x1f".join(parts))


@dataclass(slots=True)
class Cell:
    """An aggregate over some events. `at` orders `latest` values: (timestamp, event id), never arrival."""

    value: Decimal
    count: int
    at: tuple[str, str] | None = None

    def to_json(self) -> list[Any]:
        encoded: list[Any] = [decimals.to_str(self.value), self.count]
        if self.at is not None:
            encoded.extend(self.at)
        return encoded

    @classmethod
    def from_json(cls, data: Sequence[Any]) -> Cell:
        at = (data[2], data[3]) if len(data) > 2 else None
        return cls(Decimal(data[0]), int(data[1]), at)


def merge(kind: Aggregation, into: Cell | None, delta: Cell) -> Cell:
    """Combine two cells of one meter. Additive kinds add; levels keep their extreme or their latest."""
    if into is None:
        return Cell(delta.value, delta.count, delta.at)
    count = into.count + delta.count
    if kind is Aggregation.MAX:
        return Cell(max(into.value, delta.value), count)
    if kind is Aggregation.MIN:
        return Cell(min(into.value, delta.value), count)
    if kind is Aggregation.LATEST:
        newer = delta if (delta.at or ("", "")) > (into.at or ("", "")) else into
        return Cell(newer.value, count, newer.at)
    return Cell(decimals.add(into.value, delta.value), count)


def merge_json(kind: Aggregation, stored: Sequence[Any] | None, delta: Cell) -> list[Any]:
    return merge(kind, None if stored is None else Cell.from_json(stored), delta).to_json()


@dataclass(frozen=True, slots=True)
class Position:
    """Where an event came from in the hub: its partition and the sequence number of its message."""

    partition: str
    sequence: int


@dataclass(frozen=True, slots=True)
class SourcedEvent:
    event: UsageEvent
    position: Position | None = None


@dataclass(slots=True)
class PlannedEvent:
    """An event with every key and contribution the ledger needs, computed once."""

    event: UsageEvent
    meter: Meter
    position: Position | None
    order: int
    partition: str
    period: BillingPeriod
    marker: str
    payload: str
    day: str
    hour: str
    cell: Cell
    groups: dict[str, str]
    uniques: tuple[str, ...] = ()
    unique_value: str | None = None

    def marker_data(self, applied_at: str) -> dict[str, Any]:
        """A marker keeps the event's contribution (what a cancel subtracts) and its payload hash."""
        event = self.event
        data: dict[str, Any] = {
            "k": event.dedupe_key,
            "h": self.payload,
            "e": event.event_id,
            "m": event.metric,
            "q": decimals.to_str(event.quantity),
            "t": format_timestamp(event.timestamp),
            "d": self.day,
            "a": applied_at,
        }
        if self.groups:
            data["g"] = self.groups
        if self.position is not None:
            data["p"] = [self.position.partition, self.position.sequence]
        return data


@dataclass(frozen=True, slots=True)
class Conflict:
    """A second payload under a dedupe key that was already counted with another: not counted, reported."""

    tenant_id: str
    dedupe_key: str
    first_payload: str
    event: UsageEvent


@dataclass(frozen=True, slots=True)
class Rejected:
    """An event the aggregator cannot apply; the caller dead-letters it with the reason."""

    item: SourcedEvent
    reason: str


@dataclass(slots=True)
class BatchPlan:
    partitions: dict[str, list[PlannedEvent]] = field(default_factory=dict)
    duplicates: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def contribution(meter: Meter, event: UsageEvent) -> Cell:
    kind = meter.aggregation
    if kind is Aggregation.COUNT:
        return Cell(decimals.ONE, 1)
    if kind is Aggregation.UNIQUE_COUNT:
        # Distinct values are added when their unique marker is created, not per event.
        return Cell(decimals.ZERO, 1)
    if kind is Aggregation.LATEST:
        return Cell(event.quantity, 1, (format_timestamp(event.timestamp), event.event_id or event.dedupe_key))
    return Cell(event.quantity, 1)


def plan_batch(items: Iterable[SourcedEvent], catalog: MeterCatalog, schedule: PeriodSchedule) -> BatchPlan:
    """Key every event, drop in-batch repeats (the first occurrence wins) and group by store partition."""
    plan = BatchPlan()
    seen: dict[tuple[str, str], PlannedEvent] = {}
    for order, item in enumerate(items):
        event = item.event
        meter = catalog.get(event.metric)
        problems = check_against_catalog(event, catalog) if meter is not None else []
        if meter is None or problems:
            reason = "; ".join(f"{p.field} {p.message}" for p in problems) or f"unknown meter {event.metric!r}"
            plan.rejected.append(Rejected(item, reason))
            continue
        if event.event_id is None and event.idempotency_key is None:
            plan.rejected.append(Rejected(item, "event has neither event_id nor idempotency_key"))
            continue
        tenant = event.tenant_id
        period = schedule.period_at(tenant, event.timestamp)
        pkey = partition_key(tenant, period)
        mkey = marker_key(tenant, event.dedupe_key)
        payload = payload_hash(event)
        first = seen.get((pkey, mkey))
        if first is not None:
            if first.payload == payload:
                plan.duplicates += 1
            else:
                plan.conflicts.append(Conflict(tenant, event.dedupe_key, first.payload, event))
            continue
        day = schedule.day_of(tenant, event.timestamp).isoformat()
        groups = {dim: event.dimensions[dim] for dim in meter.group_by if dim in event.dimensions}
        planned = PlannedEvent(
            event=event,
            meter=meter,
            position=item.position,
            order=order,
            partition=pkey,
            period=period,
            marker=mkey,
            payload=payload,
            day=day,
            hour=event.timestamp.strftime("%Y-%m-%dT%H"),
            cell=contribution(meter, event),
            groups=groups,
        )
        if meter.aggregation is Aggregation.UNIQUE_COUNT:
            value = unique_value(event, meter.field)
            assert value is not None  # check_against_catalog requires it
            planned.unique_value = value
            planned.uniques = (
                unique_key(meter.name, PERIOD_BUCKET, value),
                unique_key(meter.name, day, value),
            )
        seen[(pkey, mkey)] = planned
        plan.partitions.setdefault(pkey, []).append(planned)
    return plan


@dataclass(slots=True)
class ChunkDeltas:
    """What one chunk of events adds to the rows of its partition, merged per row and cell."""

    totals: dict[str, Cell] = field(default_factory=dict)
    days: dict[str, dict[str, tuple[Cell, dict[str, Cell]]]] = field(default_factory=dict)
    groups: dict[str, dict[str, dict[str, Cell]]] = field(default_factory=dict)
    uniques: dict[str, PlannedEvent] = field(default_factory=dict)
    meters: dict[str, Meter] = field(default_factory=dict)

    def row_keys(self) -> list[str]:
        keys = [day_row_key(day) for day in self.days]
        keys.extend(self.groups)
        return keys


def chunk_deltas(events: Iterable[PlannedEvent]) -> ChunkDeltas:
    deltas = ChunkDeltas()
    for planned in events:
        meter = planned.meter
        name = meter.name
        kind = meter.aggregation
        cell = planned.cell
        deltas.meters[name] = meter
        deltas.totals[name] = merge(kind, deltas.totals.get(name), cell)
        per_day = deltas.days.setdefault(planned.day, {})
        day_cell, hours = per_day.get(name, (None, {}))
        day_cell = merge(kind, day_cell, cell)
        if kind is not Aggregation.UNIQUE_COUNT:
            hours[planned.hour] = merge(kind, hours.get(planned.hour), cell)
        per_day[name] = (day_cell, hours)
        if planned.groups:
            per_group = deltas.groups.setdefault(group_row_key(name, planned.day), {})
            for dim, value in planned.groups.items():
                values = per_group.setdefault(dim, {})
                values[value] = merge(kind, values.get(value), cell)
        for key in planned.uniques:
            deltas.uniques.setdefault(key, planned)
    return deltas
