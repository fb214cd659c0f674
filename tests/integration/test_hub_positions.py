"""Hub positions are named by namespace, hub and partition: a hub whose sequence numbers start again at 0 (in a
failed-over namespace, or a hub redeployed under a new name) is a new partition, and its events count."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

import azure.functions as func
from azure.functions.meta import Datum

from metering.triggers import hub_messages
from tests.integration.test_consumer import NOW, event, pipeline  # noqa: F401 (the fixture)
from tests.support import wired


def hub_batch(
    namespace: str, hub: str, partition_id: str, bodies: list[dict], first_enqueued: datetime = NOW
) -> list[func.EventHubEvent]:
    """A batch as the Functions host hands it over: every event with the batch's trigger metadata."""
    context = {"FullyQualifiedNamespace": namespace, "EventHubName": hub, "PartitionId": partition_id}
    metadata = {"PartitionContext": Datum(json.dumps(context), "json")}
    return [
        func.EventHubEvent(
            body=json.dumps(item).encode(),
            trigger_metadata=metadata,
            enqueued_time=first_enqueued + timedelta(seconds=sequence),
            sequence_number=sequence,
        )
        for sequence, item in enumerate(bodies)
    ]


def test_the_same_sequence_numbers_of_another_namespace_are_new_events(pipeline):  # noqa: F811
    run, reader, store, _ = pipeline
    # Events of a direct producer without ids: their ids derive from the position they were read from.
    primary = hub_batch("ns-west.servicebus.windows.net", "usage", "0", [event(None, "2"), event(None, "3")])
    assert run(hub_messages(primary)).applied == 2
    # The namespace failed over: the secondary numbers the partition's sequences from 0 again.
    secondary = hub_batch("ns-east.servicebus.windows.net", "usage", "0", [event(None, "5"), event(None, "7")])
    report = run(hub_messages(secondary))
    assert (report.applied, report.duplicates) == (2, 0)
    assert str(reader.current("acme", "api.requests").total) == "17"
    # A redelivery of either batch is recognised by its own positions: nothing counts twice.
    assert run(hub_messages(primary)).applied == 0
    assert run(hub_messages(secondary)).applied == 0
    assert str(reader.current("acme", "api.requests").total) == "17"
    positions = wired(store).progress.positions()
    assert set(positions) == {"ns-west|usage|0", "ns-east|usage|0"}
    assert {p.sequence for p in positions.values()} == {1}


def test_a_hub_of_another_name_in_the_same_namespace_is_another_partition(pipeline):  # noqa: F811
    run, reader, _, _ = pipeline
    old = hub_batch("ns.servicebus.windows.net", "usage", "4", [event(None, "1")])
    new = hub_batch("ns.servicebus.windows.net", "usage-v2", "4", [event(None, "10")])
    assert run(hub_messages(old)).applied == 1
    assert run(hub_messages(new)).applied == 1
    assert str(reader.current("acme", "api.requests").total) == "11"


def test_sequence_numbers_that_start_again_in_one_partition_raise_an_alert(pipeline, caplog):  # noqa: F811
    # A hub deleted and recreated under the same name: positions cannot tell it apart, so it must be seen.
    run, _, _, _ = pipeline
    first = hub_batch("ns.servicebus.windows.net", "usage", "2", [event("a"), event("b"), event("c")])
    run(hub_messages(first))
    later = NOW + timedelta(hours=1)
    recreated = hub_batch("ns.servicebus.windows.net", "usage", "2", [event("x")], first_enqueued=later)
    with caplog.at_level(logging.ERROR, logger="metering.ledger.control"):
        run(hub_messages(recreated))
    [alert] = [r for r in caplog.records if r.name == "metering.ledger.control"]
    assert "ns|usage|2: sequence 0 was enqueued" in alert.getMessage()
    assert "started again" in alert.getMessage()
    # A plain redelivery of the first batch is no such thing.
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="metering.ledger.control"):
        run(hub_messages(first))
    assert not [r for r in caplog.records if r.name == "metering.ledger.control"]
