"""The usage event: its fields, the rules of the HTTP contract, and lossless JSON decoding.

Validation has two layers. The model holds the rules that need nothing but the event itself (formats, lengths,
exact quantities). `check_against_catalog` adds the rules that need the meter catalog and the clock (a known
metric, its unit and sign, a timestamp inside the accepted window): the one place those rules live.
`validate_events` is the one path a list of decoded events takes through both, for ingest and the Event Hub
producer alike; the aggregator re-checks the catalog's rules with `check_against_catalog` (an event that waited
in the hub was checked against the catalog of then). Errors name the field and the rule.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from metering.core import decimals
from metering.core.clock import format_timestamp
from metering.core.meters import DIMENSION_PATTERN, Aggregation, MeterCatalog

TENANT_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
# An event counted in bulk stands for at most this many events; a sampled one for at most this many (one kept in k).
MAX_COUNT = 10**9
MAX_SAMPLE_WEIGHT = 10**6
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")


def _printable(value: str) -> str:
    if not value.isprintable():
        raise PydanticCustomError("printable", "must contain only printable characters (no control characters)")
    return value


def quantity_of(value: Any) -> Decimal:
    """An exact quantity, or QuantityError naming the rule: a JSON number with more digits than a double keeps is
    refused, not rounded."""
    if isinstance(value, bool):
        raise decimals.QuantityError("must be a decimal number or a decimal string")
    if isinstance(value, str):
        quantity = decimals.from_str(value)
    elif isinstance(value, int | Decimal | float):
        # Numbers: JSON numbers decoded losslessly (int or Decimal), or floats from Python callers.
        quantity = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        if not quantity.is_finite():
            raise decimals.QuantityError("must be a finite number")
        if decimals.significant_digits(quantity) > decimals.MAX_JSON_NUMBER_DIGITS:
            raise decimals.QuantityError(
                f"a JSON number may have at most {decimals.MAX_JSON_NUMBER_DIGITS} significant digits "
                '(a double cannot hold more): send the quantity as a string, e.g. "1234567.890123456789"'
            )
    else:
        raise decimals.QuantityError("must be a decimal number or a decimal string")
    return decimals.check_bounds(quantity)


def _quantity(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal | float):
        raise PydanticCustomError("quantity_type", "must be a decimal number or a decimal string")
    try:
        return quantity_of(value)
    except decimals.QuantityError as error:
        raise PydanticCustomError("quantity", str(error)) from None


def _timestamp(value: Any) -> datetime:
    if isinstance(value, str):
        if not _RFC3339.fullmatch(value):
            raise PydanticCustomError(
                "rfc3339", "must be an RFC 3339 date-time with an offset, e.g. 2026-11-24T09:30:00Z"
            )
        try:
            # fromisoformat keeps microseconds: finer fractions are truncated, documented in the README.
            parsed = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
        except ValueError as error:
            raise PydanticCustomError("rfc3339", "is not a valid date-time: {reason}", {"reason": str(error)}) from None
    elif isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise PydanticCustomError("rfc3339", "must carry a UTC offset")
        parsed = value
    else:
        raise PydanticCustomError("rfc3339", "must be an RFC 3339 date-time string")
    return parsed.astimezone(UTC)


def _whole(maximum: int) -> Any:
    """An integer from 1 to `maximum`, as a JSON integer: never a boolean, a fraction or text, which a producer
    would not send by mistake for a count."""

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PydanticCustomError("whole", "must be a JSON integer")
        if not 1 <= value <= maximum:
            raise PydanticCustomError("whole_range", "must be from 1 to {maximum}", {"maximum": maximum})
        return value

    return check


Quantity = Annotated[Decimal, BeforeValidator(_quantity), PlainSerializer(decimals.to_str, return_type=str)]
Timestamp = Annotated[datetime, BeforeValidator(_timestamp), PlainSerializer(format_timestamp, return_type=str)]
TenantId = Annotated[str, StringConstraints(pattern=TENANT_PATTERN)]
Token128 = Annotated[str, StringConstraints(min_length=1, max_length=128), AfterValidator(_printable)]
Text128 = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Text256 = Annotated[str, StringConstraints(max_length=256)]
DimensionName = Annotated[str, StringConstraints(pattern=DIMENSION_PATTERN)]
EventCount = Annotated[int, Field(ge=1, le=MAX_COUNT), BeforeValidator(_whole(MAX_COUNT))]
SampleWeight = Annotated[int, Field(ge=1, le=MAX_SAMPLE_WEIGHT), BeforeValidator(_whole(MAX_SAMPLE_WEIGHT))]


class UsageEvent(BaseModel):
    """One usage record, as a client or an Event Hub producer sends it."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="UsageEvent")

    event_id: Token128 | None = Field(None, description="Unique per tenant; assigned by the server when missing")
    tenant_id: TenantId
    metric: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(description="A meter of the catalog")
    quantity: Quantity = Field(
        description="Decimal; as a JSON number at most 15 significant digits, as a string any exact value "
        "with at most 18 digits before the point and 12 after"
    )
    unit: Annotated[str, StringConstraints(min_length=1, max_length=32)] | None = None
    timestamp: Timestamp
    source: Text128
    user_id: Text256 | None = None
    resource_id: Text256 | None = None
    dimensions: Annotated[dict[DimensionName, Text256], Field(max_length=16)] = Field(default_factory=dict)
    idempotency_key: Token128 | None = None
    count: EventCount | None = Field(
        None,
        description="How many events this one stands for (default 1): a count meter adds it to its total, every "
        "meter to its event_count",
    )
    sample_weight: SampleWeight | None = Field(
        None,
        description="Only for meters with sampling = true: the event was kept as one in k and stands for k like "
        "it (figures become estimates)",
    )

    @property
    def counted(self) -> int:
        """What the event adds to its meter's event_count: its `count`, 1 when it has none."""
        return 1 if self.count is None else self.count

    @property
    def weight(self) -> int:
        """Its sample weight, 1 when it was not sampled."""
        return 1 if self.sample_weight is None else self.sample_weight

    @property
    def dedupe_key(self) -> str:
        """The key the pipeline deduplicates on (with the tenant): the idempotency key, else the event id."""
        key = dedupe_key_of(self)
        if key is None:
            raise ValueError("an event needs an event_id or an idempotency_key before it can be applied")
        return key

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True, exclude_defaults=False)


def dedupe_key_of(event: UsageEvent) -> str | None:
    """`dedupe_key`, or None for an event that has neither an idempotency key nor an event id yet. The prefixes
    keep the two kinds apart: an event id never collides with an idempotency key of the same text."""
    if event.idempotency_key is not None:
        return "k:" + event.idempotency_key
    if event.event_id is not None:
        return "e:" + event.event_id
    return None


@dataclass(frozen=True, slots=True)
class FieldError:
    """One broken rule of one event of a request."""

    index: int
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "message": self.message}


class BodyError(ValueError):
    """The body as a whole is unusable (not JSON, not an object or array): a 400, not a 422."""


def decode_json(body: bytes | str) -> Any:
    """Decode JSON keeping every digit: fractions become Decimal (never float), integers stay int."""
    try:
        return json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise BodyError(f"body is not valid JSON: {error}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


_EVENT = TypeAdapter(UsageEvent)


def _field_path(loc: Sequence[int | str]) -> str:
    parts = [str(part) for part in loc if part != "[key]"]
    return ".".join(parts) if parts else "(event)"


def _message(error: Any) -> str:
    text = str(error["msg"])
    if error["type"] == "extra_forbidden":
        return "is not a field of a usage event"
    if error["type"] == "missing":
        return "is required"
    return text


def parse_event(data: Any, index: int = 0) -> tuple[UsageEvent | None, list[FieldError]]:
    """Validate one decoded event against the model rules; returns the event or its errors."""
    if not isinstance(data, dict):
        return None, [FieldError(index, "(event)", "must be a JSON object")]
    try:
        return _EVENT.validate_python(data), []
    except ValidationError as error:
        return None, [FieldError(index, _field_path(e["loc"]), _message(e)) for e in error.errors()]


def check_against_catalog(
    event: UsageEvent,
    catalog: MeterCatalog,
    *,
    index: int = 0,
    now: datetime | None = None,
    max_age: timedelta | None = None,
    max_future: timedelta | None = None,
) -> list[FieldError]:
    """The rules that need the catalog (and, at ingest, the clock). The aggregator passes no clock: an event
    that waited in the hub is not too old, it is late, and periods decide what happens to it."""
    meter = catalog.meters.get(event.metric)
    if meter is None:
        return [unknown_metric(catalog, index)]
    errors: list[FieldError] = []
    if event.unit is not None and event.unit != meter.unit:
        errors.append(FieldError(index, "unit", f"must be {meter.unit!r} for {meter.name} (or left out)"))
    if event.quantity < 0 and not meter.allow_negative:
        errors.append(FieldError(index, "quantity", f"must not be negative: {meter.name} does not allow it"))
    if event.sample_weight is not None and not meter.is_sampled:
        errors.append(
            FieldError(index, "sample_weight", f"only applies to sampled meters: {meter.name} is not sampled")
        )
    if meter.aggregation is Aggregation.TIME_WEIGHTED and event.counted != 1:
        errors.append(FieldError(index, "count", f"must be 1 or left out: {meter.name} records levels, not counts"))
    if meter.aggregation is Aggregation.UNIQUE_COUNT and unique_value(event, meter.field) is None:
        errors.append(
            FieldError(index, meter.field or "field", f"is required: {meter.name} counts its distinct values")
        )
    if now is not None:
        if max_future is not None and event.timestamp > now + max_future:
            minutes = int(max_future.total_seconds() // 60)
            errors.append(FieldError(index, "timestamp", f"must not be more than {minutes} minutes in the future"))
        if max_age is not None and event.timestamp < now - max_age:
            errors.append(FieldError(index, "timestamp", f"must not be more than {max_age.days} days in the past"))
    return errors


def unknown_metric(catalog: MeterCatalog, index: int) -> FieldError:
    return FieldError(index, "metric", f"is not a meter of the catalog (known: {', '.join(catalog.names)})")


def unique_value(event: UsageEvent, field: str | None) -> str | None:
    """The value a unique_count meter counts for this event, from the field its meter names (an empty string
    is no value: it would count as one more distinct user)."""
    value = None
    if field == "user_id":
        value = event.user_id
    elif field == "resource_id":
        value = event.resource_id
    elif field is not None and field.startswith("dimensions."):
        value = event.dimensions.get(field.removeprefix("dimensions."))
    return value or None


_EVENTS = TypeAdapter(list[UsageEvent])


def validate_events(
    items: Sequence[Any],
    catalog: MeterCatalog,
    *,
    now: datetime | None = None,
    max_age: timedelta | None = None,
    max_future: timedelta | None = None,
    cloud: bool = False,
) -> tuple[list[UsageEvent], list[FieldError]]:
    """Validate decoded events (structured-mode CloudEvents with `cloud`) against the model and the catalog,
    and, given `now`, the timestamp window. Returns the valid events and every error, in index order; whether
    to use the valid ones when others fail is the caller's call (ingest and the producer use none).

    The fast path validates the whole list in one pydantic call; only a list with errors is walked item by
    item, to name each error with the index of its event."""
    errors: list[FieldError] = []
    # A CloudEvent's own problems are named as it has them already (`specversion`, `data.<field>`).
    mapping_errors: list[FieldError] = []
    unmapped: set[int] = set()
    if cloud:
        mapped: list[Any] = []
        for index, item in enumerate(items):
            fields, problems = from_cloud_event(item, index)
            if fields is None:
                unmapped.add(index)
            mapped.append(fields)
            mapping_errors.extend(problems)
        items = mapped
    parsed: list[UsageEvent] | None = None
    if not mapping_errors:
        try:
            parsed = _EVENTS.validate_python(items)
        except ValidationError:
            parsed = None
    events: list[UsageEvent] = []
    candidates = enumerate(parsed) if parsed is not None else _parse_each(items, unmapped, catalog, errors)
    for index, event in candidates:
        problems = check_against_catalog(event, catalog, index=index, now=now, max_age=max_age, max_future=max_future)
        if problems:
            errors.extend(problems)
        else:
            events.append(event)
    if cloud:
        errors = [FieldError(e.index, cloud_event_field(e.field), e.message) for e in errors] + mapping_errors
    errors.sort(key=lambda e: e.index)
    return events, errors


def _parse_each(
    items: Sequence[Any], skip: set[int], catalog: MeterCatalog, errors: list[FieldError]
) -> Iterator[tuple[int, UsageEvent]]:
    """Each item that passes the model, with its index; the others' errors go to `errors`. An item the model
    refuses whose metric is a name but no meter is told so too, so one request shows every problem at once."""
    for index, item in enumerate(items):
        if index in skip:
            continue
        event, problems = parse_event(item, index)
        errors.extend(problems)
        if event is not None:
            yield index, event
            continue
        metric = item.get("metric") if isinstance(item, dict) else None
        if isinstance(metric, str) and metric not in catalog.meters and not any(p.field == "metric" for p in problems):
            errors.append(unknown_metric(catalog, index))


# CloudEvents 1.0 attributes and the usage event fields they carry; `data` holds the rest.
CLOUD_EVENT_FIELDS = {
    "id": "event_id",
    "source": "source",
    "subject": "tenant_id",
    "type": "metric",
    "time": "timestamp",
}
_FIELD_IN_CLOUD_EVENT = {field: attribute for attribute, field in CLOUD_EVENT_FIELDS.items()}
_CLOUD_EVENT_DATA = frozenset(
    {"quantity", "unit", "user_id", "resource_id", "dimensions", "idempotency_key", "count", "sample_weight"}
)


def from_cloud_event(item: Any, index: int) -> tuple[dict[str, Any] | None, list[FieldError]]:
    """A structured-mode CloudEvent as the fields of a usage event. Extension attributes are ignored, as the
    specification allows; a field the usage event does not know inside `data` is an error."""
    if not isinstance(item, dict):
        return None, [FieldError(index, "(event)", "must be a CloudEvent JSON object")]
    errors: list[FieldError] = []
    if item.get("specversion") != "1.0":
        errors.append(FieldError(index, "specversion", 'must be "1.0"'))
    content_type = item.get("datacontenttype")
    if content_type is not None and str(content_type).split(";")[0].strip() != "application/json":
        errors.append(FieldError(index, "datacontenttype", "must be application/json when given"))
    data = item.get("data")
    if not isinstance(data, dict):
        errors.append(FieldError(index, "data", "must be a JSON object with quantity and the other usage fields"))
        data = {}
    fields = {field: item[attribute] for attribute, field in CLOUD_EVENT_FIELDS.items() if attribute in item}
    for key, value in data.items():
        if key in _CLOUD_EVENT_DATA:
            fields[key] = value
        else:
            errors.append(FieldError(index, f"data.{key}", "is not a field of a usage event"))
    return (None if errors else fields), errors


def cloud_event_field(field: str) -> str:
    """Where a usage event field sits in a CloudEvent, to name it in errors the way the client sent it."""
    head, _, rest = field.partition(".")
    if head in _FIELD_IN_CLOUD_EVENT:
        return _FIELD_IN_CLOUD_EVENT[head] + (f".{rest}" if rest else "")
    return f"data.{field}" if field != "(event)" else field
