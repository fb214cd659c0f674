"""What the Event Hub trigger does with a batch, against real Azurite: decode, apply, dead-letter."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import ContainerClient

from metering.ingest.consumer import HubMessage, consume
from metering.ingest.deadletters import INLINE_BODY_CHARS
from metering.notifications.queue import QueueSink
from metering.transport.queue import queue_client
from tests.support import wired

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


def body(*events: dict) -> bytes:
    return json.dumps(list(events) if len(events) != 1 else events[0]).encode()


def event(event_id: str | None, quantity: str = "1", **fields) -> dict:
    data = {
        "tenant_id": "acme",
        "metric": "api.requests",
        "quantity": quantity,
        "timestamp": "2026-11-24T09:00:00Z",
        "source": "producer",
    }
    if event_id is not None:
        data["event_id"] = event_id
    return {**data, **fields}


@pytest.fixture
def pipeline(table_store, schedule, azurite, clock):
    container = ContainerClient.from_connection_string(azurite.connection_string, f"dl{table_store.usage.name[1:20]}")
    # What the function app runs after a batch: late events, alerts (no tenant here has limits), hub progress.
    services = wired(
        table_store,
        clock=clock,
        schedule=schedule,
        sink=QueueSink(queue_client(azurite.connection_string, f"n{uuid.uuid4().hex}")),
        dead_letter_container=lambda: container,
    )

    def run(messages: list[HubMessage]):
        return consume(messages, services.ledger, services.dead_letters, clock, services.after_apply)

    return run, services.usage, table_store, container


def test_objects_and_arrays_are_applied_and_events_without_ids_get_their_position(pipeline):
    run, reader, _, _ = pipeline
    messages = [
        HubMessage(body(event("a", "2")), "3", 10, NOW - timedelta(seconds=4)),
        HubMessage(body(event(None, "5"), event(None, "7")), "3", 11, NOW - timedelta(seconds=2)),
    ]
    report = run(messages)
    assert (report.messages, report.events, report.applied, report.dead_lettered) == (2, 3, 3, 0)
    assert report.lag_seconds == 4
    # Delivered again: the ids derived from positions are the same, so nothing counts twice.
    again = run(messages)
    assert (again.applied, again.duplicates) == (0, 3)
    assert str(reader.current("acme", "api.requests").total) == "14"


def test_what_cannot_count_is_dead_lettered_once_with_its_reason(pipeline):
    run, reader, store, container = pipeline
    huge = event("big", source="s" * 100, dimensions={f"k{i}": "v" * 250 for i in range(16)})
    messages = [
        HubMessage(b"{not json", "0", 1),
        HubMessage(body(event("ok"), event("bad", "-3"), event("who", metric="no.such")), "0", 2),
        HubMessage(
            body(*[event(f"x{i}", "1", source="y" * 120) for i in range(3)] + [{"junk": "z" * INLINE_BODY_CHARS}]),
            "0",
            3,
        ),
        HubMessage(body(event(None)), None, None),
        HubMessage(body({**huge, "extra_field": "x"}), "0", 4),
    ]
    first = run(messages)
    second = run(messages)
    assert first.applied == 4
    assert second.applied == 0
    records = {row.key: row.data for row in store.dead_letters.partition("0")}
    reasons = {key: data["reason"] for key, data in records.items()}
    assert "not valid JSON" in reasons[f"{1:020d}:-"]
    assert "quantity" in reasons[f"{2:020d}:1"]
    assert "metric" in reasons[f"{2:020d}:2"]
    assert "extra_field" in reasons[f"{4:020d}:0"]
    junk = records[f"{3:020d}:3"]
    assert "blob" in junk
    assert json.loads(container.download_blob(junk["blob"]).readall())["junk"].startswith("zzz")
    unknown = store.dead_letters.partition("unknown")
    assert len(unknown) == 1
    assert "no event_id" in unknown[0].data["reason"]
    assert len(records) == 5  # recorded once each, though the batch came twice
    assert str(reader.current("acme", "api.requests").total) == "4"
