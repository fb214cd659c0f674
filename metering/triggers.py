"""Translating the Functions runtime's trigger objects to and from what `metering/` takes."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import azure.functions as func

from metering import configuration
from metering.api.http import OUTAGES, Response, unavailable
from metering.core.hub import hub_partition
from metering.ingest.consumer import HubMessage

log = logging.getLogger(__name__)


def http_response(response: Response) -> func.HttpResponse:
    return func.HttpResponse(
        response.body, status_code=response.status, headers=dict(response.headers), mimetype=response.content_type
    )


HttpFunction = Callable[[func.HttpRequest], func.HttpResponse]


def http_function(handler: HttpFunction) -> HttpFunction:
    """An HTTP function that answers 503 with Retry-After and a problem body, never a bare 500, when the app's
    configuration was found wrong at load (configuration.py: the body says what is wrong) or when a store or
    transport it needs is unavailable (the exception is logged with its traceback). Other exceptions are bugs
    and propagate: the host answers them 500."""

    @functools.wraps(handler)
    def guarded(req: func.HttpRequest) -> func.HttpResponse:
        found = configuration.problem()
        if found is not None:
            return http_response(unavailable(f"the app is not configured correctly: {found}", retry_after=60))
        try:
            return handler(req)
        except OUTAGES as error:
            log.exception("%s: a store or transport is unavailable; answered 503", handler.__name__)
            return http_response(unavailable(f"a store or transport is unavailable ({type(error).__name__})"))

    return guarded


def hub_messages(events: Sequence[func.EventHubEvent]) -> list[HubMessage]:
    """The batch as messages with their hub positions. With cardinality=many, every event carries the batch's
    trigger metadata, whose PartitionContext (Event Hubs extension 5.x) names the namespace, hub and partition."""
    partition = _partition(events[0].metadata) if events else None
    return [
        HubMessage(
            body=event.get_body(),
            partition=partition,
            sequence=event.sequence_number,
            enqueued=event.enqueued_time,
        )
        for event in events
    ]


def _partition(metadata: Any) -> str | None:
    context = (metadata or {}).get("PartitionContext")
    if isinstance(context, str):
        context = json.loads(context)
    if not isinstance(context, dict) or context.get("PartitionId") is None:
        return None
    return hub_partition(
        str(context.get("FullyQualifiedNamespace") or ""),
        str(context.get("EventHubName") or ""),
        str(context["PartitionId"]),
    )
