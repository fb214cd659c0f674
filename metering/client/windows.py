"""Pre-aggregating usage in windows of event time before it is sent (pure: no threads, no I/O, no clock of its
own). The writers (aggregating.py) hold a lock around every call and send what comes out.

Per key (tenant, metric, source, dimensions, and the value a unique_count meter counts) and per window of event
time (aligned to the epoch, a length that divides 15 minutes: so no window straddles an hour, a day of any time
zone, or a billing period) one event stands for every event recorded:

    sum            the quantities added, `count` the number of events
    count          `count` the number of events
    max, min       the extreme, with `count`
    latest         the latest value by (timestamp, event id), with its own timestamp, and `count`
    unique_count   each distinct value once per window, with `count`
    time_weighted  each resource's level changes, as recorded (levels.py): a level cannot be summed
    anything else  (a kind the writer does not know, a meter not in its catalog, a sampled event) as recorded

An aggregate's `event_id` is a hash of the writer's random id, the window, the key and a generation: the
writer's count of aggregates sent, which grows with each one, so an aggregate is its own event for ever (a retry
resends it unchanged, as the buffer keeps its bytes) and a key that gets more events after its window was sent
goes again under a new id, never under the id of another sum (the service would keep the first and record the
second as a conflict).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from hashlib import blake2b
from typing import Any

from pydantic import TypeAdapter, ValidationError

from metering.client.errors import InvalidEvent
from metering.client.levels import LevelChanges
from metering.client.recording import QuantityLike, recorded
from metering.core import decimals
from metering.core.events import (
    MAX_COUNT,
    FieldError,
    Timestamp,
    UsageEvent,
    check_against_catalog,
    quantity_of,
    unique_value,
)
from metering.core.meters import Meter, MeterCatalog

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Windows must tile an hour and a local day in every time zone (offsets are whole quarter hours).
QUARTER_HOUR_US = 15 * 60 * 1_000_000
DEFAULT_WINDOW = 10.0
# Open aggregates (keys times windows) held before the oldest window is sent early: a bound on memory.
DEFAULT_MAX_OPEN = 10_000
# Fields a recorded event may carry and still be folded into an aggregate; others make it go as recorded.
_FOLDABLE_FIELDS = frozenset({"source", "unit", "user_id", "resource_id", "dimensions", "timestamp", "count"})


class Folding(Enum):
    ADD = "add"
    COUNT = "count"
    MAX = "max"
    MIN = "min"
    LATEST = "latest"
    DISTINCT = "distinct"
    LEVELS = "levels"
    ALONE = "alone"


_FOLDINGS = {
    "sum": Folding.ADD,
    "count": Folding.COUNT,
    "max": Folding.MAX,
    "min": Folding.MIN,
    "latest": Folding.LATEST,
    "unique_count": Folding.DISTINCT,
    "time_weighted": Folding.LEVELS,
}


@dataclass(frozen=True, slots=True)
class MeterRule:
    """How the writer folds a meter's events, from the meter's aggregation kind."""

    folding: Folding
    meter: Meter | None = None

    @classmethod
    def of(cls, meter: Meter | None) -> MeterRule:
        if meter is None:
            return cls(Folding.ALONE)
        return cls(_FOLDINGS.get(str(meter.aggregation.value), Folding.ALONE), meter)


def window_length_us(window: float) -> int:
    """The window in microseconds; it must divide 15 minutes."""
    length = round(window * 1_000_000)
    if length <= 0 or QUARTER_HOUR_US % length or abs(length - window * 1_000_000) > 0.5:
        raise ValueError(
            f"window must be a length in seconds that divides 15 minutes (e.g. 1, 10, 60, 900), not {window}"
        )
    return length


@dataclass(slots=True)
class _Template:
    """What every event of a key shares, validated once (the first event recorded with these fields)."""

    rule: MeterRule
    key: tuple[Any, ...]
    event: UsageEvent


@dataclass(slots=True)
class _Aggregate:
    template: _Template
    window: int
    value: Decimal
    count: int
    latest: tuple[datetime, str] | None = None
    latest_value: Decimal | None = None


class Windows:
    """The open aggregates of one writer. `add` folds one recorded event in; `due`, `drain` and `add` return the
    events that are ready to send, in the order they should go."""

    def __init__(
        self,
        catalog: MeterCatalog,
        *,
        writer_id: str,
        source: str,
        window: float = DEFAULT_WINDOW,
        max_open: int = DEFAULT_MAX_OPEN,
        levels: LevelChanges | None = None,
    ) -> None:
        if max_open < 1:
            raise ValueError("max_open must be at least 1")
        self.catalog = catalog
        self.writer_id = writer_id
        self.source = source
        self.window_us = window_length_us(window)
        self.max_open = max_open
        self.levels = levels or LevelChanges()
        self.recorded = 0
        self.generation = 0
        self._rules = {name: MeterRule.of(meter) for name, meter in catalog.meters.items()}
        self._templates: dict[tuple[Any, ...], _Template] = {}
        self._open: dict[int, dict[tuple[Any, ...], _Aggregate]] = {}
        self._opened: dict[int, float] = {}  # when each open window got its first aggregate (wall clock)
        self._open_count = 0

    @property
    def open(self) -> int:
        """Aggregates waiting for their window to end."""
        return self._open_count

    def next_due(self) -> float | None:
        """When the earliest open window is due (seconds since the epoch); None when none is open."""
        if not self._open:
            return None
        return min(self._due_at(window) for window in self._open)

    def _due_at(self, window: int) -> float:
        """A window goes when it ends. One that had already ended when its first event was recorded (a backfill,
        a client catching up) stays open for a window's length from then, so its events are still folded rather
        than sent one by one."""
        end = (window + 1) * self.window_us / 1_000_000
        opened = self._opened[window]
        return end if opened < end else opened + self.window_us / 1_000_000

    def add(
        self, tenant_id: str, metric: str, quantity: QuantityLike, fields: Mapping[str, Any], *, now: float
    ) -> list[UsageEvent]:
        """Fold one recorded event in, at wall-clock time `now` (seconds since the epoch); raises InvalidEvent
        for one the service would refuse. Returns what must be sent now: the event itself when it goes alone, an
        aggregate it overflowed, the oldest window when too many are open."""
        rule = self._rules.get(metric, MeterRule(Folding.ALONE))
        if rule.folding in (Folding.ALONE, Folding.LEVELS) or not _FOLDABLE_FIELDS.issuperset(fields):
            return self._alone(tenant_id, metric, quantity, fields, rule)
        at = _event_time(fields.get("timestamp"))
        template = self._template(tenant_id, metric, quantity, fields, rule)
        value = _quantity(quantity, rule)
        counted = _count(fields.get("count"))
        self.recorded += 1
        window = (at - EPOCH) // _MICROSECOND // self.window_us
        return self._fold(template, window, value, counted, at=at, now=now)

    def due(self, now: float) -> list[UsageEvent]:
        """The aggregates of every window due by `now` (seconds since the epoch)."""
        ready: list[UsageEvent] = []
        for window in sorted(self._open):
            if self._due_at(window) <= now:
                ready.extend(self._close(window))
        return ready

    def drain(self) -> list[UsageEvent]:
        """Every open aggregate, now (a flush or close)."""
        ready: list[UsageEvent] = []
        for window in sorted(self._open):
            ready.extend(self._close(window))
        return ready

    # -- folding ---------------------------------------------------------------------------------------------

    def _fold(
        self, template: _Template, window: int, value: Decimal, counted: int, *, at: datetime, now: float
    ) -> list[UsageEvent]:
        ready: list[UsageEvent] = []
        aggregates = self._open.get(window)
        if aggregates is None:
            aggregates = self._open[window] = {}
            self._opened[window] = now
        aggregate = aggregates.get(template.key)
        if aggregate is not None and not _fits(aggregate, value, counted):
            # Past what one event may carry (18 integer digits, 10^9 events): this one goes, a new one starts.
            ready.append(self._event(aggregates.pop(template.key)))
            self._open_count -= 1
            aggregate = None
        if aggregate is None:
            aggregates[template.key] = _start(template, window, value, counted, at)
            self._open_count += 1
        else:
            _absorb(aggregate, template.rule.folding, value, counted, at)
        if self._open_count > self.max_open:
            ready.extend(self._close(min(self._open)))
        return ready

    def _close(self, window: int) -> list[UsageEvent]:
        aggregates = self._open.pop(window, {})
        self._opened.pop(window, None)
        self._open_count -= len(aggregates)
        return [self._event(aggregate) for aggregate in aggregates.values()]

    def _event(self, aggregate: _Aggregate) -> UsageEvent:
        self.generation += 1
        template = aggregate.template
        folding = template.rule.folding
        identity = f"{self.writer_id}\x1f{aggregate.window}\x1f{template.key!r}\x1f{self.generation}"
        start = EPOCH + timedelta(microseconds=aggregate.window * self.window_us)
        quantity = aggregate.value
        timestamp = start
        if folding is Folding.LATEST:
            assert aggregate.latest is not None
            assert aggregate.latest_value is not None
            timestamp, quantity = aggregate.latest[0], aggregate.latest_value
        elif folding in (Folding.COUNT, Folding.DISTINCT):
            quantity = decimals.ONE  # only the number of events counts (and, for distinct values, the value)
        return template.event.model_copy(
            update={
                "event_id": blake2b(identity.encode(), digest_size=16).hexdigest(),
                "quantity": quantity,
                "timestamp": timestamp,
                "count": aggregate.count if aggregate.count != 1 else None,
            }
        )

    # -- what goes as recorded ---------------------------------------------------------------------------------

    def _alone(
        self, tenant_id: str, metric: str, quantity: QuantityLike, fields: Mapping[str, Any], rule: MeterRule
    ) -> list[UsageEvent]:
        """An event sent as recorded, with its own id: the service judges it, as the buffered writer's."""
        event = recorded(tenant_id, metric, quantity, fields, default_source=self.source)
        self.recorded += 1
        if rule.folding is Folding.LEVELS and event.sample_weight is None:
            return self.levels.add((event.tenant_id, event.metric, event.resource_id), event)
        return [event]

    # -- validation ------------------------------------------------------------------------------------------

    def _template(
        self, tenant_id: str, metric: str, quantity: QuantityLike, fields: Mapping[str, Any], rule: MeterRule
    ) -> _Template:
        dimensions = fields.get("dimensions") or {}
        signature = (
            tenant_id,
            metric,
            fields.get("source"),
            fields.get("unit"),
            fields.get("user_id"),
            fields.get("resource_id"),
            tuple(sorted(dimensions.items())) if dimensions else (),
        )
        template = self._templates.get(signature)
        if template is not None:
            return template
        first = {key: value for key, value in fields.items() if key not in ("timestamp", "count")}
        event = self._checked(recorded(tenant_id, metric, quantity, first, default_source=self.source))
        assert rule.meter is not None
        distinct = unique_value(event, rule.meter.field) if rule.folding is Folding.DISTINCT else None
        key = (event.tenant_id, event.metric, event.source, signature[6], distinct)
        # What the key does not hold is not sent: the aggregate stands for events that may differ in it.
        shared = event.model_copy(
            update={
                "user_id": event.user_id if rule.meter.field == "user_id" else None,
                "resource_id": event.resource_id if rule.meter.field == "resource_id" else None,
                "unit": None,
            }
        )
        if len(self._templates) >= self.max_open:
            self._templates.clear()  # a cache: rebuilt as events come
        template = self._templates[signature] = _Template(rule, key, shared)
        return template

    def _checked(self, event: UsageEvent) -> UsageEvent:
        """The catalog's rules (a known meter, its unit and sign, the field it counts), checked before anything is
        folded: an aggregate the service refused would take every event in it along."""
        problems = check_against_catalog(event, self.catalog)
        if problems:
            raise InvalidEvent(problems)
        return event


def _quantity(value: QuantityLike, rule: MeterRule) -> Decimal:
    exact = str(value) if isinstance(value, Decimal | int) and not isinstance(value, bool) else value
    try:
        quantity = quantity_of(exact)
    except decimals.QuantityError as error:
        raise InvalidEvent([FieldError(0, "quantity", str(error))]) from None
    meter = rule.meter
    if quantity < 0 and meter is not None and not meter.allow_negative:
        message = f"must not be negative: {meter.name} does not allow it"
        raise InvalidEvent([FieldError(0, "quantity", message)])
    return quantity


_TIMESTAMP: TypeAdapter[datetime] = TypeAdapter(Timestamp)


def _event_time(value: Any) -> datetime:
    """The event time in UTC, by the event's own rule (RFC 3339 text or an aware datetime); now when not given."""
    if value is None:
        return datetime.now(UTC)
    if isinstance(value, datetime) and value.utcoffset() is not None:
        return value.astimezone(UTC)
    try:
        return _TIMESTAMP.validate_python(value)
    except ValidationError as error:
        raise InvalidEvent([FieldError(0, "timestamp", str(error.errors()[0]["msg"]))]) from None


def _count(value: Any) -> int:
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        raise InvalidEvent([FieldError(0, "count", f"must be an integer from 1 to {MAX_COUNT}")])
    return value


def _start(template: _Template, window: int, value: Decimal, counted: int, at: datetime) -> _Aggregate:
    aggregate = _Aggregate(template, window, value, counted)
    if template.rule.folding is Folding.LATEST:
        aggregate.latest, aggregate.latest_value = (at, ""), value
    return aggregate


def _fits(aggregate: _Aggregate, value: Decimal, counted: int) -> bool:
    if aggregate.count + counted > MAX_COUNT:
        return False
    if aggregate.template.rule.folding is Folding.ADD:
        try:
            decimals.check_bounds(decimals.add(aggregate.value, value))
        except decimals.QuantityError:
            return False
    return True


def _absorb(aggregate: _Aggregate, folding: Folding, value: Decimal, counted: int, at: datetime) -> None:
    aggregate.count += counted
    if folding is Folding.ADD:
        aggregate.value = decimals.add(aggregate.value, value)
    elif folding is Folding.MAX:
        aggregate.value = max(aggregate.value, value)
    elif folding is Folding.MIN:
        aggregate.value = min(aggregate.value, value)
    elif folding is Folding.LATEST:
        assert aggregate.latest is not None
        if (at, "") >= aggregate.latest:
            aggregate.latest, aggregate.latest_value = (at, ""), value
