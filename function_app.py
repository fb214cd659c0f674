"""The Azure Functions app (Python v2 programming model): declarations and wiring only.

Each function hands its trigger input to `metering/` and returns the result; the logic, and everything a test
needs, lives there. Settings and catalogs are checked as the worker loads this module (never raising here: a
problem is logged, and every function answers or fails with it); services are built on first use.
"""

import logging

import azure.functions as func

from metering import configuration
from metering.api.operations import actor_of
from metering.bootstrap import services
from metering.ingest import consumer
from metering.triggers import http_function, http_response, hub_messages

configuration.verify()

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.function_name("ingest")
@app.route(route="events", methods=["POST"])
@http_function
def ingest(req: func.HttpRequest) -> func.HttpResponse:
    return http_response(services().http.ingest(req.get_body(), req.headers.get("content-type"), req.headers))


@app.function_name("cancel_event")
@app.route(route="events/{tenant_id}/cancel", methods=["POST"])
@http_function
def cancel_event(req: func.HttpRequest) -> func.HttpResponse:
    return http_response(services().http.billing.cancel(req.route_params["tenant_id"], req.get_body()))


@app.function_name("statements")
@app.route(route="statements/{tenant_id}", methods=["GET"])
@http_function
def statements(req: func.HttpRequest) -> func.HttpResponse:
    billing = services().http.billing
    return http_response(billing.statement(req.route_params["tenant_id"], req.params, req.headers.get("accept")))


@app.function_name("invoice_preview")
@app.route(route="invoices/{tenant_id}/preview", methods=["GET"])
@http_function
def invoice_preview(req: func.HttpRequest) -> func.HttpResponse:
    invoices = services().http.invoices
    return http_response(invoices.preview(req.route_params["tenant_id"], req.headers.get("accept")))


@app.function_name("late_events")
@app.route(route="late-events/{tenant_id}", methods=["GET"])
@http_function
def late_events(req: func.HttpRequest) -> func.HttpResponse:
    return http_response(services().http.billing.late_events(req.route_params["tenant_id"]))


# Operator routes: the master key in Azure, METERING_ADMIN_KEY under the dev host. (The host reserves routes
# and function names starting with "admin", hence "manage".)
@app.function_name("manage_tenant")
@app.route(route="manage/tenants/{tenant_id}", methods=["GET", "PUT"], auth_level=func.AuthLevel.ADMIN)
@http_function
def manage_tenant(req: func.HttpRequest) -> func.HttpResponse:
    manage = services().http.manage
    tenant_id = req.route_params["tenant_id"]
    if req.method == "PUT":
        return http_response(manage.put_tenant(tenant_id, req.get_body()))
    return http_response(manage.get_tenant(tenant_id))


@app.function_name("manage_close_periods")
@app.route(route="manage/periods/close", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
@http_function
def manage_close_periods(req: func.HttpRequest) -> func.HttpResponse:
    return http_response(services().http.manage.close_periods())


@app.function_name("manage_health")
@app.route(route="manage/health", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
@http_function
def manage_health(req: func.HttpRequest) -> func.HttpResponse:
    return http_response(services().http.health.report())


@app.function_name("manage_webhooks")
@app.route(route="manage/webhooks", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
@http_function
def manage_webhooks(req: func.HttpRequest) -> func.HttpResponse:
    return http_response(services().http.webhooks.list(req.params))


@app.function_name("manage_webhook_redrive")
@app.route(route="manage/webhooks/{id}/redrive", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
@http_function
def manage_webhook_redrive(req: func.HttpRequest) -> func.HttpResponse:
    return http_response(services().http.webhooks.redrive(req.route_params["id"], actor_of(req.headers)))


@app.function_name("manage_late_events")
@app.route(route="manage/late-events", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
@http_function
def manage_late_events(req: func.HttpRequest) -> func.HttpResponse:
    return http_response(services().http.operations.late_events(req.params))


@app.function_name("manage_late_event_apply")
@app.route(route="manage/late-events/{tenant_id}/{id}/apply", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
@http_function
def manage_late_event_apply(req: func.HttpRequest) -> func.HttpResponse:
    params = req.route_params
    return http_response(services().http.operations.late_apply(params["tenant_id"], params["id"], req.headers))


@app.function_name("manage_late_event_discard")
@app.route(route="manage/late-events/{tenant_id}/{id}/discard", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
@http_function
def manage_late_event_discard(req: func.HttpRequest) -> func.HttpResponse:
    params = req.route_params
    operations = services().http.operations
    return http_response(operations.late_discard(params["tenant_id"], params["id"], req.get_body(), req.headers))


@app.function_name("manage_dead_letters")
@app.route(route="manage/dead-letters", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
@http_function
def manage_dead_letters(req: func.HttpRequest) -> func.HttpResponse:
    return http_response(services().http.operations.dead_letter_list(req.params))


@app.function_name("manage_dead_letter_redrive")
@app.route(route="manage/dead-letters/{id}/redrive", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
@http_function
def manage_dead_letter_redrive(req: func.HttpRequest) -> func.HttpResponse:
    return http_response(services().http.operations.dead_letter_redrive(req.route_params["id"], req.headers))


@app.function_name("manage_conflicts")
@app.route(route="manage/conflicts", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
@http_function
def manage_conflicts(req: func.HttpRequest) -> func.HttpResponse:
    return http_response(services().http.operations.conflict_list(req.params))


@app.function_name("console_page")
@app.route(route="console", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@http_function
def console_page(req: func.HttpRequest) -> func.HttpResponse:
    # A shell without data: every figure it shows comes from admin routes called with the operator's key.
    return http_response(services().http.console.page())


@app.function_name("manage_console_tenants")
@app.route(route="manage/console/tenants", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
@http_function
def manage_console_tenants(req: func.HttpRequest) -> func.HttpResponse:
    return http_response(services().http.console.tenants(req.params))


@app.function_name("manage_alerts")
@app.route(route="manage/alerts", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
@http_function
def manage_alerts(req: func.HttpRequest) -> func.HttpResponse:
    return http_response(services().http.operations.alert_list(req.params))


@app.function_name("manage_journal")
@app.route(route="manage/journal", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
@http_function
def manage_journal(req: func.HttpRequest) -> func.HttpResponse:
    return http_response(services().http.operations.journal_list(req.params))


@app.function_name("manage_exports_run")
@app.route(route="manage/exports/run", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
@http_function
def manage_exports_run(req: func.HttpRequest) -> func.HttpResponse:
    return http_response(services().http.exports.run())


@app.function_name("manage_exports")
@app.route(route="manage/exports/{tenant_id}", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
@http_function
def manage_exports(req: func.HttpRequest) -> func.HttpResponse:
    return http_response(services().http.exports.reconcile(req.route_params["tenant_id"], req.params))


@app.function_name("usage")
@app.route(route="usage/{tenant_id}/{metric}", methods=["GET"])
@http_function
def usage(req: func.HttpRequest) -> func.HttpResponse:
    params = req.route_params
    return http_response(services().http.reads.usage(params["tenant_id"], params["metric"], req.params))


@app.function_name("usage_history")
@app.route(route="usage/{tenant_id}/{metric}/history", methods=["GET"])
@http_function
def usage_history(req: func.HttpRequest) -> func.HttpResponse:
    params = req.route_params
    return http_response(services().http.reads.history(params["tenant_id"], params["metric"], req.params))


@app.function_name("quota")
@app.route(route="quota/{tenant_id}/{metric}", methods=["GET"])
@http_function
def quota(req: func.HttpRequest) -> func.HttpResponse:
    params = req.route_params
    return http_response(services().http.reads.quota(params["tenant_id"], params["metric"], req.params))


@app.function_name("openapi")
@app.route(route="openapi.json", methods=["GET"])
@http_function
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    return http_response(services().http.openapi())


# The tenant portal: the page and its assets are anonymous; its data routes are anonymous to the host and
# authorised by the portal token in Authorization (metering/api/portal.py), which nothing logs.
@app.function_name("portal_page")
@app.route(route="portal/{tenant_id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@http_function
def portal_page(req: func.HttpRequest) -> func.HttpResponse:
    return http_response(services().http.portal.page(req.route_params["tenant_id"]))


@app.function_name("web_assets")
@app.route(route="assets/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@http_function
def web_assets(req: func.HttpRequest) -> func.HttpResponse:
    return http_response(services().http.portal.asset(req.route_params["name"], req.params))


@app.function_name("portal_overview")
@app.route(route="portal/{tenant_id}/data/overview", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@http_function
def portal_overview(req: func.HttpRequest) -> func.HttpResponse:
    portal = services().http.portal
    return http_response(portal.overview(req.route_params["tenant_id"], req.headers.get("authorization")))


@app.function_name("portal_usage")
@app.route(route="portal/{tenant_id}/data/usage/{metric}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@http_function
def portal_usage(req: func.HttpRequest) -> func.HttpResponse:
    params, portal = req.route_params, services().http.portal
    return http_response(
        portal.usage(params["tenant_id"], params["metric"], req.params, req.headers.get("authorization"))
    )


@app.function_name("portal_usage_history")
@app.route(route="portal/{tenant_id}/data/usage/{metric}/history", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@http_function
def portal_usage_history(req: func.HttpRequest) -> func.HttpResponse:
    params, portal = req.route_params, services().http.portal
    return http_response(
        portal.history(params["tenant_id"], params["metric"], req.params, req.headers.get("authorization"))
    )


@app.function_name("portal_quota")
@app.route(route="portal/{tenant_id}/data/quota/{metric}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@http_function
def portal_quota(req: func.HttpRequest) -> func.HttpResponse:
    params, portal = req.route_params, services().http.portal
    return http_response(
        portal.quota(params["tenant_id"], params["metric"], req.params, req.headers.get("authorization"))
    )


@app.function_name("portal_invoice_preview")
@app.route(route="portal/{tenant_id}/data/invoices/preview", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@http_function
def portal_invoice_preview(req: func.HttpRequest) -> func.HttpResponse:
    portal = services().http.portal
    return http_response(
        portal.preview(req.route_params["tenant_id"], req.headers.get("accept"), req.headers.get("authorization"))
    )


@app.function_name("portal_statements")
@app.route(route="portal/{tenant_id}/data/statements", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@http_function
def portal_statements(req: func.HttpRequest) -> func.HttpResponse:
    portal, headers = services().http.portal, req.headers
    return http_response(
        portal.statements(
            req.route_params["tenant_id"], req.params, headers.get("accept"), headers.get("authorization")
        )
    )


@app.function_name("manage_portal_tokens")
@app.route(route="manage/portal-tokens", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
@http_function
def manage_portal_tokens(req: func.HttpRequest) -> func.HttpResponse:
    return http_response(services().http.portal.mint(req.get_body(), req.url))


# The host checkpoints when this returns, failed or not, and holds the checkpoint only while the retry policy
# runs: so a store outage is retried until the store is back (backoff capped at a minute), never skipped.
@app.function_name("aggregate")
@app.retry(
    strategy="exponential_backoff", max_retry_count="-1", minimum_interval="00:00:01", maximum_interval="00:01:00"
)
@app.event_hub_message_trigger(
    arg_name="events",
    connection="EventHubConnection",
    event_hub_name="%EVENTHUB_NAME%",
    consumer_group="%EVENTHUB_CONSUMER_GROUP%",
    cardinality="many",
    data_type="binary",
)
def aggregate(events: list[func.EventHubEvent]) -> None:
    try:
        configuration.require()
        runtime = services()
        consumer.consume(hub_messages(events), runtime.ledger, runtime.dead_letters, runtime.clock, runtime.after_apply)
    except Exception:
        logging.exception("aggregate: batch of %d messages failed and will be retried (alert on this)", len(events))
        raise


@app.function_name("close_periods")
@app.timer_trigger(arg_name="timer", schedule="%CLOSE_PERIODS_SCHEDULE%")
def close_periods(timer: func.TimerRequest) -> None:
    configuration.require()
    services().closer.run()


# Webhook deliveries that are due (retries, and what the outbox's own kick did not finish); nothing to do
# without METERING_WEBHOOK_URL.
@app.function_name("deliver_webhooks")
@app.timer_trigger(arg_name="timer", schedule="%DELIVER_WEBHOOKS_SCHEDULE%")
def deliver_webhooks(timer: func.TimerRequest) -> None:
    configuration.require()
    dispatcher = services().webhook_dispatcher
    if dispatcher is not None:
        dispatcher.run()


# Usage sent to the billing targets (Stripe, the Azure Marketplace); nothing to do without one.
@app.function_name("export_usage")
@app.timer_trigger(arg_name="timer", schedule="%EXPORT_SCHEDULE%")
def export_usage(timer: func.TimerRequest) -> None:
    configuration.require()
    services().exporter.run()
