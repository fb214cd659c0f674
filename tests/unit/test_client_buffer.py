"""The writers' bookkeeping (what is resent, dropped or kept after each kind of failure), the problem details of
error responses, and the writer's waiting honouring Retry-After.

The service is stood in for by httpx's MockTransport only where the dev host cannot produce the answer (a 503 or
429 with Retry-After on demand); everything against the real service is in tests/e2e."""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime

import httpx
import pytest

from metering.client import (
    Backoff,
    BadRequest,
    BufferedUsageWriter,
    ConnectionFailed,
    MeteringClient,
    NotFound,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
    new_event,
)
from metering.client.buffer import Buffer, Outcome
from metering.client.errors import problem_from_response, retry_after_seconds
from metering.client.http import request_slices
from metering.client.recording import encode
from metering.core.events import FieldError


def buffer_of(count: int, batch_size: int = 10, interval: float = 5.0) -> Buffer:
    buffer = Buffer(batch_size, interval, 100, Backoff(initial=1.0, maximum=8.0))
    for i in range(count):
        event = new_event("acme", "api.requests", i, source="unit", event_id=f"e{i}")
        buffer.add(event, encode(event), now=100.0 + i)
    return buffer


def ids(entries) -> list[str]:
    return [entry.event.event_id for entry in entries]


def test_backoff_grows_with_jitter_up_to_the_maximum_and_honours_retry_after():
    backoff = Backoff(initial=1.0, maximum=8.0)
    for attempt, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (10, 8.0)]:
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1
    assert backoff.delay(0, retry_after=30) == 30


def test_a_batch_is_the_oldest_events_within_the_count_and_size_limits():
    buffer = buffer_of(25)
    assert ids(buffer.take()) == [f"e{i}" for i in range(10)]
    assert len(buffer.entries) == 25  # taken events stay buffered until resolved
    big = Buffer(1000, 5.0, 1000)
    event = new_event("acme", "api.requests", 1, source="x" * 128, dimensions={f"d{i}": "v" * 256 for i in range(16)})
    for _ in range(400):
        big.add(event, encode(event), 0.0)
    taken = big.take()
    assert sum(len(e.body) + 1 for e in taken) + 1 <= 1024 * 1024 < sum(len(e.body) + 1 for e in big.entries) + 1
    assert request_slices([e.body for e in big.entries]) == [slice(0, len(taken)), slice(len(taken), 400)]


def test_when_a_batch_is_due():
    buffer = buffer_of(3, batch_size=10, interval=5.0)
    assert buffer.due_in(now=101.0) == 4.0  # the oldest (recorded at 100) has waited 1 s of 5
    target = buffer.request_flush()
    assert buffer.due_in(now=101.0) == 0.0
    assert not buffer.flushed(target)
    buffer.accepted(buffer.take())
    assert buffer.flushed(target)
    assert buffer.due_in(now=101.0) is None
    assert buffer_of(10, batch_size=10).due_in(now=100.0) == 0.0


def test_a_transient_failure_keeps_every_event_in_order_and_backs_off():
    buffer = buffer_of(12)
    batch = buffer.take()
    outcome, rejected = buffer.failed(batch, ServiceUnavailable(503, "Transport unavailable", "", retry_after=20), 50)
    assert (outcome, rejected) == (Outcome.RETRY, [])
    assert ids(buffer.entries) == [f"e{i}" for i in range(12)]
    assert buffer.due_in(now=60.0) == 10.0  # Retry-After wins over a shorter backoff
    outcome, _ = buffer.failed(buffer.take(), ConnectionFailed("refused"), 70)
    assert outcome is Outcome.RETRY
    assert 1.0 <= buffer.due_in(now=70.0) <= 2.0  # the second retry waits up to twice the first
    assert ids(buffer.take()) == [f"e{i}" for i in range(10)]


def test_a_422_drops_the_events_it_names_and_the_rest_go_again_at_once():
    buffer = buffer_of(12)
    batch = buffer.take()
    error = ValidationFailed(
        422, "Invalid events", "", errors=[FieldError(1, "metric", "is not a meter"), FieldError(4, "unit", "bad")]
    )
    outcome, rejected = buffer.failed(batch, error, 50)
    assert outcome is Outcome.REJECT_SOME
    assert [(r.event.event_id, r.reasons) for r in rejected] == [
        ("e1", ("metric: is not a meter",)),
        ("e4", ("unit: bad",)),
    ]
    assert ids(buffer.entries) == [f"e{i}" for i in range(12) if i not in (1, 4)]
    assert buffer.due_in(now=50.0) == 0.0
    assert (buffer.stats().rejected, buffer.stats().buffered) == (2, 10)


def test_a_refused_request_drops_its_events_but_a_wrong_key_keeps_them():
    buffer = buffer_of(3)
    outcome, rejected = buffer.failed(buffer.take(), BadRequest(400, "Bad request", "body is not valid JSON"), 0)
    assert outcome is Outcome.REJECT_ALL
    assert [r.reasons for r in rejected] == [("body is not valid JSON",)] * 3
    assert not buffer.entries
    buffer = buffer_of(3)
    for error in (Unauthorized(401, "Unauthorized", ""), NotFound(404, "Not found", "")):
        outcome, rejected = buffer.failed(buffer.take(), error, 0)
        assert (outcome, rejected) == (Outcome.HOLD, [])
        assert ids(buffer.entries) == ["e0", "e1", "e2"]
        assert buffer.due_in(now=0.0) == 8.0


def test_problem_details_become_typed_errors():
    body = {
        "type": "about:blank",
        "title": "Invalid events",
        "status": 422,
        "detail": "1 of 2 events are invalid",
        "errors": [{"index": 1, "field": "quantity", "message": "must not be negative"}],
    }
    error = problem_from_response(httpx.Response(422, json=body))
    assert isinstance(error, ValidationFailed)
    assert (error.title, error.detail, error.errors) == (
        "Invalid events",
        "1 of 2 events are invalid",
        [FieldError(1, "quantity", "must not be negative")],
    )
    unavailable = problem_from_response(
        httpx.Response(503, headers={"Retry-After": "7"}, json={"title": "x", "event_ids": ["a", "b"]})
    )
    assert isinstance(unavailable, ServiceUnavailable)
    assert (unavailable.retry_after, unavailable.transient, unavailable.event_ids) == (7.0, True, ["a", "b"])
    gateway = problem_from_response(httpx.Response(502, text="<html>bad gateway</html>"))
    assert isinstance(gateway, ServerError)
    assert gateway.transient
    assert "bad gateway" in gateway.detail


def test_retry_after_as_seconds_or_an_http_date():
    now = datetime(2026, 11, 24, 9, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("Tue, 24 Nov 2026 09:00:30 GMT", now=now) == 30.0
    assert retry_after_seconds("Tue, 24 Nov 2026 08:00:00 GMT", now=now) == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_the_writer_waits_as_long_as_retry_after_says_and_resends_the_same_events():
    attempts: list[tuple[float, list[str]]] = []
    answers = [
        httpx.Response(503, headers={"Retry-After": "1"}, json={"title": "Transport unavailable", "status": 503}),
        httpx.Response(429, headers={"Retry-After": "1"}, json={"title": "Too many requests", "status": 429}),
    ]

    def service(request: httpx.Request) -> httpx.Response:
        sent = [event["event_id"] for event in json.loads(request.content)]
        attempts.append((time.monotonic(), sent))
        if answers:
            return answers.pop(0)
        return httpx.Response(202, json={"accepted": len(sent), "event_ids": sent})

    client = MeteringClient("http://metering.test/api", "k", transport=httpx.MockTransport(service))
    writer = BufferedUsageWriter(client, batch_size=10, flush_interval=60, backoff=Backoff(initial=0.01, maximum=0.02))
    recorded = [writer.record("acme", "api.requests", i).event_id for i in range(5)]
    assert writer.flush(timeout=10)
    assert [sent for _, sent in attempts] == [recorded] * 3
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(attempts)]
    assert all(gap >= 1.0 for gap in gaps)
    stats = writer.stats
    assert (stats.sent, stats.retries, stats.requests) == (5, 2, 3)
    writer.close()


@pytest.mark.parametrize("batch_size", [0, 1001])
def test_batch_size_is_bounded_by_the_request_limit(batch_size):
    client = MeteringClient("http://metering.test/api", "k")
    with pytest.raises(ValueError, match="batch_size"):
        BufferedUsageWriter(client, batch_size=batch_size)
