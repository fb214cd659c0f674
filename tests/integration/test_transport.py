"""Packing events into messages, the Event Hubs publisher at its SDK boundary, and the local queue on Azurite."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from azure.eventhub.exceptions import EventHubError

from metering.core.events import UsageEvent
from metering.core.meters import load_catalog
from metering.quotas.plans import parse_plans
from metering.stores.memory import MemoryStore
from metering.transport import EVENT_HUB_MESSAGE_BYTES, QUEUE_MESSAGE_BYTES, Message, PublishError, pack
from metering.transport.eventhub import EventHubPublisher
from metering.transport.queue import QueuePublisher, queue_client
from tests.support import wired

NOW = datetime(2026, 11, 24, 9, tzinfo=UTC)


def events(tenant: str, count: int, source: str = "gateway") -> list[UsageEvent]:
    return [
        UsageEvent(
            event_id=f"{tenant}-{i}",
            tenant_id=tenant,
            metric="api.requests",
            quantity="1",
            timestamp=NOW,
            source=source,
        )
        for i in range(count)
    ]


def test_each_tenant_is_packed_into_as_few_messages_as_fit():
    messages = pack(events("a", 700) + events("b", 3), EVENT_HUB_MESSAGE_BYTES)
    by_tenant = {}
    for message in messages:
        assert len(message.body) <= EVENT_HUB_MESSAGE_BYTES
        decoded = json.loads(message.body)
        assert {e["tenant_id"] for e in decoded} == {message.partition_key}
        assert message.count == len(decoded)
        by_tenant.setdefault(message.partition_key, []).extend(e["event_id"] for e in decoded)
    assert by_tenant == {"a": [f"a-{i}" for i in range(700)], "b": ["b-0", "b-1", "b-2"]}
    size = len(pack(events("a", 1), EVENT_HUB_MESSAGE_BYTES)[0].body)
    # As few as fit: one message fewer would not hold them.
    assert len([m for m in messages if m.partition_key == "a"]) == -(-700 * size // EVENT_HUB_MESSAGE_BYTES)


def test_queue_messages_fit_64_kib_once_base64_encoded():
    for message in pack(events("a", 2000, source="s" * 100), QUEUE_MESSAGE_BYTES):
        assert len(base64.b64encode(message.body)) <= 64 * 1024


class FakeBatch:
    """The SDK's EventDataBatch contract: add() raises ValueError once the batch is full."""

    def __init__(self, partition_key: str, limit: int) -> None:
        self.partition_key = partition_key
        self.limit = limit
        self.bodies: list[bytes] = []

    def add(self, data) -> None:
        body = b"".join(data.body)
        if self.bodies and sum(map(len, self.bodies)) + len(body) > self.limit:
            raise ValueError("EventDataBatch has reached its size limit")
        self.bodies.append(body)


class FakeProducer:
    """Stands in for EventHubProducerClient, which needs a live Event Hubs namespace."""

    def __init__(self, limit: int = 200_000, fail: bool = False) -> None:
        self.limit = limit
        self.fail = fail
        self.sent: list[FakeBatch] = []
        self.closed = False

    def create_batch(self, partition_key: str) -> FakeBatch:
        return FakeBatch(partition_key, self.limit)

    def send_batch(self, batch: FakeBatch) -> None:
        if self.fail:
            raise EventHubError("connection lost")
        self.sent.append(batch)

    def close(self) -> None:
        self.closed = True


def test_event_hub_batches_one_partition_key_each_split_by_size():
    producer = FakeProducer(limit=150_000)
    created = []
    publisher = EventHubPublisher(lambda: created.append(1) or producer)
    messages = pack(events("a", 1500) + events("b", 10), EVENT_HUB_MESSAGE_BYTES)
    publisher.publish(messages)
    publisher.publish(pack(events("c", 1), EVENT_HUB_MESSAGE_BYTES))
    assert created == [1]  # one producer per process, reused
    keys = [batch.partition_key for batch in producer.sent]
    assert keys.count("a") >= 2
    assert keys.count("b") == 1
    assert keys[-1] == "c"
    assert all(sum(map(len, batch.bodies)) <= 150_000 for batch in producer.sent)
    sent = [json.loads(body) for batch in producer.sent for body in batch.bodies]
    assert sum(len(s) for s in sent) == 1511
    publisher.close()
    assert producer.closed


def test_a_send_failure_is_a_publish_error():
    publisher = EventHubPublisher(lambda: FakeProducer(fail=True))
    with pytest.raises(PublishError, match="Event Hubs"):
        publisher.publish([Message("a", b"[]", 0)])


def test_the_local_queue_holds_what_was_published(azurite):
    client = queue_client(azurite.connection_string, "transporttest")
    QueuePublisher(client).publish(pack(events("a", 3), QUEUE_MESSAGE_BYTES))
    [message] = client.receive_messages()
    assert [e["event_id"] for e in json.loads(message.content)] == ["a-0", "a-1", "a-2"]


def test_ingest_answers_503_with_retry_after_when_the_transport_refuses():
    # A real queue client against a port nothing listens on: the SDK's retries run out, as in an outage.
    dead = queue_client(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;",
        "nowhere",
    )
    ingest = wired(MemoryStore(), publisher=QueuePublisher(dead), clock=lambda: NOW).http.ingest
    body = json.dumps([e.to_json_dict() for e in events("a", 2)]).encode()
    response = ingest(body, "application/json")
    assert response.status == 503
    assert response.headers["Retry-After"] == "5"
    assert "Retry the same request" in response.json()["detail"]


def test_a_request_the_transport_refused_gives_its_rate_allowance_back():
    dead = queue_client(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;",
        "nowhere",
    )
    # A burst of exactly one request's events: the retry after a 503 needs the allowance the 503 took.
    tight = {"rate": {"events_per_second": "0.001", "burst": 2}}
    plans = parse_plans({"version": "t", "default_plan": "tight", "plans": {"tight": tight}}, load_catalog())
    services = wired(MemoryStore(), publisher=QueuePublisher(dead), clock=lambda: NOW, plans=plans)
    rate = plans.default.rate
    assert rate is not None
    body = json.dumps([e.to_json_dict() for e in events("a", 2)]).encode()
    assert services.http.ingest(body, "application/json").status == 503
    assert services.http.ingest(body, "application/json").status == 503  # not 429: the first one took nothing
    assert services.ingest.limiter.take("a", 2, rate) is None
