"""The Event Hubs backlog at its SDK boundary (no Event Hub runs here): positions are looked up under the names
the trigger gives partitions, and the lag of a partition is bounded by its newest applied message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from metering.core.hub import NOTHING_APPLIED, Applied
from metering.transport.eventhub import EventHubBacklog

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
NAMESPACE = "metering-prod.servicebus.windows.net"
NAME = "metering-prod"  # how positions name the namespace


class FakeConsumer:
    """What `EventHubConsumerClient` answers about a hub's partitions."""

    def __init__(self, partitions: dict[str, dict[str, Any]]) -> None:
        self.partitions = partitions
        self.closed = False

    def get_partition_ids(self) -> list[str]:
        return list(self.partitions)

    def get_partition_properties(self, partition: str) -> dict[str, Any]:
        return self.partitions[partition]

    def close(self) -> None:
        self.closed = True


def partition(last: int | None, last_enqueued: datetime | None = None) -> dict[str, Any]:
    return {"is_empty": last is None, "last_enqueued_sequence_number": last if last is not None else -1,
            "last_enqueued_time_utc": last_enqueued}  # fmt: skip


def backlog(consumer: FakeConsumer) -> EventHubBacklog:
    return EventHubBacklog(lambda: consumer, NAMESPACE, "usage")


def applied(partition_id: str, sequence: int, enqueued: datetime) -> tuple[str, Applied]:
    name = f"{NAME}|usage|{partition_id}"
    return name, Applied(name, sequence, enqueued)


def test_the_connection_string_names_the_namespace_as_the_trigger_does():
    hub = EventHubBacklog.from_connection_string(
        "Endpoint=sb://Metering-Prod.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=a2V5",
        "usage",
        "aggregator",
    )
    assert hub.partition_name("3") == f"{NAME}|usage|3"


def test_positions_are_found_under_their_qualified_names_only():
    consumer = FakeConsumer({"0": partition(9), "1": partition(5)})
    positions = dict([applied("0", 9, NOW - timedelta(minutes=5)), applied("1", 3, NOW - timedelta(minutes=9))])
    assert backlog(consumer).applied_through(positions, NOW) == NOW - timedelta(minutes=9)
    assert consumer.closed
    # Positions under bare partition ids (before they were qualified) are another hub's, not this one's.
    bare = {"0": Applied("0", 9, NOW), "1": Applied("1", 5, NOW)}
    assert backlog(FakeConsumer({"0": partition(9), "1": partition(5)})).applied_through(bare, NOW) == NOTHING_APPLIED


def test_the_lag_of_a_partition_is_the_age_of_its_newest_applied_message_while_events_wait():
    consumer = FakeConsumer(
        {
            "0": partition(9),  # applied through its last event
            "1": partition(12),  # three events wait behind sequence 9
            "2": partition(None),  # empty
            "3": partition(4, last_enqueued=NOW - timedelta(seconds=30)),  # nothing applied yet
        }
    )
    positions = dict([applied("0", 9, NOW - timedelta(hours=1)), applied("1", 9, NOW - timedelta(seconds=42.5))])
    assert backlog(consumer).lag(positions, NOW) == {
        f"{NAME}|usage|0": 0.0,
        f"{NAME}|usage|1": 42.5,
        f"{NAME}|usage|2": 0.0,
        f"{NAME}|usage|3": 30.0,
    }
    assert consumer.closed
