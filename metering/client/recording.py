"""Turning what an app records into a usage event whose identity is fixed from that moment.

An event gets its id and timestamp when it is recorded, not when it is sent: every retry then resends the very
same event, and the pipeline counts it once (events without an id would get a new one per request and count
again). Validation is the model's (formats, lengths, exact quantities); the service adds the catalog's rules.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from metering.client.errors import InvalidEvent
from metering.core.events import FieldError, UsageEvent, parse_event

QuantityLike = Decimal | int | float | str


def new_event(
    tenant_id: str,
    metric: str,
    quantity: QuantityLike,
    *,
    source: str,
    timestamp: datetime | str | None = None,
    event_id: str | None = None,
    unit: str | None = None,
    user_id: str | None = None,
    resource_id: str | None = None,
    dimensions: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
    count: int | None = None,
    sample_weight: int | None = None,
) -> UsageEvent:
    """A validated event with its id and timestamp fixed (now, and a random id, unless given)."""
    fields: dict[str, Any] = {
        "event_id": event_id,
        "tenant_id": tenant_id,
        "metric": metric,
        "quantity": quantity,
        "unit": unit,
        "timestamp": timestamp,
        "source": source,
        "user_id": user_id,
        "resource_id": resource_id,
        "dimensions": dict(dimensions or {}),
        "idempotency_key": idempotency_key,
        "count": count,
        "sample_weight": sample_weight,
    }
    return to_event(fields)


def recorded(
    tenant_id: str, metric: str, quantity: QuantityLike, fields: Mapping[str, Any], *, default_source: str
) -> UsageEvent:
    """`new_event` from the keyword fields a record() call took, with the client's source unless one is given."""
    options = dict(fields)
    options["source"] = options.get("source") or default_source
    return new_event(tenant_id, metric, quantity, **options)


def to_event(event: UsageEvent | Mapping[str, Any], *, default_source: str | None = None) -> UsageEvent:
    """A usage event (or its fields) validated, with an event id and a timestamp; raises InvalidEvent."""
    parsed, errors = parse_event(stamped(event, default_source=default_source))
    if parsed is None:
        raise InvalidEvent(errors)
    return parsed


def to_events(
    events: Iterable[UsageEvent | Mapping[str, Any]], *, default_source: str | None = None
) -> list[UsageEvent]:
    """Several events validated and stamped; InvalidEvent names every broken rule by the event's index."""
    valid: list[UsageEvent] = []
    errors: list[FieldError] = []
    for index, item in enumerate(events):
        parsed, problems = parse_event(stamped(item, default_source=default_source), index)
        if parsed is not None:
            valid.append(parsed)
        errors.extend(problems)
    if errors:
        raise InvalidEvent(errors)
    return valid


def stamped(
    event: UsageEvent | Mapping[str, Any], *, default_source: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """The event's fields with an event id and a timestamp (new ones if it has none), ready to validate."""
    if isinstance(event, UsageEvent):
        fields = event.model_dump(exclude_none=True)
    else:
        fields = {key: value for key, value in event.items() if value is not None}
    if fields.get("event_id") is None:
        fields["event_id"] = uuid.uuid4().hex
    if fields.get("timestamp") is None:
        fields["timestamp"] = now or datetime.now(UTC)
    if fields.get("source") is None and default_source is not None:
        fields["source"] = default_source
    quantity = fields.get("quantity")
    if isinstance(quantity, Decimal | int) and not isinstance(quantity, bool):
        # Exact in Python, so sent as text: the 15-digit limit is for JSON numbers, which parse as doubles.
        fields["quantity"] = str(quantity)
    return fields


def encode(event: UsageEvent) -> bytes:
    """The event as the service takes it: quantities as decimal strings, so no digit is lost on the way."""
    return event.model_dump_json(exclude_none=True).encode()
