"""POST /api/events: the body as events (JSON, or CloudEvents in structured or binary mode), handed to the ingest
service, and its outcome as a response."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from metering.api import cloud_binary
from metering.api.contract import MAX_BODY_BYTES, MAX_EVENTS, Accepted
from metering.api.http import OUTAGES, Response, ok, problem, unavailable
from metering.core.events import BodyError, UsageEvent, decode_json
from metering.ingest.service import IngestService, InvalidEvents, OverBurst, RateLimited
from metering.transport import PublishError

JSON_TYPES = {"application/json"}
CLOUD_EVENT = "application/cloudevents+json"
CLOUD_EVENT_BATCH = "application/cloudevents-batch+json"

log = logging.getLogger(__name__)


class Ingest:
    def __init__(self, service: IngestService) -> None:
        self.service = service

    def __call__(self, body: bytes, content_type: str | None, headers: Mapping[str, str] | None = None) -> Response:
        if len(body) > MAX_BODY_BYTES:
            return problem(413, "Payload too large", f"the body is {len(body)} bytes; at most {MAX_BODY_BYTES}")
        if headers is not None and cloud_binary.is_binary(headers):
            return self._binary(body, headers)
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
        try:
            events = self.service.prepare(items, cloud=media != "application/json")
        except InvalidEvents as error:
            return problem(422, "Invalid events", f"{error}; none was accepted", errors=error.errors)
        return self._accept(events)

    def _binary(self, body: bytes, headers: Mapping[str, str]) -> Response:
        """One CloudEvent in binary mode: its attributes in ce- headers, its data (a JSON object) as the body."""
        try:
            data = decode_json(body)
        except BodyError as error:
            return problem(400, "Bad request", f"a binary-mode CloudEvent's data must be JSON: {error}")
        if not isinstance(data, dict):
            return problem(400, "Bad request", "a binary-mode CloudEvent's data is one JSON object (quantity, ...)")
        try:
            item = cloud_binary.structured(headers, data)
        except cloud_binary.HeaderError as error:
            return problem(422, "Invalid events", f"{error}; none was accepted", errors=[error.error])
        try:
            events = self.service.prepare([item], cloud=True)
        except InvalidEvents as error:
            errors = cloud_binary.binary_errors(error.errors)
            return problem(422, "Invalid events", f"{error}; none was accepted", errors=errors)
        return self._accept(events)

    def _accept(self, events: list[UsageEvent]) -> Response:
        ids = [e.event_id or "" for e in events]
        try:
            taken = self.service.take(events)
        except OverBurst as error:
            # No wait would ever let this request through: say how to split it instead.
            return problem(
                413,
                "Payload too large",
                f"{error.count} events for tenant {error.tenant_id} in one request exceed the burst of its plan's "
                f"ingest rate ({error.burst}); send at most {error.burst} per request",
            )
        except RateLimited as error:
            return problem(
                429,
                "Too many requests",
                f"the ingest rate limit of a tenant in this request is exceeded; retry after {error.seconds} s "
                "with the same events (nothing of this request was accepted)",
                headers={"Retry-After": str(error.seconds)},
            )
        except OUTAGES:
            log.exception("ingest: tenant settings could not be read for the rate limit; answered 503")
            return _unavailable("the tenant settings could not be read (the store is unavailable)", ids)
        try:
            self.service.publish(events, taken)
        except (PublishError, *OUTAGES) as error:
            log.exception("ingest: the transport did not accept %d events; answered 503", len(events))
            return _unavailable(str(error) if isinstance(error, PublishError) else "the transport is unavailable", ids)
        return ok(Accepted(accepted=len(events), event_ids=ids), status=202)


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
