"""The app's bindings, as the Functions host reads them from function_app.py."""

from __future__ import annotations

import json
from typing import Any

from metering.devhost.host import discover


def functions() -> dict[str, Any]:
    return {f.get_function_name(): f for f in discover("function_app")}


def trigger(name: str) -> dict[str, Any]:
    bindings = json.loads(functions()[name].get_function_json())["bindings"]
    return next(b for b in bindings if b["type"].endswith("Trigger"))


def test_http_routes_methods_and_auth_levels():
    routes = {
        name: (t["route"], t["methods"], t["authLevel"])
        for name in functions()
        if (t := trigger(name))["type"] == "httpTrigger"
    }
    assert routes == {
        "ingest": ("events", ["POST"], "FUNCTION"),
        "usage": ("usage/{tenant_id}/{metric}", ["GET"], "FUNCTION"),
        "usage_history": ("usage/{tenant_id}/{metric}/history", ["GET"], "FUNCTION"),
        "quota": ("quota/{tenant_id}/{metric}", ["GET"], "FUNCTION"),
        "openapi": ("openapi.json", ["GET"], "FUNCTION"),
        "cancel_event": ("events/{tenant_id}/cancel", ["POST"], "FUNCTION"),
        "statements": ("statements/{tenant_id}", ["GET"], "FUNCTION"),
        "late_events": ("late-events/{tenant_id}", ["GET"], "FUNCTION"),
        "invoice_preview": ("invoices/{tenant_id}/preview", ["GET"], "FUNCTION"),
        # Operator routes take the admin (master) key only.
        "manage_tenant": ("manage/tenants/{tenant_id}", ["GET", "PUT"], "ADMIN"),
        "manage_close_periods": ("manage/periods/close", ["POST"], "ADMIN"),
        "manage_health": ("manage/health", ["GET"], "ADMIN"),
        "manage_webhooks": ("manage/webhooks", ["GET"], "ADMIN"),
        "manage_webhook_redrive": ("manage/webhooks/{id}/redrive", ["POST"], "ADMIN"),
        "manage_late_events": ("manage/late-events", ["GET"], "ADMIN"),
        "manage_late_event_apply": ("manage/late-events/{tenant_id}/{id}/apply", ["POST"], "ADMIN"),
        "manage_late_event_discard": ("manage/late-events/{tenant_id}/{id}/discard", ["POST"], "ADMIN"),
        "manage_dead_letters": ("manage/dead-letters", ["GET"], "ADMIN"),
        "manage_dead_letter_redrive": ("manage/dead-letters/{id}/redrive", ["POST"], "ADMIN"),
        "manage_conflicts": ("manage/conflicts", ["GET"], "ADMIN"),
        "manage_journal": ("manage/journal", ["GET"], "ADMIN"),
        "manage_alerts": ("manage/alerts", ["GET"], "ADMIN"),
        "manage_console_tenants": ("manage/console/tenants", ["GET"], "ADMIN"),
        "console_page": ("console", ["GET"], "ANONYMOUS"),
        "manage_portal_tokens": ("manage/portal-tokens", ["POST"], "ADMIN"),
        # The portal: the page and its assets need no key; its data routes take a portal token instead.
        "portal_page": ("portal/{tenant_id}", ["GET"], "ANONYMOUS"),
        "web_assets": ("assets/{name}", ["GET"], "ANONYMOUS"),
        "portal_overview": ("portal/{tenant_id}/data/overview", ["GET"], "ANONYMOUS"),
        "portal_usage": ("portal/{tenant_id}/data/usage/{metric}", ["GET"], "ANONYMOUS"),
        "portal_usage_history": ("portal/{tenant_id}/data/usage/{metric}/history", ["GET"], "ANONYMOUS"),
        "portal_quota": ("portal/{tenant_id}/data/quota/{metric}", ["GET"], "ANONYMOUS"),
        "portal_invoice_preview": ("portal/{tenant_id}/data/invoices/preview", ["GET"], "ANONYMOUS"),
        "portal_statements": ("portal/{tenant_id}/data/statements", ["GET"], "ANONYMOUS"),
        "manage_exports_run": ("manage/exports/run", ["POST"], "ADMIN"),
        "manage_exports": ("manage/exports/{tenant_id}", ["GET"], "ADMIN"),
    }
    # The host reserves routes and function names that start with "admin".
    assert not any(name.startswith("admin") or route.startswith("admin") for name, (route, _, _) in routes.items())


def test_event_hub_trigger_reads_batches_from_settings_and_retries_forever():
    hub = trigger("aggregate")
    assert hub["type"] == "eventHubTrigger"
    assert hub["cardinality"] == "MANY"
    assert hub["connection"] == "EventHubConnection"
    assert hub["eventHubName"] == "%EVENTHUB_NAME%"
    assert hub["consumerGroup"] == "%EVENTHUB_CONSUMER_GROUP%"
    retry = functions()["aggregate"].get_setting("retry_policy").get_dict_repr()
    assert retry["strategy"] == "exponential_backoff"
    assert retry["max_retry_count"] == "-1"
    assert retry["maximum_interval"] == "00:01:00"


def test_close_periods_timer_takes_its_schedule_from_a_setting():
    timer = trigger("close_periods")
    assert (timer["type"], timer["schedule"]) == ("timerTrigger", "%CLOSE_PERIODS_SCHEDULE%")


def test_webhook_deliveries_timer_takes_its_schedule_from_a_setting():
    timer = trigger("deliver_webhooks")
    assert (timer["type"], timer["schedule"]) == ("timerTrigger", "%DELIVER_WEBHOOKS_SCHEDULE%")


def test_export_timer_takes_its_schedule_from_a_setting():
    timer = trigger("export_usage")
    assert (timer["type"], timer["schedule"]) == ("timerTrigger", "%EXPORT_SCHEDULE%")


def test_host_json_event_hub_batches_and_bundle(project_root):
    host = json.loads((project_root / "host.json").read_text())
    hubs = host["extensions"]["eventHubs"]
    assert hubs["maxEventBatchSize"] == 100
    assert hubs["prefetchCount"] >= hubs["maxEventBatchSize"]
    assert hubs["batchCheckpointFrequency"] == 1
    assert host["extensionBundle"]["version"] == "[4.*, 5.0.0)"
