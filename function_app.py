"""The Azure Functions app (Python v2 programming model): declarations and wiring only.

Each function hands its trigger input to `metering/` and returns the result; the logic, and everything a test
needs, lives there. Settings and catalogs are checked as the worker loads this module (never raising here: a
problem is logged, and every function answers or fails with it); services are built on first use.
"""

import logging

import azure.functions as func

from metering import configuration
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
    return http_response(services().http.webhooks.redrive(req.route_params["id"]))


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
