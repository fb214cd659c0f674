"""The OpenAPI document names the deployment's meters wherever a request names one, so a client generated from
it, or a fuzzer driven by it, sends meters the service accepts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from metering.api.openapi import OpenApiRoute, document
from metering.core.events import validate_events
from metering.core.meters import load_catalog, parse_catalog

CATALOG = load_catalog()


def metric_enums(doc: dict[str, Any]) -> dict[str, list[str]]:
    """Every place a request names a meter, with the names the document allows there."""
    found = {}
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["name"] in ("metric", "ce-type"):
                    found[f"{method} {path} {parameter['name']}"] = parameter["schema"]["enum"]
    schemas = doc["components"]["schemas"]
    found["UsageEvent.metric"] = schemas["UsageEvent"]["properties"]["metric"]["enum"]
    found["UsageCloudEvent.type"] = schemas["UsageCloudEvent"]["properties"]["type"]["enum"]
    return found


def test_every_place_a_request_names_a_meter_lists_the_catalogs_meters():
    enums = metric_enums(document(CATALOG))
    assert set(enums) == {
        "get /usage/{tenant_id}/{metric} metric",
        "get /usage/{tenant_id}/{metric}/history metric",
        "get /quota/{tenant_id}/{metric} metric",
        "post /events ce-type",
        "get /portal/{tenant_id}/data/usage/{metric} metric",
        "get /portal/{tenant_id}/data/usage/{metric}/history metric",
        "get /portal/{tenant_id}/data/quota/{metric} metric",
        "UsageEvent.metric",
        "UsageCloudEvent.type",
    }
    assert all(names == list(CATALOG.names) for names in enums.values())


def test_the_names_are_the_deployments_catalog():
    catalog = parse_catalog({"version": "custom", "meters": {"gpu.hours": {"unit": "hour", "aggregation": "sum"}}})
    doc = document(catalog)
    assert set(map(tuple, metric_enums(doc).values())) == {("gpu.hours",)}
    assert "custom" in doc["info"]["description"]


def test_every_meter_the_document_offers_is_accepted_and_no_other():
    now = datetime(2026, 11, 24, 12, tzinfo=UTC)
    offered = metric_enums(document(CATALOG))["UsageEvent.metric"]
    events = [
        {"tenant_id": "acme", "metric": name, "quantity": "1", "timestamp": now, "source": "fuzz", "user_id": "u"}
        for name in offered
    ]
    accepted, errors = validate_events(events, CATALOG, now=now)
    assert (len(accepted), errors) == (len(offered), [])
    _, refused = validate_events([{**events[0], "metric": "not.offered"}], CATALOG, now=now)
    assert [e.field for e in refused] == ["metric"]


def test_the_route_serves_the_document_of_its_catalog():
    response = OpenApiRoute(CATALOG)()
    assert response.status == 200
    assert response.json() == document(CATALOG)
