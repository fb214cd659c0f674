"""POST /api/events while a store or transport it needs is away: 503 with Retry-After and the event ids, never a
500; the ids are fixed before anything can fail, so a retry resends the very same events. Real SDK clients
against a port nothing listens on stand for the store that is away; the working parts run on Azurite."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from azure.data.tables import TableServiceClient

from metering.api.ingest import Ingest
from metering.stores import Store
from metering.stores.memory import MemoryStore
from metering.stores.table import TableStore
from metering.transport.queue import QueuePublisher, queue_client
from tests.support import wired

NOW = datetime(2026, 11, 24, 9, tzinfo=UTC)
NOWHERE = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"


def dead(service: str) -> str:
    return f"{NOWHERE}{service}Endpoint=http://127.0.0.1:9/devstoreaccount1;"


def event(event_id: str | None, tenant: str = "acme") -> dict:
    fields = {"tenant_id": tenant, "metric": "api.requests", "quantity": "1", "timestamp": NOW.isoformat(),
              "source": "test"}  # fmt: skip
    return fields if event_id is None else {"event_id": event_id, **fields}


def ingest_with(publisher, store: Store | None = None) -> Ingest:
    """POST /api/events as the app wires it; tenant settings come from `store` (by default one that holds none)."""
    return wired(store or MemoryStore(), publisher=publisher, clock=lambda: NOW).http.ingest


@pytest.fixture
def queue(azurite):
    client = queue_client(azurite.connection_string, f"ingest{uuid.uuid4().hex}")
    client.create_queue()
    yield client
    client.delete_queue()


def unreachable_tenants() -> TableStore:
    # The SDK's retries are switched off here only to keep the test short; the failure is the real one.
    service = TableServiceClient.from_connection_string(dead("Table"), retry_total=0)
    return TableStore(service, usage_table="meteringusage", conflicts_table="meteringconflicts")


def test_a_tenant_settings_read_that_fails_is_a_503_with_the_ids_and_nothing_is_sent(queue):
    ingest = ingest_with(QueuePublisher(queue), unreachable_tenants())
    body = json.dumps([event("given-1"), event(None), event("given-2", tenant="globex"), event(None)]).encode()
    response = ingest(body, "application/json")
    assert response.status == 503
    assert response.headers["Retry-After"] == "5"
    assert response.content_type == "application/problem+json"
    problem = response.json()
    assert problem["title"] == "Service unavailable"
    assert problem["detail"].startswith("the tenant settings could not be read")
    ids = problem["event_ids"]
    assert ids[0] == "given-1"
    assert ids[2] == "given-2"
    assert len(set(ids)) == 4
    assert all(len(i) == 32 for i in (ids[1], ids[3]))  # assigned by the server, in request order
    assert list(queue.peek_messages()) == []  # nothing was forwarded


def test_a_transport_that_refuses_is_a_503_with_the_ids_and_the_retry_with_them_is_accepted(queue):
    events = [event(None), event("given")]
    refused = ingest_with(QueuePublisher(queue_client(dead("Queue"), "nowhere")))(json.dumps(events).encode(),
                                                                                  "application/json")  # fmt: skip
    assert refused.status == 503
    ids = refused.json()["event_ids"]
    assert ids[1] == "given"
    # The client's retry resends the events with the ids it was given: they are the same events.
    retry = [{**item, "event_id": event_id} for item, event_id in zip(events, ids, strict=True)]
    accepted = ingest_with(QueuePublisher(queue))(json.dumps(retry).encode(), "application/json")
    assert accepted.status == 202
    assert accepted.json() == {"accepted": 2, "event_ids": ids}
    [message] = queue.receive_messages()
    assert [item["event_id"] for item in json.loads(message.content)] == ids
