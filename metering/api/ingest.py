"""POST /api/events: validate a whole request, then hand every event to the transport, or nothing at all."""

from __future__ import annotations

import logging
import math
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from metering.api.http import OUTAGES, Response, ok, problem, unavailable
from metering.core.events import (
    BodyError,
    FieldError,
    UsageEvent,
    check_against_catalog,
    cloud_event_field,
    decode_json,
    from_cloud_event,
    parse_event,
)
from metering.core.meters import MeterCatalog
from metering.quotas.ratelimit import RateLimit, RateLimiter
from metering.transport import Message, Publisher, PublishError, pack

MAX_BODY_BYTES = 1024 * 1024
MAX_EVENTS = 1000

JSON_TYPES = {"application/json"}
CLOUD_EVENT = "application/cloudevents+json"
CLOUD_EVENT_BATCH = "application/cloudevents-batch+json"

_EVENTS = TypeAdapter(list[UsageEvent])

log = logging.getLogger(__name__)


class Accepted(BaseModel):
    accepted: int
    event_ids: list[str]


class Ingest:
    def __init__(
        self,
        catalog: MeterCatalog,
        publisher: Publisher,
        *,
        max_message_bytes: int,
        max_age: timedelta,
        max_future: timedelta,
        clock: Callable[[], datetime],
        rate_of: Callable[[str], RateLimit | None] | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.rate_of = rate_of
        self.limiter = limiter or RateLimiter()
        self.catalog = catalog
        self.publisher = publisher
        self.max_message_bytes = max_message_bytes
        self.max_age = max_age
        self.max_future = max_future
        self.clock = clock

    def __call__(self, body: bytes, content_type: str | None) -> Response:
        if len(body) > MAX_BODY_BYTES:
            return problem(413, "Payload too large", f"the body is {len(body)} bytes; at most {MAX_BODY_BYTES}")
        media = (content_type or "").split(";")[0].strip().lower()
        if media not in JSON_TYPES | {CLOUD_EVENT, CLOUD_EVENT_BATCH}:
            return problem(
                415,
                "Unsupported media type",
                f"Content-Type {media or '(none)'} is not accepted: send application/json, "
                f"{CLOUD_EVENT} or {CLOUD_EVENT_BATCH}",
            )
        try:
            decoded = decode_json(body)
        except BodyError as error:
            return problem(400, "Bad request", str(error))
        items, shape_error = _items(decoded, media)
        if shape_error is not None:
            return shape_error
        events, errors = self.validate(items, cloud=media != "application/json")
        if errors:
            return problem(
                422,
                "Invalid events",
                f"{len({e.index for e in errors})} of {len(items)} events are invalid; none was accepted",
                errors=errors,
            )
        # Ids are fixed before anything can fail, so that every 503 below gives them back: a retry of events
        # sent without ids resends them with these, and is counted once.
        events = [e if e.event_id is not None else e.model_copy(update={"event_id": uuid.uuid4().hex}) for e in events]
        ids = [e.event_id or "" for e in events]
        try:
            taken, limited = self.rate_limited(events)
        except OUTAGES:
            log.exception("ingest: tenant settings could not be read for the rate limit; answered 503")
            return _unavailable("the tenant settings could not be read (the store is unavailable)", ids)
        if limited is not None:
            return limited
        try:
            self.publisher.publish(self.messages(events))
        except (PublishError, *OUTAGES) as error:
            self.limiter.give_back(taken)
            log.exception("ingest: the transport did not accept %d events; answered 503", len(events))
            return _unavailable(str(error) if isinstance(error, PublishError) else "the transport is unavailable", ids)
        return ok(Accepted(accepted=len(events), event_ids=ids), status=202)

    def rate_limited(self, events: list[UsageEvent]) -> tuple[dict[str, tuple[int, RateLimit]], Response | None]:
        """What the request takes from its tenants' allowances, or the 429 (or 413) that refuses it: then
        nothing is taken from any tenant and nothing is forwarded. The buckets live in this instance's memory."""
        if self.rate_of is None:
            return {}, None
        counts = Counter(event.tenant_id for event in events)
        wanted = {}
        for tenant, count in counts.items():
            rate = self.rate_of(tenant)
            if rate is not None:
                wanted[tenant] = (count, rate)
        if not wanted:
            return {}, None
        for tenant, (count, rate) in wanted.items():
            if count > rate.burst:
                # No wait would ever let this request through: say how to split it instead.
                return {}, problem(
                    413,
                    "Payload too large",
                    f"{count} events for tenant {tenant} in one request exceed the burst of its plan's ingest "
                    f"rate ({rate.burst}); send at most {rate.burst} per request",
                )
        wait = self.limiter.take_all(wanted)
        if wait is None:
            return wanted, None
        seconds = max(1, math.ceil(wait))
        return {}, problem(
            429,
            "Too many requests",
            f"the ingest rate limit of a tenant in this request is exceeded; retry after {seconds} s "
            "with the same events (nothing of this request was accepted)",
            headers={"Retry-After": str(seconds)},
        )

    def messages(self, events: list[UsageEvent]) -> list[Message]:
        return pack(events, self.max_message_bytes)

    def validate(self, items: list[Any], *, cloud: bool) -> tuple[list[UsageEvent], list[FieldError]]:
        """Every event against the model and the catalog. The fast path validates the list in one call; only a
        request with errors is walked event by event, to report each one with its index."""
        errors: list[FieldError] = []
        if cloud:
            mapped = []
            for index, item in enumerate(items):
                fields, problems = from_cloud_event(item, index)
                mapped.append(fields)
                errors.extend(problems)
            items = mapped
        now = self.clock()
        events: list[UsageEvent] = []
        try:
            if not errors:
                events = _EVENTS.validate_python(items)
        except ValidationError:
            events = []
        if not events:
            for index, item in enumerate(items):
                if item is None:
                    continue
                event, problems = parse_event(item, index)
                errors.extend(problems)
                metric = item.get("metric") if isinstance(item, dict) else None
                if event is None and isinstance(metric, str) and self.catalog.get(metric) is None:
                    errors.append(FieldError(index, "metric", f"is not a meter of the catalog ({metric!r})"))
                if event is not None:
                    events.append(event)
                    errors.extend(self._catalog_errors(event, index, now))
        else:
            for index, event in enumerate(events):
                errors.extend(self._catalog_errors(event, index, now))
        if cloud:
            errors = [FieldError(e.index, cloud_event_field(e.field), e.message) for e in errors]
        errors.sort(key=lambda e: e.index)
        return events, errors

    def _catalog_errors(self, event: UsageEvent, index: int, now: datetime) -> list[FieldError]:
        return check_against_catalog(
            event, self.catalog, index=index, now=now, max_age=self.max_age, max_future=self.max_future
        )


def _unavailable(reason: str, ids: list[str]) -> Response:
    return unavailable(
        f"{reason}. Retry the same request, with the event_ids of this response for events sent without one: "
        "some events may already be forwarded, and none is counted twice.",
        event_ids=ids,
    )


def _items(decoded: Any, media: str) -> tuple[list[Any], Response | None]:
    if media == CLOUD_EVENT:
        if not isinstance(decoded, dict):
            return [], problem(400, "Bad request", f"a {CLOUD_EVENT} body is one JSON object")
        return [decoded], None
    if media == CLOUD_EVENT_BATCH and not isinstance(decoded, list):
        return [], problem(400, "Bad request", f"a {CLOUD_EVENT_BATCH} body is a JSON array")
    if isinstance(decoded, dict):
        return [decoded], None
    if not isinstance(decoded, list):
        return [], problem(400, "Bad request", "the body must be an event object or an array of events")
    if not decoded:
        return [], problem(400, "Bad request", "the array holds no events: send 1 to 1000")
    if len(decoded) > MAX_EVENTS:
        return [], problem(413, "Payload too large", f"{len(decoded)} events in one request; at most {MAX_EVENTS}")
    return decoded, None
