"""What can go wrong talking to the metering service, as typed errors carrying the problem+json details.

Every error says whether trying again can help (`transient`): connection failures, 408, 429 and 5xx can; a 4xx
about the request itself cannot. Retrying is always safe when events keep their ids, which the client fixes when
an event is recorded.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from metering.core.events import FieldError


class MeteringError(Exception):
    """Base of every error the client raises."""

    transient = False


class InvalidEvent(MeteringError, ValueError):
    """An event broke a rule of the contract before anything was sent."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("invalid event: " + "; ".join(f"{e.field} {e.message}" for e in errors))


class ConnectionFailed(MeteringError):
    """No answer from the service (refused, reset, timed out). The events may or may not have arrived; sending
    the same events again is safe."""

    transient = True


class ProblemError(MeteringError):
    """The service answered with an error status; the fields are those of its problem+json body."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        problem_type: str = "about:blank",
        errors: list[FieldError] | None = None,
        retry_after: float | None = None,
        event_ids: list[str] | None = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.type = problem_type
        self.errors = errors or []
        self.retry_after = retry_after
        # A 503 of POST /events: the ids the events were given, in request order, for the retry to resend.
        self.event_ids = event_ids
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}")

    @property
    def transient(self) -> bool:  # type: ignore[override]
        return self.status in (408, 429) or self.status >= 500


class BadRequest(ProblemError):
    """400: a parameter or the body is malformed."""


class Unauthorized(ProblemError):
    """401: no key, or not one this route accepts (operator routes need the admin key)."""


class Forbidden(ProblemError):
    """403."""


class NotFound(ProblemError):
    """404: an unknown meter, tenant or route."""


class PayloadTooLarge(ProblemError):
    """413: over 1 MiB or 1000 events in one request."""


class UnsupportedMediaType(ProblemError):
    """415."""


class ValidationFailed(ProblemError):
    """422: at least one event is invalid and nothing of the request was accepted; `errors` names each one by
    its index in the request, its field and the rule."""


class RateLimited(ProblemError):
    """429: the tenant's ingest rate limit; wait `retry_after` seconds."""


class ServiceUnavailable(ProblemError):
    """503: a store or the hub is unavailable; some events may have been forwarded; retry the same events, with
    `event_ids` for those sent without an id."""


class ServerError(ProblemError):
    """Another 5xx."""


_BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationFailed,
    429: RateLimited,
    503: ServiceUnavailable,
}


def problem_from_response(response: httpx.Response) -> ProblemError:
    """The typed error for a response with an error status, from its problem+json body when it has one."""
    body: Any = None
    try:
        body = json.loads(response.content) if response.content else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    status = response.status_code
    errors = [
        FieldError(int(item.get("index", 0)), str(item.get("field", "")), str(item.get("message", "")))
        for item in body.get("errors") or []
        if isinstance(item, dict)
    ]
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else ProblemError)
    return cls(
        status,
        str(body.get("title") or response.reason_phrase or "Error"),
        str(body.get("detail") or ("" if body else response.text[:500])),
        problem_type=str(body.get("type") or "about:blank"),
        errors=errors,
        retry_after=retry_after_seconds(response.headers.get("retry-after")),
        event_ids=[str(i) for i in ids] if isinstance(ids := body.get("event_ids"), list) else None,
    )


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds to wait: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)
