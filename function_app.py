"""The Azure Functions app (Python v2 programming model): declarations and wiring only.

Each function hands its trigger input to `metering/` and returns the result; the logic, and everything a test
needs, lives there. Settings are read on first use, not at import.
"""

import logging
from datetime import UTC, datetime

import azure.functions as func

from metering import closing, consumer
from metering.api.http import ok
from metering.api.openapi import document
from metering.bootstrap import services
from metering.triggers import http_response, hub_messages

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.function_name("ingest")
@app.route(route="events", methods=["POST"])
def ingest(req: func.HttpRequest) -> func.HttpResponse:
    return http_response(services().ingest(req.get_body(), req.headers.get("content-type")))


@app.function_name("usage")
@app.route(route="usage/{tenant_id}/{metric}", methods=["GET"])
def usage(req: func.HttpRequest) -> func.HttpResponse:
    params = req.route_params
    return http_response(services().reads.usage(params["tenant_id"], params["metric"], req.params))


@app.function_name("usage_history")
@app.route(route="usage/{tenant_id}/{metric}/history", methods=["GET"])
def usage_history(req: func.HttpRequest) -> func.HttpResponse:
    params = req.route_params
    return http_response(services().reads.history(params["tenant_id"], params["metric"], req.params))


@app.function_name("quota")
@app.route(route="quota/{tenant_id}/{metric}", methods=["GET"])
def quota(req: func.HttpRequest) -> func.HttpResponse:
    params = req.route_params
    return http_response(services().reads.quota(params["tenant_id"], params["metric"], req.params))


@app.function_name("openapi")
@app.route(route="openapi.json", methods=["GET"])
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    return http_response(ok(document()))


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
    runtime = services()
    try:
        consumer.consume(hub_messages(events), runtime.ledger, runtime.dead_letters, runtime.clock)
    except Exception:
        logging.exception("aggregate: batch of %d messages failed and will be retried (alert on this)", len(events))
        raise


@app.function_name("close_periods")
@app.timer_trigger(arg_name="timer", schedule="%CLOSE_PERIODS_SCHEDULE%")
def close_periods(timer: func.TimerRequest) -> None:
    closing.close_due_periods(datetime.now(UTC))
