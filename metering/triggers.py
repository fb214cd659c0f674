"""Translating the Functions runtime's trigger objects to and from what `metering/` takes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import azure.functions as func

from metering.api.http import Response
from metering.consumer import HubMessage
from metering.control import hub_partition


def http_response(response: Response) -> func.HttpResponse:
    return func.HttpResponse(
        response.body, status_code=response.status, headers=dict(response.headers), mimetype=response.content_type
    )


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
