"""The HTTP contract (docs/api.md) end to end: real HTTP, the dev host, the local transport, real Azurite."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from metering.core.meters import load_catalog
from metering.devhost.host import discover
from tests.e2e.conftest import ADMIN_KEY, eventually

NOW = datetime.now(UTC).replace(microsecond=0)
TS = NOW.isoformat().replace("+00:00", "Z")


def usage_event(tenant: str, event_id: str, quantity: Any = "1", **fields: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "tenant_id": tenant,
        "metric": "api.requests",
        "quantity": quantity,
        "timestamp": TS,
        "source": "e2e",
        **fields,
    }


def total(api: httpx.Client, tenant: str, metric: str = "api.requests") -> tuple[str, int]:
    body = api.get(f"/usage/{tenant}/{metric}").json()
    return body["total"], body["event_count"]


def settle(api: httpx.Client, tenant: str, expected: tuple[str, int], metric: str = "api.requests") -> None:
    def check() -> bool:
        assert total(api, tenant, metric) == expected
        return True

    eventually(check)


def test_posted_events_come_back_in_usage_exactly(api, tenant):
    events = [usage_event(tenant, f"e{i}", "0.1") for i in range(10)] + [
        usage_event(tenant, "big", "123456789012.000000000001")
    ]
    response = api.post("/events", json=events)
    assert response.status_code == 202
    assert response.json() == {"accepted": 11, "event_ids": [e["event_id"] for e in events]}
    settle(api, tenant, ("123456789013.000000000001", 11))


def test_same_ids_are_counted_once_within_and_across_requests(api, tenant):
    first = usage_event(tenant, "a", "2")
    assert api.post("/events", json=[first, first, usage_event(tenant, "b", "3")]).status_code == 202
    settle(api, tenant, ("5", 2))
    assert api.post("/events", json=[first, usage_event(tenant, "c", "4")]).status_code == 202
    settle(api, tenant, ("9", 3))


def test_ids_are_assigned_when_missing_and_idempotency_keys_dedupe(api, tenant):
    event = usage_event(tenant, "x", "7", idempotency_key="order-1")
    del event["event_id"]
    ids = [api.post("/events", json=event).json()["event_ids"][0] for _ in range(2)]
    assert ids[0] != ids[1]  # a new id each time, but the same idempotency key
    settle(api, tenant, ("7", 1))


def test_cloud_events_structured_and_batch(api, tenant):
    def cloud(event_id: str, quantity: str) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": event_id,
            "source": "e2e",
            "subject": tenant,
            "type": "api.requests",
            "time": TS,
            "data": {"quantity": quantity, "dimensions": {"region": "eu"}},
        }

    one = api.post(
        "/events", content=json.dumps(cloud("c1", "1")), headers={"content-type": "application/cloudevents+json"}
    )
    assert one.status_code == 202
    batch = [cloud("c2", "2"), cloud("c3", "3")]
    many = api.post(
        "/events", content=json.dumps(batch), headers={"content-type": "application/cloudevents-batch+json"}
    )
    assert many.status_code == 202
    settle(api, tenant, ("6", 3))
    bad = cloud("c4", "1")
    bad["subject"] = "not a tenant!"
    rejected = api.post("/events", content=json.dumps(bad), headers={"content-type": "application/cloudevents+json"})
    assert rejected.status_code == 422
    assert [e["field"] for e in rejected.json()["errors"]] == ["subject"]


def problem_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    return body


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b'"a string"', "application/json", 400),
        (b"[]", "application/json", 400),
        (b"[1]", "application/cloudevents+json", 400),
        (b"{}", "text/plain", 415),
        (b"{}", None, 415),
    ],
)
def test_bodies_the_contract_refuses(api, content, content_type, status):
    headers = {"content-type": content_type} if content_type else {}
    problem_of(api.post("/events", content=content, headers=headers), status)


def test_too_many_events_or_too_large_a_body_is_413(api, tenant):
    problem_of(api.post("/events", json=[usage_event(tenant, f"e{i}") for i in range(1001)]), 413)
    padding = usage_event(tenant, "big", source="x" * 100)
    problem_of(api.post("/events", content=json.dumps(padding).encode() + b" " * (1024 * 1024)), 413)


def test_a_request_with_one_invalid_event_forwards_nothing(api, tenant):
    good = usage_event(tenant, "good", "5")
    bad = usage_event(tenant, "bad", "-1", metric="api.requests", unit="bytes")
    body = problem_of(api.post("/events", json=[good, bad, {"tenant_id": tenant}]), 422)
    assert {(e["index"], e["field"]) for e in body["errors"]} >= {
        (1, "quantity"),
        (1, "unit"),
        (2, "metric"),
        (2, "quantity"),
        (2, "timestamp"),
        (2, "source"),
    }
    assert all(e["index"] != 0 for e in body["errors"])
    # Then a valid event: once it is counted, the rejected request's good event would have been too.
    assert api.post("/events", json=usage_event(tenant, "later", "1")).status_code == 202
    settle(api, tenant, ("1", 1))


def test_timestamps_outside_the_window_are_refused(api, tenant):
    old = usage_event(tenant, "old", timestamp=(NOW - timedelta(days=36)).isoformat())
    future = usage_event(tenant, "future", timestamp=(NOW + timedelta(minutes=10)).isoformat())
    body = problem_of(api.post("/events", json=[old, future]), 422)
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(0, "timestamp"), (1, "timestamp")]


def test_keys(devhost, tenant):
    with httpx.Client(base_url=devhost.base_url, timeout=10) as bare:
        problem_of(bare.get(f"/usage/{tenant}/api.requests"), 401)
        problem_of(bare.post("/events", json=usage_event(tenant, "k")), 401)
        problem_of(bare.get(f"/usage/{tenant}/api.requests", headers={"x-functions-key": "wrong"}), 401)
        assert bare.get(f"/usage/{tenant}/api.requests", params={"code": ADMIN_KEY}).status_code == 200


def test_reads(api, tenant):
    assert api.post("/events", json=[usage_event(tenant, "r1", "2", dimensions={"region": "eu"})]).status_code == 202
    settle(api, tenant, ("2", 1))
    usage = api.get(f"/usage/{tenant}/api.requests", params={"group_by": "region"}).json()
    assert usage["groups"] == [{"key": "eu", "total": "2", "event_count": 1, "kind": "value"}]
    assert usage["status"] == "open"
    assert "groups" not in api.get(f"/usage/{tenant}/api.requests").json()
    day = NOW.date().isoformat()
    history = api.get(f"/usage/{tenant}/api.requests/history", params={"start": day, "end": day}).json()
    assert [(i["total"], i["event_count"]) for i in history["items"]] == [("2", 1)]
    hours = api.get(
        f"/usage/{tenant}/api.requests/history", params={"start": day, "end": day, "granularity": "hour"}
    ).json()
    assert len(hours["items"]) == 24
    quota = api.get(f"/quota/{tenant}/api.requests", params={"requested": "3"}).json()
    # A tenant without settings is on the default plan, which limits nothing.
    assert (quota["decision"], quota["current"], quota["projected"], quota["remaining"]) == (
        "unlimited",
        "2",
        "5",
        None,
    )
    fresh = api.get("/usage/nobody-here/api.requests").json()
    assert (fresh["total"], fresh["event_count"]) == ("0", 0)


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        ("/usage/acme/no.such.meter", {}, 404, None),
        ("/quota/acme/no.such.meter", {}, 404, None),
        ("/usage/bad%20tenant/api.requests", {}, 400, "tenant_id"),
        ("/usage/acme/api.requests", {"period": "2026-11-15"}, 400, "period"),
        ("/usage/acme/api.requests", {"group_by": "color"}, 400, "group_by"),
        ("/usage/acme/api.requests/history", {"start": "2026-01-01"}, 400, "end"),
        ("/usage/acme/api.requests/history", {"start": "2026-01-01", "end": "2027-06-01"}, 400, "start"),
        (
            "/usage/acme/api.requests/history",
            {"start": "2026-01-01", "end": "2026-01-02", "granularity": "week"},
            400,
            "granularity",
        ),
        ("/quota/acme/api.requests", {"requested": "lots"}, 400, "requested"),
        ("/quota/acme/api.requests", {"requested": "-1"}, 400, "requested"),
    ],
)
def test_bad_reads(api, path, params, status, field):
    body = problem_of(api.get(path, params=params), status)
    if field:
        assert body["errors"][0]["field"] == field


def test_openapi_describes_every_route(api):
    document = api.get("/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    routes = set()
    for function in discover("function_app"):
        trigger = function.get_trigger()
        if trigger.get_binding_name() == "httpTrigger":
            routes.add("/" + trigger.route)
    assert set(document["paths"]) == routes
    assert len(routes) == 35
    schemas = document["components"]["schemas"]
    assert {"UsageEvent", "Problem", "UsageResponse", "QuotaDecision", "InvoicePreview"} <= set(schemas)
    assert "tenant_id" in schemas["UsageEvent"]["required"]


def test_openapi_names_the_meters_of_the_running_catalog(api):
    document = api.get("/openapi.json").json()
    meters = list(load_catalog().names)
    parameters = document["paths"]["/usage/{tenant_id}/{metric}"]["get"]["parameters"]
    [metric] = [p for p in parameters if p["name"] == "metric"]
    assert metric["schema"]["enum"] == meters
    assert document["components"]["schemas"]["UsageEvent"]["properties"]["metric"]["enum"] == meters
