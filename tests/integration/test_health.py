"""Health: hub partitions with their applied positions and lag, and the records waiting for an operator, on
every store, with the local queue as the hub (real Azurite)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from metering.core.hub import Applied
from metering.transport.queue import QueueBacklog, queue_client
from tests.support import wired

APPLIED_AT = datetime(2026, 11, 24, 12, tzinfo=UTC)


@pytest.fixture
def queue(azurite):
    client = queue_client(azurite.connection_string, f"health{uuid.uuid4().hex}")
    client.create_queue()
    yield client
    client.delete_queue()


def test_an_empty_queue_has_no_lag_and_is_named_before_anything_was_applied(queue):
    assert QueueBacklog(queue, "usage").lag({}, APPLIED_AT) == {"devstoreaccount1|usage|-": 0.0}


def test_the_lag_is_the_age_of_the_oldest_waiting_message_for_the_partition_reading_now(queue):
    queue.send_message(b"[]")
    queue.send_message(b"[]")
    inserted = min(m.inserted_on for m in queue.peek_messages(max_messages=2))
    older = Applied("devstoreaccount1|usage|local-old", 40, inserted - timedelta(days=1))
    live = Applied("devstoreaccount1|usage|local-new", 3, inserted - timedelta(seconds=5))
    lag = QueueBacklog(queue, "usage").lag({p.partition: p for p in (older, live)}, inserted + timedelta(seconds=30))
    assert lag == {live.partition: 30.0}


def late_event(key: str) -> dict[str, object]:
    """A late event as `billing/late.py` records it, waiting for a decision."""
    return {
        "event": {"event_id": key, "tenant_id": "acme", "metric": "api.requests", "quantity": "1"},
        "reason": "its period is closed",
        "period_start": "2026-10-01",
        "detected": "2026-11-24T11:00:00Z",
        "carried_to": None,
    }


def test_health_reports_positions_lag_and_what_waits_for_an_operator(store, queue):
    progress = wired(store).progress
    reading = Applied("devstoreaccount1|usage|local-a", 17, APPLIED_AT - timedelta(minutes=1))
    progress.record([reading], APPLIED_AT)
    for i in range(3):
        store.dead_letters.upsert(reading.partition, f"{i:020d}:0", {"reason": "bad"})
    store.dead_letters.upsert("unknown", "h:x", {"reason": "bad"})
    # Re-driven: no longer waits (ingest/redrive.py marks the letter).
    store.dead_letters.upsert("unknown", "h:y", {"reason": "bad", "redriven": {"outcome": "counted"}})
    # Late events wait until they are carried, applied or discarded; an apply begun and not completed still waits.
    for key, decision in [
        ("k1", {}),
        ("k2", {"status": "applying"}),
        ("k3", {"carried_to": "2026-12-01"}),
        ("k4", {"status": "applied", "applied_to": "2026-12-01"}),
        ("k5", {"status": "discarded", "discard_reason": "test traffic"}),
    ]:
        store.late_events.upsert("acme", key, {**late_event(key), **decision})
    store.late_events.upsert("acme", "k6", {"event": "not a record"})  # unreadable: a person has to look at it
    store.conflicts.upsert("acme", "k1", {})
    store.conflicts.upsert("globex", "k2", {})
    # Webhook deliveries given up on count; pending ones do not (notifications/webhooks/rows.py).
    store.control.upsert("outbox", "f|quota.threshold_crossed:acme:api.requests:2026-11-01:80", {"status": "failed"})
    store.control.upsert("outbox", "f|period.closed:acme:2026-10-01", {"status": "failed"})
    store.control.upsert("outbox", "w|period.closed:globex:2026-10-01", {"status": "pending"})
    queue.send_message(b"[]")
    [waiting] = queue.peek_messages()
    now = waiting.inserted_on + timedelta(seconds=12)
    health = wired(store, clock=lambda: now, backlog=QueueBacklog(queue, "usage")).health
    report = health.report()
    assert report.model_dump(mode="json") == {
        "partitions": [
            {"partition": reading.partition, "applied_sequence": 17, "applied_at": "2026-11-24T12:00:00Z",
             "lag_seconds": 12.0},
        ],
        "dead_letters": 4,
        "late_events": 3,
        "conflicts": 2,
        "webhooks_failed": 2,
    }  # fmt: skip
    # Applied: nothing waits.
    queue.clear_messages()
    [partition] = health.report().partitions
    assert partition.lag_seconds == 0
