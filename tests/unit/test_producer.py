"""EventHubUsageProducer at the SDK boundary: no Event Hubs namespace exists here, so a fake stands in for the
`EventHubProducerClient` calls it makes (create_batch, send_batch, close), with the SDK's batch contract."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from azure.eventhub.exceptions import EventHubError

from metering.client import InvalidEvent, new_event
from metering.core.events import parse_event
from metering.ingest.producer import EventHubUsageProducer, SendFailed, partition_key
from metering.transport import EVENT_HUB_MESSAGE_BYTES, decode_message

NOW = datetime.now(UTC)


class FakeBatch:
    """EventDataBatch: add() raises ValueError once the next event would pass the size limit."""

    def __init__(self, partition_key: str, limit: int) -> None:
        self.partition_key = partition_key
        self.limit = limit
        self.events: list = []

    def add(self, data) -> None:
        size = sum(len(b"".join(e.body)) for e in self.events)
        if self.events and size + len(b"".join(data.body)) > self.limit:
            raise ValueError("EventDataBatch has reached its size limit")
        self.events.append(data)


class FakeProducerClient:
    def __init__(self, limit: int = 256_000, fail: bool = False) -> None:
        self.limit = limit
        self.fail = fail
        self.created: list[str] = []
        self.sent: list[FakeBatch] = []
        self.closed = False

    def create_batch(self, *, partition_key: str) -> FakeBatch:
        self.created.append(partition_key)
        return FakeBatch(partition_key, self.limit)

    def send_batch(self, batch: FakeBatch) -> None:
        if self.fail:
            raise EventHubError("amqp:connection:forced")
        self.sent.append(batch)

    def close(self) -> None:
        self.closed = True


def events(tenant: str, count: int) -> list[dict]:
    return [
        {"tenant_id": tenant, "metric": "api.requests", "quantity": "1", "source": "producer", "timestamp": NOW}
        for _ in range(count)
    ]


def producer_for(client: FakeProducerClient) -> EventHubUsageProducer:
    return EventHubUsageProducer(client)


def sent_events(client: FakeProducerClient) -> list[tuple[str, dict]]:
    """(partition key, event) for every event sent, decoded as the aggregator decodes messages."""
    return [
        (batch.partition_key, item)
        for batch in client.sent
        for data in batch.events
        for item in decode_message(b"".join(data.body))
    ]


def test_each_tenant_goes_under_its_own_partition_key_in_size_aware_batches():
    client = FakeProducerClient(limit=150_000)
    with producer_for(client) as producer:
        sent = producer.send(events("acme", 3000) + events("globex", 5))
    assert client.closed
    got = sent_events(client)
    assert all(key == event["tenant_id"] for key, event in got)
    assert [event["event_id"] for _, event in got] == [event.event_id for event in sent]
    assert len({event.event_id for event in sent}) == 3005
    # 3000 events need several messages under the 64 KB unit, and those several batches under the limit.
    assert client.created.count("acme") >= 2
    assert all(len(b"".join(d.body)) <= EVENT_HUB_MESSAGE_BYTES for b in client.sent for d in b.events)
    assert all(d.content_type == "application/json" for b in client.sent for d in b.events)


def test_what_is_sent_is_what_the_aggregator_accepts_with_every_digit():
    client = FakeProducerClient()
    producer = producer_for(client)
    event = producer.record("acme", "api.requests", Decimal("123456789012.000000000001"), source="p", event_id="x-1")
    [(key, item)] = sent_events(client)
    assert key == "acme"
    assert item["quantity"] == "123456789012.000000000001"  # a string: a JSON number would lose digits
    parsed, errors = parse_event(item)
    assert errors == []
    assert parsed == event


def test_nothing_is_sent_unless_every_event_is_valid():
    client = FakeProducerClient()
    batch = [
        *events("acme", 2),
        {"tenant_id": "acme", "metric": "no.such.meter", "quantity": "1", "source": "p"},
        {"tenant_id": "acme", "metric": "api.requests", "quantity": "-1", "source": "p"},
        {
            "tenant_id": "acme",
            "metric": "api.requests",
            "quantity": "1",
            "source": "p",
            "timestamp": NOW - timedelta(days=40),
        },
        {"tenant_id": "acme", "metric": "api.requests", "quantity": 1.2345678901234567, "source": "p"},
    ]
    with pytest.raises(InvalidEvent) as raised:
        producer_for(client).send(batch)
    assert [(e.index, e.field) for e in raised.value.errors] == [
        (2, "metric"),
        (3, "quantity"),
        (4, "timestamp"),
        (5, "quantity"),
    ]
    assert client.created == []
    assert client.sent == []


def test_a_failed_send_returns_the_events_to_send_again_with_the_same_ids():
    failing = FakeProducerClient(fail=True)
    with pytest.raises(SendFailed) as raised:
        producer_for(failing).send([new_event("acme", "api.requests", 1, source="p"), *events("globex", 1)])
    retry = raised.value.events
    assert all(event.event_id for event in retry)
    working = FakeProducerClient()
    again = producer_for(working).send(retry)
    assert again == retry
    assert sorted(item["event_id"] for _, item in sent_events(working)) == sorted(e.event_id for e in retry)


def test_a_sharded_tenants_events_go_under_the_keys_ingest_gives_them():
    client = FakeProducerClient()
    producer = EventHubUsageProducer(client, shards=lambda tenant: 4 if tenant == "hot" else 1)
    sent = producer.send(
        [{**event, "event_id": f"h{i}"} for i, event in enumerate(events("hot", 200))] + events("acme", 3)
    )
    got = sent_events(client)
    keys = {key for key, event in got if event["tenant_id"] == "hot"}
    assert keys == {"hot|0", "hot|1", "hot|2", "hot|3"}
    assert {key for key, event in got if event["tenant_id"] == "acme"} == {"acme"}
    # Each event under the key ingest would give it, which the public function tells direct producers.
    by_id = {event.event_id: event for event in sent}
    assert all(partition_key(by_id[event["event_id"]], 4) == key for key, event in got if key != "acme")
