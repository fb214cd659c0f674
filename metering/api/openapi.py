"""GET /api/openapi.json: the OpenAPI 3.1 description of the HTTP contract, generated from the same pydantic
models that validate requests and shape responses, and from the deployment's meter catalog. It is the reference;
docs/api.md explains it."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from metering.api.billing import LateEventList, StatementList
from metering.api.contract import MAX_EVENTS, Accepted, HistoryResponse, QuotaDecision, UsageResponse
from metering.api.exports import ExportRunResponse
from metering.api.http import Response, ok
from metering.api.manage import CloseResponse
from metering.api.portal import MintedPortalToken, MintRequest
from metering.api.webhooks import MAX_PAGE, WebhookDeliveryList, WebhookRedrive
from metering.billing.cancels import CancelResult
from metering.billing.exports.reconcile import ExportReconciliation
from metering.billing.invoices import InvoicePreview
from metering.billing.statements import Statement
from metering.core.events import MAX_COUNT, MAX_SAMPLE_WEIGHT, TENANT_PATTERN, UsageEvent
from metering.core.meters import MeterCatalog
from metering.ingest.health import Health
from metering.portal.overview import PortalOverview
from metering.tenants.records import TenantSettings, TenantUpdate

VERSION = "0.1.0"


class FieldErrorModel(BaseModel):
    index: int
    field: str
    message: str


class Problem(BaseModel):
    """application/problem+json (RFC 9457)."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldErrorModel] | None = None
    event_ids: list[str] | None = Field(None, description="503 of POST /events: the events' ids, in request order")


class CancelRequest(BaseModel):
    """Exactly one of the two: the event's dedupe key."""

    event_id: str | None = None
    idempotency_key: str | None = None


class UsageEventData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantity: str | float = Field(description="As in UsageEvent")
    unit: str | None = None
    user_id: str | None = None
    resource_id: str | None = None
    dimensions: dict[str, str] | None = None
    idempotency_key: str | None = None
    count: int | None = Field(None, ge=1, le=MAX_COUNT, description="As in UsageEvent")
    sample_weight: int | None = Field(None, ge=1, le=MAX_SAMPLE_WEIGHT, description="As in UsageEvent")


class UsageCloudEvent(BaseModel):
    """A usage event as a structured-mode CloudEvent 1.0."""

    specversion: str = Field(description='"1.0"')
    id: str = Field(description="event_id")
    source: str
    subject: str = Field(description="tenant_id")
    type: str = Field(description="metric")
    time: str = Field(description="timestamp, RFC 3339")
    datacontenttype: str | None = None
    data: UsageEventData


def _problem_responses(*statuses: int, reasons_here: dict[int, str] | None = None) -> dict[str, Any]:
    reasons = {
        400: "Bad request: not JSON, or a bad parameter (named in errors)",
        401: "Missing or wrong key",
        404: "Unknown meter, statement, event or webhook delivery",
        409: "The event's billing period is closed: its totals are final",
        413: "Body over 1 MiB, more than 1000 events, or more events of a tenant than its plan's burst",
        415: "Unsupported content type",
        422: "Invalid input: per-field errors; nothing of the request was forwarded or changed",
        429: "The tenant's ingest rate limit is exceeded (Retry-After)",
        503: "A store or the hub is unavailable, or the app's configuration is wrong (Retry-After). For events: "
        "some may be forwarded already; `event_ids` are their ids, in request order, and a retry with them is safe",
    }
    reasons.update(reasons_here or {})
    problem_body = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return {str(status): {"description": reasons[status], "content": problem_body} for status in statuses}


def _ok(model: str, description: str, status: int = 200) -> dict[str, Any]:
    return {str(status): {"description": description, "content": {"application/json": {"schema": _ref(model)}}}}


def _object(description: str) -> dict[str, Any]:
    return {"200": {"description": description, "content": {"application/json": {"schema": {"type": "object"}}}}}


def _path_parameter(name: str, description: str, pattern: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": pattern},
    }


def _operator_paths() -> dict[str, Any]:
    """The console's lists and actions (admin key; each action idempotent and journaled; docs/api.md)."""
    page = [
        _query("limit", "Page size", type="integer", minimum=1, maximum=MAX_PAGE, default=100),
        _query("offset", "The `next_offset` of the previous page", type="integer", minimum=0, default=0),
    ]
    late_id = _path_parameter("id", "The late event's id, from the list", "^[0-9a-f]{32}$")
    tenant = _path_parameter("tenant_id", "Tenant id", "^[A-Za-z0-9._:-]{1,128}$")
    return {
        "/console": {
            "get": {
                "summary": "The operator console: a page shell without data that asks for the admin key and sends "
                "it only in the x-functions-key header of the admin routes (never framed)",
                "operationId": "getConsole",
                "responses": {
                    "200": {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}}
                },
            }
        },
        "/manage/late-events": {
            "get": {
                "summary": "Late events of every tenant, newest first, with their status (admin key)",
                "operationId": "listLateEvents",
                "parameters": [
                    _query("tenant_id", "One tenant's only"),
                    _query(
                        "status",
                        "Which ones",
                        type="string",
                        enum=["waiting", "carried", "applying", "applied", "discarded"],
                    ),
                    *page,
                ],
                "responses": {**_object("A page: items, total, next_offset"), **_problem_responses(400, 401, 503)},
            }
        },
        "/manage/late-events/{tenant_id}/{id}/apply": {
            "post": {
                "summary": "Count a late event in the open period as an adjustment: once, however often it is "
                "asked; journaled with the totals before and after (admin key)",
                "operationId": "applyLateEvent",
                "parameters": [tenant, late_id],
                "responses": {
                    **_object("The late event and its journal entry"),
                    **_problem_responses(400, 401, 404, 409, 503),
                },
            }
        },
        "/manage/late-events/{tenant_id}/{id}/discard": {
            "post": {
                "summary": 'Leave a late event uncounted, with {"reason"}; journaled (admin key)',
                "operationId": "discardLateEvent",
                "parameters": [tenant, late_id],
                "responses": {
                    **_object("The late event and its journal entry"),
                    **_problem_responses(400, 401, 404, 409, 503),
                },
            }
        },
        "/manage/dead-letters": {
            "get": {
                "summary": "Dead letters, newest first, with their reason (admin key)",
                "operationId": "listDeadLetters",
                "parameters": [_query("status", "Which ones", type="string", enum=["waiting", "redriven"]), *page],
                "responses": {**_object("A page: items, total, next_offset"), **_problem_responses(400, 401, 503)},
            }
        },
        "/manage/dead-letters/{id}/redrive": {
            "post": {
                "summary": "Count a dead letter's events once its cause is fixed, or refuse with the reason "
                "(409, nothing written); journaled (admin key)",
                "operationId": "redriveDeadLetter",
                "parameters": [_path_parameter("id", "The dead letter's id, from the list", "^[A-Za-z0-9_-]+$")],
                "responses": {**_object("What came of it"), **_problem_responses(400, 401, 404, 409, 503)},
            }
        },
        "/manage/conflicts": {
            "get": {
                "summary": "Payloads met under a dedupe key counted with another payload (admin key)",
                "operationId": "listConflicts",
                "parameters": page,
                "responses": {**_object("A page: items, total, next_offset"), **_problem_responses(400, 401, 503)},
            }
        },
        "/manage/console/tenants": {
            "get": {
                "summary": "Tenants with usage this period, each meter's total against its limits, worst state "
                "first (admin key)",
                "operationId": "listTenantStandings",
                "parameters": [
                    _query("q", "Part of a tenant id"),
                    _query("sort", "Order", type="string", enum=["state", "tenant"], default="state"),
                    *page,
                ],
                "responses": {**_object("A page: items, total, next_offset"), **_problem_responses(400, 401, 503)},
            }
        },
        "/manage/alerts": {
            "get": {
                "summary": "Threshold alerts sent, newest first (admin key)",
                "operationId": "listAlerts",
                "parameters": [_query("tenant_id", "One tenant's only"), *page],
                "responses": {**_object("A page: items, total, next_offset"), **_problem_responses(400, 401, 503)},
            }
        },
        "/manage/journal": {
            "get": {
                "summary": "A tenant's journal, newest first: cancels, carries and operator actions, with the "
                "actor and the totals before and after (admin key)",
                "operationId": "listJournal",
                "parameters": [
                    _query("tenant_id", "The tenant", required=True),
                    _query("since", "From this RFC 3339 time", format="date-time", type="string"),
                    _query("until", "Before this RFC 3339 time", format="date-time", type="string"),
                    *page,
                ],
                "responses": {**_object("A page: items, total, next_offset"), **_problem_responses(400, 401, 503)},
            }
        },
    }


def _ref(model: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model}"}


def _tenant_parameter() -> dict[str, Any]:
    return {
        "name": "tenant_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": TENANT_PATTERN},
    }


def _path_parameters(metrics: Sequence[str]) -> list[dict[str, Any]]:
    return [
        _tenant_parameter(),
        {"name": "metric", "in": "path", "required": True, "schema": {"type": "string", "enum": list(metrics)}},
    ]


def _query(name: str, description: str, required: bool = False, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _binary_mode_headers(metrics: Sequence[str]) -> list[dict[str, Any]]:
    """A CloudEvent in binary mode: its attributes as percent-encoded `ce-` headers, its data as the body."""
    attributes = {
        "ce-specversion": ("Binary mode: present (1.0) whatever the content type; the body is the data", {}),
        "ce-id": ("event_id", {}),
        "ce-source": ("source", {}),
        "ce-type": ("metric", {"enum": list(metrics)}),
        "ce-subject": ("tenant_id", {}),
        "ce-time": ("timestamp, RFC 3339", {}),
    }
    return [
        {"name": name, "in": "header", "required": False, "description": text, "schema": {"type": "string", **extra}}
        for name, (text, extra) in attributes.items()
    ]


def document(catalog: MeterCatalog) -> dict[str, Any]:
    """The document for this deployment: a meter's name is one of its catalog's, wherever a request names one
    (a path's `metric`, an event's `metric`, a CloudEvent's `type`), so a client generated from the document, or
    a fuzzer driven by it, sends meters the service knows."""
    models: list[tuple[type[BaseModel], Any]] = [
        (UsageEvent, "validation"),
        (UsageCloudEvent, "validation"),
        (UsageEventData, "validation"),
        (Accepted, "serialization"),
        (Problem, "serialization"),
        (UsageResponse, "serialization"),
        (HistoryResponse, "serialization"),
        (QuotaDecision, "serialization"),
        (CancelRequest, "validation"),
        (CancelResult, "serialization"),
        (Statement, "serialization"),
        (StatementList, "serialization"),
        (LateEventList, "serialization"),
        (InvoicePreview, "serialization"),
        (TenantUpdate, "validation"),
        (TenantSettings, "serialization"),
        (CloseResponse, "serialization"),
        (Health, "serialization"),
        (WebhookDeliveryList, "serialization"),
        (WebhookRedrive, "serialization"),
        (PortalOverview, "serialization"),
        (MintRequest, "validation"),
        (MintedPortalToken, "serialization"),
        (ExportRunResponse, "serialization"),
        (ExportReconciliation, "serialization"),
    ]
    _, schemas = models_json_schema(models, ref_template="#/components/schemas/{model}")
    components = schemas["$defs"]
    components["UsageEvent"]["properties"]["metric"]["enum"] = list(catalog.names)
    components["UsageCloudEvent"]["properties"]["type"]["enum"] = list(catalog.names)
    events_body = {
        "oneOf": [
            _ref("UsageEvent"),
            {"type": "array", "items": _ref("UsageEvent"), "minItems": 1, "maxItems": MAX_EVENTS},
        ]
    }
    paths: dict[str, Any] = {
        **_core_paths(catalog, events_body),
        **_portal_paths(),
        **_operator_paths(),
    }
    paths.update(_portal_data_paths(paths))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Usage metering",
            "version": VERSION,
            "description": "Exactly-once usage metering (docs/api.md explains the routes); meter catalog "
            f"{catalog.version}.",
        },
        "servers": [{"url": "/api"}],
        "security": [{"functionKey": []}, {"functionKeyQuery": []}],
        "components": {
            "schemas": components,
            "securitySchemes": {
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code"},
                "portalToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": 'A portal token (README "Portal tokens"): HS256, sub = the tenant, '
                    "aud = metering-portal",
                },
            },
        },
        "paths": paths,
    }


def _core_paths(catalog: MeterCatalog, events_body: dict[str, Any]) -> dict[str, Any]:
    return {
        "/events": {
            "post": {
                "summary": "Record usage events (all or nothing)",
                "description": "JSON events, or CloudEvents in structured mode (the cloudevents media types) "
                "or, with a ce-specversion header, one in binary mode: its attributes in the ce- headers and "
                "its data (UsageEventData) as the JSON body",
                "operationId": "recordEvents",
                "parameters": _binary_mode_headers(catalog.names),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"oneOf": [*events_body["oneOf"], _ref("UsageEventData")]}},
                        "application/cloudevents+json": {"schema": _ref("UsageCloudEvent")},
                        "application/cloudevents-batch+json": {
                            "schema": {"type": "array", "items": _ref("UsageCloudEvent"), "maxItems": MAX_EVENTS}
                        },
                    },
                },
                "responses": {
                    **_ok("Accepted", "All events durably handed to the transport", 202),
                    **_problem_responses(400, 401, 413, 415, 422, 429, 503),
                },
            }
        },
        "/usage/{tenant_id}/{metric}": {
            "get": {
                "summary": "Usage of a meter in the current (or a given) billing period",
                "operationId": "getUsage",
                "parameters": [
                    *_path_parameters(catalog.names),
                    _query("period", "Start date of another period", format="date", type="string"),
                    _query("group_by", "A group_by dimension of the meter"),
                ],
                "responses": {**_ok("UsageResponse", "The aggregate"), **_problem_responses(400, 401, 404, 503)},
            }
        },
        "/usage/{tenant_id}/{metric}/history": {
            "get": {
                "summary": "Usage in hour, day or period buckets, empty buckets included",
                "operationId": "getUsageHistory",
                "parameters": [
                    *_path_parameters(catalog.names),
                    _query("start", "First day (tenant's time zone)", True, type="string", format="date"),
                    _query("end", "Last day, inclusive", True, type="string", format="date"),
                    _query("granularity", "Bucket size", type="string", enum=["hour", "day", "period"], default="day"),
                ],
                "responses": {**_ok("HistoryResponse", "The buckets"), **_problem_responses(400, 401, 404, 503)},
            }
        },
        "/quota/{tenant_id}/{metric}": {
            "get": {
                "summary": "May the tenant use `requested` more in its current period?",
                "operationId": "checkQuota",
                "parameters": [
                    *_path_parameters(catalog.names),
                    _query("requested", "Amount to add (decimal)", type="string"),
                ],
                "responses": {**_ok("QuotaDecision", "The decision"), **_problem_responses(400, 401, 404, 503)},
            }
        },
        "/events/{tenant_id}/cancel": {
            "post": {
                "summary": "Cancel a counted event of a sum or count meter in its open period (idempotent)",
                "operationId": "cancelEvent",
                "parameters": [_tenant_parameter()],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("CancelRequest")}},
                },
                "responses": {
                    **_ok("CancelResult", "Cancelled (a repeat returns the same result)"),
                    **_problem_responses(400, 401, 404, 409, 422, 503),
                },
            }
        },
        "/statements/{tenant_id}": {
            "get": {
                "summary": "The statement of a closed period (or all of them); CSV with Accept: text/csv",
                "operationId": "getStatements",
                "parameters": [
                    _tenant_parameter(),
                    _query("period", "Start date of the closed period", type="string", format="date"),
                ],
                "responses": {
                    "200": {
                        "description": "A Statement with period, a StatementList without",
                        "content": {
                            "application/json": {"schema": {"oneOf": [_ref("Statement"), _ref("StatementList")]}},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    **_problem_responses(400, 401, 404, 503),
                },
            }
        },
        "/invoices/{tenant_id}/preview": {
            "get": {
                "summary": "The open period rated as if it closed now, with a forecast to its end (CSV with "
                "Accept: text/csv)",
                "operationId": "previewInvoice",
                "parameters": [_tenant_parameter()],
                "responses": {
                    "200": {
                        "description": "The preview; `forecast` is null in the period's first 24 hours",
                        "content": {
                            "application/json": {"schema": _ref("InvoicePreview")},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    **_problem_responses(400, 401, 503),
                },
            }
        },
        "/late-events/{tenant_id}": {
            "get": {
                "summary": "Events that arrived for an already closed period",
                "operationId": "getLateEvents",
                "parameters": [_tenant_parameter()],
                "responses": {**_ok("LateEventList", "Oldest first"), **_problem_responses(400, 401, 503)},
            }
        },
        "/manage/tenants/{tenant_id}": {
            "get": {
                "summary": "A tenant's settings (admin key)",
                "operationId": "getTenant",
                "parameters": [_tenant_parameter()],
                "responses": {**_ok("TenantSettings", "The settings"), **_problem_responses(400, 401, 503)},
            },
            "put": {
                "summary": "Change a tenant's plan, limit overrides, billing anchor day or time zone (admin key)",
                "operationId": "setTenant",
                "parameters": [_tenant_parameter()],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("TenantUpdate")}},
                },
                "responses": {**_ok("TenantSettings", "The settings"), **_problem_responses(400, 401, 422, 503)},
            },
        },
        "/manage/periods/close": {
            "post": {
                "summary": "Close every due period now (admin key); the timer does this on its schedule",
                "operationId": "closePeriods",
                "responses": {**_ok("CloseResponse", "What closed"), **_problem_responses(401, 503)},
            }
        },
        "/manage/health": {
            "get": {
                "summary": "Hub partitions with their applied positions and lag, and the records waiting for an "
                "operator (admin key)",
                "operationId": "getHealth",
                "responses": {**_ok("Health", "The report"), **_problem_responses(401, 503)},
            }
        },
        "/manage/webhooks": {
            "get": {
                "summary": "Webhook deliveries, failed (given up on) or pending, in id order, a page at a time "
                "(admin key)",
                "operationId": "listWebhookDeliveries",
                "parameters": [
                    _query("status", "Which ones", type="string", enum=["failed", "pending"], default="failed"),
                    _query("limit", "Page size", type="integer", minimum=1, maximum=MAX_PAGE, default=100),
                    _query("after", "The `next` of the previous page"),
                ],
                "responses": {
                    **_ok("WebhookDeliveryList", "A page of deliveries"),
                    **_problem_responses(400, 401, 503),
                },
            }
        },
        "/manage/webhooks/{id}/redrive": {
            "post": {
                "summary": "Deliver a failed webhook again: pending, due now, attempts reset (admin key; "
                "idempotent: a pending one is left as it is)",
                "operationId": "redriveWebhookDelivery",
                "parameters": [
                    {
                        "name": "id",
                        "in": "path",
                        "required": True,
                        "description": "The delivery's id (the notification's id, its webhook-id)",
                        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,512}$"},
                    }
                ],
                "responses": {
                    **_ok("WebhookRedrive", "Pending (again, or still)"),
                    **_problem_responses(400, 401, 404, 503),
                },
            }
        },
        "/manage/exports/run": {
            "post": {
                "summary": "Send usage to the billing targets now (admin key); the export timer does this on its "
                "schedule",
                "operationId": "runExports",
                "responses": {**_ok("ExportRunResponse", "What the run did"), **_problem_responses(401, 503)},
            }
        },
        "/manage/exports/{tenant_id}": {
            "get": {
                "summary": "A tenant's period reconciled with each billing target: per metric our figure, what "
                "was sent and acknowledged, the difference and its reasons (admin key)",
                "operationId": "reconcileExports",
                "parameters": [
                    _tenant_parameter(),
                    _query("period", "Start date of another period", format="date", type="string"),
                ],
                "responses": {
                    **_ok("ExportReconciliation", "The reconciliation"),
                    **_problem_responses(400, 401, 503),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "getOpenApi",
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
            }
        },
    }


_PORTAL_401 = {
    401: "No portal token in `Authorization: Bearer`, or one that is expired, revoked (the tenant's "
    "tokens_not_before), altered, signed with another key, or for another tenant",
    404: "Unknown meter or statement, or the deployment has no portal (METERING_PORTAL_SECRET unset)",
}
# Each portal data route answers as the route it mirrors, for the tenant its token opens.
_PORTAL_MIRRORS = {
    "/portal/{tenant_id}/data/usage/{metric}": ("/usage/{tenant_id}/{metric}", "getPortalUsage"),
    "/portal/{tenant_id}/data/usage/{metric}/history": ("/usage/{tenant_id}/{metric}/history", "getPortalHistory"),
    "/portal/{tenant_id}/data/quota/{metric}": ("/quota/{tenant_id}/{metric}", "getPortalQuota"),
    "/portal/{tenant_id}/data/invoices/preview": ("/invoices/{tenant_id}/preview", "getPortalInvoicePreview"),
    "/portal/{tenant_id}/data/statements": ("/statements/{tenant_id}", "getPortalStatements"),
}


def _portal_paths() -> dict[str, Any]:
    html = {"text/html": {"schema": {"type": "string"}}}
    return {
        "/portal/{tenant_id}": {
            "get": {
                "summary": "The tenant's usage page, to embed in an iframe (no key: the page reads its data with the "
                "portal token of its URL fragment, #token=...)",
                "operationId": "getPortalPage",
                "security": [],
                "parameters": [_tenant_parameter()],
                "responses": {
                    "200": {"description": "The page (no data in it)", "content": html},
                    **_problem_responses(400, 404, 503, reasons_here=_PORTAL_401),
                },
            }
        },
        "/assets/{name}": {
            "get": {
                "summary": "A script, stylesheet or icon of the pages (cached for good under its ?v= version)",
                "operationId": "getWebAsset",
                "security": [],
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                    _query("v", "The asset's version, as the page names it"),
                ],
                "responses": {"200": {"description": "The asset"}, **_problem_responses(404)},
            }
        },
        "/portal/{tenant_id}/data/overview": {
            "get": {
                "summary": "What the portal page starts from: the billing period and the two before it, the meters "
                "used this period, the plan and whether it prices them (portal token)",
                "operationId": "getPortalOverview",
                "security": [{"portalToken": []}],
                "parameters": [_tenant_parameter()],
                "responses": {
                    **_ok("PortalOverview", "The overview"),
                    **_problem_responses(400, 401, 404, 503, reasons_here=_PORTAL_401),
                },
            }
        },
        "/manage/portal-tokens": {
            "post": {
                "summary": "Mint a portal token for a tenant, and the page URL that carries it (admin key)",
                "operationId": "mintPortalToken",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("MintRequest")}}},
                "responses": {
                    **_ok("MintedPortalToken", "The token, its page URL and when it expires"),
                    **_problem_responses(400, 401, 404, 422, 503, reasons_here={404: "The deployment has no portal"}),
                },
            }
        },
    }


def _portal_data_paths(paths: dict[str, Any]) -> dict[str, Any]:
    mirrored: dict[str, Any] = {}
    for path, (source, operation_id) in _PORTAL_MIRRORS.items():
        operation = dict(paths[source]["get"])
        statuses = sorted({*map(int, (k for k in operation["responses"] if k != "200")), 401, 404})
        mirrored[path] = {
            "get": {
                **operation,
                "summary": f"As GET {source}, for the tenant the portal token opens",
                "operationId": operation_id,
                "security": [{"portalToken": []}],
                "responses": {
                    "200": operation["responses"]["200"],
                    **_problem_responses(*statuses, reasons_here=_PORTAL_401),
                },
            }
        }
    return mirrored


class OpenApiRoute:
    def __init__(self, catalog: MeterCatalog) -> None:
        self.catalog = catalog

    @cached_property
    def _document(self) -> dict[str, Any]:
        return document(self.catalog)

    def __call__(self) -> Response:
        return ok(self._document)
