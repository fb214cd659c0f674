"""The Functions runtime's trigger objects as `metering/` takes them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import azure.functions as func
import pytest
from azure.functions.meta import Datum

from metering.triggers import hub_messages

ENQUEUED = datetime(2026, 11, 24, 12, tzinfo=UTC)


def events(metadata: dict | None) -> list[func.EventHubEvent]:
    return [
        func.EventHubEvent(body=b"{}", trigger_metadata=metadata, enqueued_time=ENQUEUED, sequence_number=n)
        for n in (41, 42)
    ]


def test_a_batch_is_named_by_namespace_hub_and_partition_from_its_partition_context():
    # The Event Hubs extension 5.x passes PartitionContext as JSON in the trigger metadata.
    context = {
        "FullyQualifiedNamespace": "Metering-Prod.servicebus.windows.net",
        "EventHubName": "usage",
        "ConsumerGroup": "aggregator",
        "PartitionId": "7",
    }
    messages = hub_messages(events({"PartitionContext": Datum(json.dumps(context), "json")}))
    assert [(m.partition, m.sequence, m.enqueued) for m in messages] == [
        ("metering-prod|usage|7", 41, ENQUEUED),
        ("metering-prod|usage|7", 42, ENQUEUED),
    ]


def test_partition_context_given_as_text_is_read_too():
    context = json.dumps({"FullyQualifiedNamespace": "ns.servicebus.windows.net", "EventHubName": "usage",
                          "PartitionId": 3})  # fmt: skip
    [first, _] = hub_messages(events({"PartitionContext": Datum(context, "string")}))
    assert first.partition == "ns|usage|3"


@pytest.mark.parametrize("metadata", [None, {}, {"PartitionContext": Datum(json.dumps({"EventHubName": "u"}), "json")}])
def test_without_a_partition_the_batch_has_no_positions(metadata):
    assert {m.partition for m in hub_messages(events(metadata))} == {None}
