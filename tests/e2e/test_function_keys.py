"""Least-privilege keys through the dev host, as Azure's per-function keys work: a key named for some functions
(METERING_FUNCTION_KEYS) opens those alone; the function key opens every function route; only the admin key
opens operator routes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest

from metering.devhost.http import FunctionKeysError, parse_function_keys
from tests.e2e.conftest import ADMIN_KEY, FUNCTION_KEY, GATEWAY_KEY, READ_KEY, eventually


def client(devhost, key: str) -> httpx.Client:
    return httpx.Client(base_url=devhost.base_url, headers={"x-functions-key": key}, timeout=30)


def one_event(tenant: str) -> list[dict[str, str]]:
    now = datetime.now(UTC).isoformat()
    return [
        {
            "event_id": "k1",
            "tenant_id": tenant,
            "metric": "api.requests",
            "quantity": "2",
            "timestamp": now,
            "source": "gw",
        }
    ]


def test_an_ingest_only_key_ingests_and_reads_nothing(devhost, tenant):
    with client(devhost, GATEWAY_KEY) as gateway, client(devhost, FUNCTION_KEY) as api:
        assert gateway.post("/events", json=one_event(tenant)).status_code == 202
        for path in (f"/usage/{tenant}/api.requests", f"/quota/{tenant}/api.requests", f"/statements/{tenant}"):
            refused = gateway.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["content-type"] == "application/problem+json"
        assert gateway.get("/manage/health").status_code == 401
        # What it sent is counted: the key is limited, not the request.
        eventually(lambda: api.get(f"/usage/{tenant}/api.requests").json()["total"] == "2")


def test_a_read_only_key_reads_and_cannot_ingest(devhost, tenant):
    with client(devhost, READ_KEY) as reader, client(devhost, FUNCTION_KEY) as api:
        refused = reader.post("/events", json=one_event(tenant))
        assert refused.status_code == 401
        assert reader.get(f"/usage/{tenant}/api.requests").status_code == 200
        day = datetime.now(UTC).date().isoformat()
        history = reader.get(f"/usage/{tenant}/api.requests/history", params={"start": day, "end": day})
        assert history.status_code == 200
        assert reader.get(f"/quota/{tenant}/api.requests", params={"requested": "1"}).status_code == 200
        assert reader.post(f"/events/{tenant}/cancel", json={"event_id": "k1"}).status_code == 401
        assert reader.get("/manage/journal", params={"tenant_id": tenant}).status_code == 401
        # Nothing of the refused request was forwarded.
        assert api.get(f"/usage/{tenant}/api.requests").json()["total"] == "0"
    with client(devhost, ADMIN_KEY) as admin:
        assert admin.get(f"/usage/{tenant}/api.requests").status_code == 200  # the admin key opens everything


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "must be a JSON object"),
        ("{", "is not JSON"),
        ('{"ingest": "k-gateway-1"}', "must be a list of keys"),
        ('{"ingest": ["short"]}', "8 characters or more"),
        ('{"nope": ["k-gateway-1"]}', "'nope', which is no HTTP function"),
    ],
)
def test_bad_function_keys_are_refused_with_what_is_wrong(text, message):
    with pytest.raises(FunctionKeysError, match=message):
        parse_function_keys(text, {"ingest", "usage"})
    assert parse_function_keys(json.dumps({"usage": ["k-read-only"]}), {"ingest", "usage"}) == {
        "usage": ["k-read-only"]
    }
