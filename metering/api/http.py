"""Responses and problem details (RFC 9457) shared by the handlers."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import AzureError
from azure.eventhub.exceptions import EventHubError
from pydantic import BaseModel

from metering.core.events import TENANT_PATTERN, BodyError, FieldError, decode_json
from metering.stores import ContentionError

PROBLEM = "application/problem+json"
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


def ok(model: BaseModel | Mapping[str, Any], status: int = 200) -> Response:
    if isinstance(model, BaseModel):
        return Response(status, model.model_dump_json().encode())
    return Response(status, json.dumps(model, separators=(",", ":")).encode())


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    errors: Sequence[FieldError] = (),
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": "about:blank",  # RFC 9457: the status code and title say what kind of problem it is
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = [error.as_dict() for error in errors]
    body.update(extensions or {})  # RFC 9457 extension members, e.g. the event ids of a 503
    return Response(status, json.dumps(body).encode(), PROBLEM, dict(headers or {}))


# What a store or transport raises when it cannot be reached or does not answer in time: Azure SDK errors
# (azure-core's, Cosmos's), the Event Hubs SDK's own, and the socket errors and timeouts beneath them. The
# request may succeed later, so these are 503s with Retry-After, never 500s.
OUTAGES: tuple[type[BaseException], ...] = (AzureError, EventHubError, OSError, ContentionError)
RETRY_AFTER_SECONDS = 5


def unavailable(
    detail: str, *, event_ids: Sequence[str] | None = None, retry_after: int = RETRY_AFTER_SECONDS
) -> Response:
    """A 503 with Retry-After. `event_ids`, for a request of events, are the ids the events were given, in
    request order, so the retry can resend the very same events."""
    return problem(
        503,
        "Service unavailable",
        detail,
        headers={"Retry-After": str(retry_after)},
        extensions=None if event_ids is None else {"event_ids": list(event_ids)},
    )


def bad_request(field_name: str, message: str) -> Response:
    """A 400 for a request parameter, naming it the way validation errors name fields."""
    return problem(400, "Bad request", f"{field_name} {message}", errors=[FieldError(0, field_name, message)])


_TENANT = re.compile(TENANT_PATTERN)


def bad_tenant(tenant_id: str) -> Response | None:
    """A 400 for a tenant id in a route that no event could carry; None when it is a valid one."""
    if _TENANT.fullmatch(tenant_id):
        return None
    return bad_request("tenant_id", "must be 1 to 128 of A-Z a-z 0-9 . _ : -")


def json_object(body: bytes, shape: str) -> dict[str, Any] | Response:
    """The body as a JSON object (numbers as exact decimals), or the 400 that says why it is not `shape`."""
    try:
        decoded = decode_json(body)
    except BodyError as error:
        return problem(400, "Bad request", str(error))
    if not isinstance(decoded, dict):
        return problem(400, "Bad request", f"the body must be {shape}")
    return decoded
