"""Publishing to Azure Event Hubs with the SDK producer.

One producer per process, created on first use and reused by every invocation (opening an AMQP connection
costs far more than sending). Messages go into size-aware batches, one partition key per batch, as many
batches as the size limit needs; the call returns only when every batch was sent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient, parse_connection_string
from azure.eventhub.exceptions import EventHubError

from metering.core.hub import NOTHING_APPLIED, Applied, hub_partition
from metering.transport import Message, PublishError


class EventHubPublisher:
    def __init__(self, factory: Callable[[], EventHubProducerClient]) -> None:
        self._factory = factory
        self._producer: EventHubProducerClient | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_connection_string(cls, connection: str, hub: str) -> EventHubPublisher:
        return cls(lambda: EventHubProducerClient.from_connection_string(connection, eventhub_name=hub))

    @classmethod
    def from_namespace(cls, namespace: str, hub: str, credential: Any) -> EventHubPublisher:
        return cls(lambda: EventHubProducerClient(namespace, hub, credential))

    @property
    def producer(self) -> EventHubProducerClient:
        with self._lock:
            if self._producer is None:
                self._producer = self._factory()
            return self._producer

    def publish(self, messages: Sequence[Message]) -> None:
        by_key: dict[str, list[Message]] = {}
        for message in messages:
            by_key.setdefault(message.partition_key, []).append(message)
        producer = self.producer
        try:
            for key, group in by_key.items():
                batch = producer.create_batch(partition_key=key)
                for message in group:
                    data = EventData(message.body)
                    data.content_type = "application/json"
                    try:
                        batch.add(data)
                    except ValueError:  # the batch is full: send it and start the next
                        producer.send_batch(batch)
                        batch = producer.create_batch(partition_key=key)
                        batch.add(data)
                producer.send_batch(batch)
        except (EventHubError, OSError) as error:
            raise PublishError(f"Event Hubs did not accept the events: {error}") from error

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close()
                self._producer = None


class EventHubBacklog:
    """The instant up to which every hub partition's events are applied: a partition is read in order, so it
    is applied up to the enqueued time of the newest message the aggregator applied, or entirely when that was
    its last message (or it is empty). Positions are looked up by the names the trigger gives partitions
    (`<namespace>|<hub>|<partition id>`, control.hub_partition)."""

    def __init__(self, factory: Callable[[], EventHubConsumerClient], namespace: str, hub: str) -> None:
        self._factory = factory
        self.namespace = namespace
        self.hub = hub

    @classmethod
    def from_connection_string(cls, connection: str, hub: str, consumer_group: str) -> EventHubBacklog:
        namespace = parse_connection_string(connection).fully_qualified_namespace
        return cls(
            lambda: EventHubConsumerClient.from_connection_string(
                connection, consumer_group=consumer_group, eventhub_name=hub
            ),
            namespace,
            hub,
        )

    @classmethod
    def from_namespace(cls, namespace: str, hub: str, consumer_group: str, credential: Any) -> EventHubBacklog:
        return cls(lambda: EventHubConsumerClient(namespace, hub, consumer_group, credential), namespace, hub)

    def partition_name(self, partition_id: str) -> str:
        return hub_partition(self.namespace, self.hub, partition_id)

    def applied_through(self, applied: Mapping[str, Applied], now: datetime) -> datetime:
        client = self._factory()
        through = now
        try:
            for partition in client.get_partition_ids():
                properties = client.get_partition_properties(partition)
                if properties["is_empty"]:
                    continue
                position = applied.get(self.partition_name(str(partition)))
                if position is None:
                    return NOTHING_APPLIED
                if position.sequence < properties["last_enqueued_sequence_number"]:
                    through = min(through, position.enqueued)
            return through
        finally:
            client.close()

    def lag(self, applied: Mapping[str, Applied], now: datetime) -> dict[str, float]:
        """Bounded from above: a partition is read in order, so its oldest waiting event was enqueued after the
        newest applied one, whose enqueued time the position keeps. The hub tells the last sequence number of a
        partition, not when each event came: with nothing applied yet, the age of its newest event is given
        (a lower bound)."""
        client = self._factory()
        lags: dict[str, float] = {}
        try:
            for partition in client.get_partition_ids():
                name = self.partition_name(str(partition))
                properties = client.get_partition_properties(partition)
                position = applied.get(name)
                if properties["is_empty"] or (
                    position is not None and position.sequence >= properties["last_enqueued_sequence_number"]
                ):
                    lags[name] = 0.0
                    continue
                since = position.enqueued if position is not None else properties["last_enqueued_time_utc"]
                lags[name] = max((now - since).total_seconds(), 0.0)
            return lags
        finally:
            client.close()
