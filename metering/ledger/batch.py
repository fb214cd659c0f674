"""Pre-aggregating a batch of usage events in memory (pure: no I/O).

An event contributes a *cell* (cells.py) to the period total, to its day and UTC hour, and to the groups of the
dimensions its meter breaks down by. Cells of the same key merge by the meter's aggregation, so a batch of
thousands of events becomes a few rows of deltas. Planning gives each event every key it needs (keys.py) once,
including its shard (placement.py), and sets aside what cannot count (a meter the catalog does not know, an event
without an id) and repeats of an event within the batch. An event applied in another shard than its key's is
planned twice: its claim in the key shard, and its application, which the ledger makes only once the claim is
settled as this payload's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from hashlib import blake2b

from metering.core import decimals
from metering.core.clock import format_timestamp, hour_key
from metering.core.events import UsageEvent, check_against_catalog, dedupe_key_of, unique_value
from metering.core.hub import Position
from metering.core.meters import Aggregation, Meter, MeterCatalog
from metering.core.periods import BillingPeriod, PeriodSchedule
from metering.ledger.cells import Cell, absorb, absorb_into
from metering.ledger.keys import day_row_key, marker_key, marker_shard, partition_keys, unique_key
from metering.ledger.placement import applying_shard, resource_of


def payload_hash(event: UsageEvent, timestamp: str | None = None) -> str:
    """What "the same event" means: every field but the unit (a given unit equals the meter's) and, when an
    idempotency key identifies the event, its event id (a retry without an id gets a new one)."""
    dimensions = event.dimensions
    dims = "\x1e".join(f"{k}={v}" for k, v in sorted(dimensions.items())) if dimensions else ""
    identity = f"\0\x1f{event.event_id or ''}" if event.idempotency_key is None else f"{event.idempotency_key}\x1f"
    text = (
        f"{event.tenant_id}\x1f{event.metric}\x1f{decimals.to_str(event.quantity)}\x1f"
        f"{timestamp or format_timestamp(event.timestamp)}\x1f{event.source}\x1f"
        f"{_optional(event.user_id)}\x1f{_optional(event.resource_id)}\x1f{dims}\x1f{identity}{_bulk(event)}"
    )
    return blake2b(text.encode(), digest_size=16).hexdigest()


def _bulk(event: UsageEvent) -> str:
    """`count` and `sample_weight` take part only when not their default: an event without them hashes as it did
    before they existed, so the markers stored then still recognise its retries."""
    if event.counted == 1 and event.weight == 1:
        return ""
    return f"\x1fn={event.counted}\x1fw={event.weight}"


def _optional(value: str | None) -> str:
    return "\0" if value is None else value


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
    partition: str
    period: BillingPeriod
    marker: str
    day: str
    hour: str  # the UTC hour bucket, e.g. 2026-11-24T09
    cell: Cell
    # Every group_by dimension of its meter to the event's value, None for a dimension the event lacks: events
    # without a dimension are a group of their own, so a breakdown adds up to the total.
    groups: dict[str, str | None]
    unique: str | None = None  # the row key of its distinct value, for unique_count meters
    unique_value: str | None = None
    # For time_weighted meters: the resource whose level it sets ("" for the tenant as a whole; ledger/levels.py).
    resource: str | None = None
    adjustment: bool = False  # a late event of a closed period, carried into a later one
    # Applied away from its key shard: the partition (the key shard's) that holds its claim.
    claimed_in: str | None = None
    # This entry is that claim: a marker in the key shard naming `shard`, the shard that applies the event; it
    # contributes nothing. `of` is the application it claims for.
    claim: bool = False
    shard: int = 0
    of: PlannedEvent | None = None
    _payload: str | None = None
    _timestamp: str | None = None

    @property
    def timestamp(self) -> str:
        """The event time as fixed-width UTC text, for its marker: computed when a marker is written."""
        if self._timestamp is None:
            self._timestamp = format_timestamp(self.event.timestamp)
        return self._timestamp

    @property
    def payload(self) -> str:
        """The payload hash, computed when first needed: a marker is written or met. Events a replay skips by
        their hub position never need it."""
        if self._payload is None:
            self._payload = self.of.payload if self.of is not None else payload_hash(self.event, self.timestamp)
        return self._payload

    @property
    def identity(self) -> str:
        """What its marker must hold for a marker met to be this entry's own: the payload hash, and for a claim
        also the shard it names (a claim is never taken for an applied event's marker, nor the reverse)."""
        return claim_identity(self.payload, self.shard) if self.claim else self.payload

    @property
    def hub_position(self) -> Position | None:
        """Its hub position, where the partition's recorded hub ranges may vouch for it: only an event applied
        in its key shard. A claim may have been met by another payload, and an event applied through a claim is
        settled by its marker there, so neither is ever skipped by position (nor counted in coverage)."""
        return None if self.claim or self.claimed_in is not None else self.position


def claim_identity(payload: str, shard: int) -> str:
    return f"{payload}>{shard}"


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
    """First occurrences per store partition, and the later occurrences of the same dedupe key. A repeat is
    judged only once its first occurrence is settled: that one may itself repeat an event stored earlier
    with another payload, and then it is the stored payload a repeat must match."""

    partitions: dict[str, list[PlannedEvent]] = field(default_factory=dict)
    repeats: dict[str, list[PlannedEvent]] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    # Events applied away from their key shard, each claimed in `partitions` (or `repeats`) of its key shard.
    claimed: list[PlannedEvent] = field(default_factory=list)


def contribution(meter: Meter, event: UsageEvent) -> Cell:
    """What one event adds: `count` events to the event count whatever the kind, and for an additive meter its
    figure (a count meter's count, a sum meter's quantity) times its sample weight, with that estimate's variance."""
    kind = meter.aggregation
    counted = event.counted
    if kind is Aggregation.COUNT:
        return weighted(Decimal(counted), counted, event.weight)
    if kind is Aggregation.SUM:
        return weighted(event.quantity, counted, event.weight)
    if kind is Aggregation.UNIQUE_COUNT or kind is Aggregation.TIME_WEIGHTED:
        # Distinct values are added when their unique marker is created, a level's integral when its point is
        # placed between its neighbours (ledger/levels.py): not per event.
        return Cell(decimals.ZERO, counted)
    if kind is Aggregation.LATEST:
        return Cell(event.quantity, counted, (format_timestamp(event.timestamp), event.event_id or event.dedupe_key))
    return Cell(event.quantity, counted)


def weighted(value: Decimal, counted: int, weight: int) -> Cell:
    """An additive figure of an event kept as one in `weight` (Poisson sampling with inclusion probability
    1/weight): it stands for `weight` like it, and the Horvitz-Thompson variance of that estimate is
    (1 - p) / p^2 * value^2 = weight * (weight - 1) * value^2, exactly (an integer times a square of a decimal).
    A weight of 1 is no sampling: no variance."""
    if weight == 1:
        return Cell(value, counted)
    estimate = decimals.multiply(value, Decimal(weight))
    variance = decimals.multiply(Decimal(weight * (weight - 1)), decimals.multiply(value, value))
    return Cell(estimate, counted, variance=variance)


def plan_batch(items: Iterable[SourcedEvent], catalog: MeterCatalog, schedule: PeriodSchedule) -> BatchPlan:
    """Key every event and group by store partition, setting in-batch repeats aside. This runs per event on
    the hot path, hence the plain loop and the cheap checks first."""
    plan = BatchPlan()
    seen: set[str] = set()
    meters = catalog.meters
    # A batch holds runs of one tenant's events of one period (a message is one tenant's): the schedule returns
    # the same period object for them, and its shard count and partition keys are found once per run.
    last: tuple[str, BillingPeriod | None, list[str]] = ("", None, [])
    for item in items:
        event = item.event
        # Checked again: an event that waited in the hub was checked (if at all) against the catalog of then.
        problems = check_against_catalog(event, catalog)
        if problems:
            plan.rejected.append(Rejected(item, "; ".join(f"{p.field} {p.message}" for p in problems)))
            continue
        dedupe = dedupe_key_of(event)
        if dedupe is None:
            plan.rejected.append(Rejected(item, "event has neither event_id nor idempotency_key"))
            continue
        meter = meters[event.metric]
        unique = unique_value(event, meter.field) if meter.aggregation is Aggregation.UNIQUE_COUNT else None
        tenant = event.tenant_id
        instant = event.timestamp
        period = schedule.period_at(tenant, instant)
        if period is last[1] and tenant == last[0]:
            partitions = last[2]
        else:
            partitions = partition_keys(tenant, period, schedule.shards(tenant, period))
            last = (tenant, period, partitions)
        mkey = marker_key(tenant, dedupe)
        pkey, shard, claim_in = _placed(meter, event, mkey, partitions)
        hour = hour_key(instant)
        day = schedule.day_of(tenant, instant).isoformat()
        dimensions = event.dimensions
        groups = {dim: dimensions.get(dim) for dim in meter.group_by} if meter.group_by else {}
        planned = PlannedEvent(
            event=event,
            meter=meter,
            position=item.position,
            partition=pkey,
            period=period,
            marker=mkey,
            day=day,
            hour=hour,
            cell=contribution(meter, event),
            groups=groups,
        )
        if meter.aggregation is Aggregation.TIME_WEIGHTED:
            planned.resource = resource_of(event)
        if unique is not None:
            planned.unique_value = unique
            planned.unique = unique_key(meter.name, unique)
        if claim_in is not None:
            planned.claimed_in = claim_in
            plan.claimed.append(planned)
            _hold(plan, seen, _claim(planned, claim_in, shard))
        else:
            _hold(plan, seen, planned)
    return plan


def _placed(meter: Meter, event: UsageEvent, marker: str, partitions: list[str]) -> tuple[str, int, str | None]:
    """The partition and shard that apply the event, and the partition of its key shard when that is another."""
    shards = len(partitions)
    if shards == 1:
        return partitions[0], 0, None
    key_shard = marker_shard(marker, shards)
    shard = applying_shard(meter, event, key_shard, shards)
    return partitions[shard], shard, None if shard == key_shard else partitions[key_shard]


def _hold(plan: BatchPlan, seen: set[str], planned: PlannedEvent) -> None:
    """File the event (or its claim) under its partition, as a first occurrence or a repeat. A dedupe key has one
    key shard whatever its meter: repeats across meters meet there too."""
    key = planned.partition + planned.marker
    if key in seen:
        plan.repeats.setdefault(planned.partition, []).append(planned)
    else:
        seen.add(key)
        plan.partitions.setdefault(planned.partition, []).append(planned)


_NOTHING = Cell(decimals.ZERO, 0)


def _claim(planned: PlannedEvent, partition: str, shard: int) -> PlannedEvent:
    return PlannedEvent(
        event=planned.event,
        meter=planned.meter,
        position=planned.position,
        partition=partition,
        period=planned.period,
        marker=planned.marker,
        day=planned.day,
        hour=planned.hour,
        cell=_NOTHING,
        groups={},
        claim=True,
        shard=shard,
        of=planned,
    )


def plan_adjustment(planned: PlannedEvent, period: BillingPeriod, day: str, hour: str, shards: int = 1) -> PlannedEvent:
    """A late event carried into `period` of `shards` shards (counted on the day and hour it was carried). It
    keeps its marker key, so it is carried once however often it comes again, in its key shard there; it has no
    hub position, because the hub ranges that partition records as applied say nothing of events carried into
    it. Only kinds applied in their key shard are carried (sum and count: billing/late.py)."""
    tenant = planned.event.tenant_id
    key_shard = marker_shard(planned.marker, shards)
    if applying_shard(planned.meter, planned.event, key_shard, shards) != key_shard:
        raise ValueError(f"a {planned.meter.aggregation} event is applied by its value's shard: it is not carried")
    return PlannedEvent(
        event=planned.event,
        meter=planned.meter,
        position=None,
        partition=partition_keys(tenant, period, shards)[key_shard],
        period=period,
        marker=planned.marker,
        day=day,
        hour=hour,
        cell=planned.cell,
        groups=planned.groups,
        unique=planned.unique,
        unique_value=planned.unique_value,
        adjustment=True,
    )


@dataclass(slots=True)
class DayDelta:
    """One meter's deltas for one day: the day cell, its UTC hour cells, its groups per dimension and value,
    the cells of events without a dimension (`absent`, per dimension) and, when a stored block is moved, its
    overflow cells."""

    kind: Aggregation
    day: Cell | None = None
    hours: dict[str, Cell] = field(default_factory=dict)
    groups: dict[str, dict[str, Cell]] = field(default_factory=dict)
    overflow: dict[str, Cell] = field(default_factory=dict)
    absent: dict[str, Cell] = field(default_factory=dict)


@dataclass(slots=True)
class UniqueDelta:
    """A distinct value of a unique_count meter met in a chunk, and the days it was met on."""

    meter: Meter
    value: str
    days: set[str] = field(default_factory=set)


@dataclass(slots=True)
class ChunkDeltas:
    """What one chunk of events adds to the rows of its partition, merged per row and cell."""

    totals: dict[str, Cell] = field(default_factory=dict)
    adjustments: dict[str, Cell] = field(default_factory=dict)  # the part of `totals` carried from closed periods
    days: dict[str, dict[str, DayDelta]] = field(default_factory=dict)
    uniques: dict[str, UniqueDelta] = field(default_factory=dict)
    meters: dict[str, Meter] = field(default_factory=dict)

    def row_keys(self) -> list[str]:
        return [day_row_key(day) for day in self.days]

    def hours(self) -> set[str]:
        """The UTC hours whose cells these deltas change."""
        return {hour for per_meter in self.days.values() for delta in per_meter.values() for hour in delta.hours}


def _add_groups(kind: Aggregation, delta: DayDelta, groups: Mapping[str, str | None], cell: Cell) -> None:
    """An event's cell in each of its dimensions' groups: its value's, or the group of events without it."""
    for dim, value in groups.items():
        if value is None:
            absorb(kind, delta.absent, dim, cell)
            continue
        values = delta.groups.get(dim)
        if values is None:
            values = delta.groups[dim] = {}
        absorb(kind, values, value, cell)


def chunk_deltas(events: Iterable[PlannedEvent]) -> ChunkDeltas:
    deltas = ChunkDeltas()
    totals, days, meters = deltas.totals, deltas.days, deltas.meters
    for planned in events:
        if planned.claim:
            continue  # a claim only holds the key: its event counts where it is applied
        meter = planned.meter
        name = meter.name
        kind = meter.aggregation
        cell = planned.cell
        meters[name] = meter
        absorb(kind, totals, name, cell)
        if planned.adjustment:
            absorb(kind, deltas.adjustments, name, cell)
        per_meter = days.get(planned.day)
        if per_meter is None:
            per_meter = days[planned.day] = {}
        delta = per_meter.get(name)
        if delta is None:
            delta = per_meter[name] = DayDelta(kind)
        if delta.day is None:
            delta.day = Cell(cell.value, cell.count, cell.at, cell.variance)
        else:
            absorb_into(kind, delta.day, cell)
        if kind is not Aggregation.UNIQUE_COUNT:
            absorb(kind, delta.hours, planned.hour, cell)
        _add_groups(kind, delta, planned.groups, cell)
        if planned.unique is not None:
            seen = deltas.uniques.get(planned.unique)
            if seen is None:
                assert planned.unique_value is not None
                seen = deltas.uniques[planned.unique] = UniqueDelta(meter, planned.unique_value)
            seen.days.add(planned.day)
    return deltas
