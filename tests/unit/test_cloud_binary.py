"""POST /api/events with one CloudEvent in binary mode, as the official `cloudevents` SDK writes it: attributes in
percent-encoded `ce-` headers, data as the JSON body; errors named by header or body field."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from cloudevents.core.bindings.http import to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from metering.core.events import UsageEvent
from metering.stores.memory import MemoryStore
from metering.transport import Message
from tests.support import wired

NOW = datetime(2026, 11, 24, 9, tzinfo=UTC)


class Collected:
    """The transport replaced at its port: it keeps what would be published."""

    def __init__(self) -> None:
        self.events: list[UsageEvent] = []

    def publish(self, messages: Sequence[Message]) -> None:
        for message in messages:
            self.events.extend(UsageEvent.model_validate(item) for item in json.loads(message.body))

    def close(self) -> None:
        pass


@pytest.fixture
def hub() -> Collected:
    return Collected()


@pytest.fixture
def ingest(hub):
    return wired(MemoryStore(), publisher=hub, clock=lambda: NOW).http.ingest


def binary(data: Any, **attributes: Any) -> tuple[dict[str, str], bytes]:
    base = {"id": "ce-1", "source": "billing/demo", "type": "api.requests", "subject": "acme", "time": NOW}
    message = to_binary(CloudEvent(attributes={**base, **attributes}, data=data), JSONFormat())
    return message.headers, message.body


def post(ingest, headers: dict[str, str], body: bytes):
    # Header names as the Functions host hands them over: lower case.
    lowered = {name.lower(): value for name, value in headers.items()}
    return ingest(body, lowered.get("content-type"), lowered)


def test_a_binary_mode_event_is_accepted_with_its_attributes_from_the_headers(ingest, hub):
    headers, body = binary({"quantity": "2.5", "dimensions": {"region": "eu"}, "count": 3})
    response = post(ingest, headers, body)
    assert (response.status, response.json()) == (202, {"accepted": 1, "event_ids": ["ce-1"]})
    [event] = hub.events
    assert (event.event_id, event.tenant_id, event.metric, event.source) == (
        "ce-1",
        "acme",
        "api.requests",
        "billing/demo",
    )
    assert (event.timestamp, str(event.quantity), event.dimensions, event.count) == (NOW, "2.5", {"region": "eu"}, 3)


def test_header_values_are_percent_decoded(ingest, hub):
    # The SDK percent-encodes what a header cannot carry as it is: the space, the quote, the percent, non-ASCII.
    headers, body = binary({"quantity": 1}, id='order 42 "größe" 100%', source="gateway/zürich")
    assert headers["ce-id"] == "order%2042%20%22gr%C3%B6%C3%9Fe%22%20100%25"
    assert post(ingest, headers, body).status == 202
    assert (hub.events[0].event_id, hub.events[0].source) == ('order 42 "größe" 100%', "gateway/zürich")


def test_binary_mode_is_recognised_by_its_header_whatever_the_content_type(ingest, hub):
    headers, body = binary({"quantity": 1})
    headers["content-type"] = "text/plain"
    assert post(ingest, headers, body).status == 202
    assert len(hub.events) == 1


def test_errors_name_the_header_or_the_body_field(ingest, hub):
    headers, body = binary({"quantity": "-1", "colour": "red"}, type="api.requests", subject="bad tenant!")
    response = post(ingest, headers, body)
    assert response.status == 422
    assert sorted(e["field"] for e in response.json()["errors"]) == ["colour"]
    headers, body = binary({"quantity": "-1"}, subject="bad tenant!", type="no.such.meter")
    fields = sorted(e["field"] for e in post(ingest, headers, body).json()["errors"])
    assert fields == ["ce-subject", "ce-type"]
    headers, body = binary({"quantity": "-1"})
    assert [e["field"] for e in post(ingest, headers, body).json()["errors"]] == ["quantity"]
    assert hub.events == []


def test_a_header_that_is_not_percent_encoded_utf8_is_named(ingest, hub):
    headers, body = binary({"quantity": 1})
    headers["ce-id"] = "%ff%fe"
    response = post(ingest, headers, body)
    assert response.status == 422
    assert [e["field"] for e in response.json()["errors"]] == ["ce-id"]


@pytest.mark.parametrize(("body", "status"), [(b"not json", 400), (b"[1, 2]", 400), (b'"text"', 400)])
def test_a_body_that_is_not_one_json_object_is_a_400(ingest, hub, body, status):
    headers, _ = binary({"quantity": 1})
    assert post(ingest, headers, body).status == status
