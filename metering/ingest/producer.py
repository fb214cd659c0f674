"""`EventHubUsageProducer`: Python producers writing usage straight to the Event Hub the aggregator reads.

It applies ingest's rules before anything leaves the process (the model, the meter catalog, the timestamp window),
because the hub accepts anything and the aggregator can only dead-letter what breaks them. Events get their id and
timestamp first, so a failed send can be retried with the same events (`SendFailed.events`) and is counted once.
Messages are packed as ingest packs them (transport/: JSON arrays of one tenant, under 64 KB each, partition key =
tenant id, or `<tenant>|<shard>` for a tenant given several shards: `partition_key`) and sent in size-aware
batches by the same publisher ingest uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

from azure.eventhub import EventHubProducerClient

from metering.client.errors import InvalidEvent
from metering.client.recording import QuantityLike, new_event, stamped
from metering.core.events import UsageEvent, validate_events
from metering.core.meters import MeterCatalog, load_catalog
from metering.ledger.routing import hub_key
from metering.transport import EVENT_HUB_MESSAGE_BYTES, PublishError, pack
from metering.transport.eventhub import EventHubPublisher

MAX_EVENT_AGE = timedelta(days=35)
MAX_FUTURE = timedelta(minutes=5)


def partition_key(event: UsageEvent, shards: int = 1, catalog: MeterCatalog | None = None) -> str:
    """The partition key ingest gives an event of a period of `shards` shards (the tenant's setting `shards`):
    the tenant id with one shard, else `<tenant>|<s>`, s the shard that applies it. Another key loses nothing and
    counts nothing twice (the aggregator places every event itself); it only spreads a hot tenant less well."""
    return hub_key(event, shards, catalog or load_catalog())


class SendFailed(PublishError):
    """The hub did not accept every message; some may have been. `events` are the events with their ids
    fixed: send exactly these again (`producer.send(error.events)`), and none is counted twice."""

    def __init__(self, message: str, events: list[UsageEvent]) -> None:
        super().__init__(message)
        self.events = events


class EventHubUsageProducer:
    def __init__(
        self,
        producer: EventHubProducerClient,
        *,
        catalog: MeterCatalog | None = None,
        max_message_bytes: int = EVENT_HUB_MESSAGE_BYTES,
        max_age: timedelta = MAX_EVENT_AGE,
        max_future: timedelta = MAX_FUTURE,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        shards: Callable[[str], int] = lambda _tenant: 1,
    ) -> None:
        """`producer` is the SDK client for the aggregator's hub; `catalog` the deployment's meters (the
        packaged catalog if not given); `shards` each tenant's shard count (GET /api/manage/tenants/<id>), for
        the partition keys that spread a hot tenant over hub partitions (one shard each by default)."""
        self.shards = shards
        self._producer = producer
        self._publisher = EventHubPublisher(lambda: producer)
        self.catalog = catalog or load_catalog()
        self.max_message_bytes = max_message_bytes
        self.max_age = max_age
        self.max_future = max_future
        self.clock = clock

    @classmethod
    def from_connection_string(cls, connection: str, eventhub_name: str, **options: Any) -> Self:
        return cls(EventHubProducerClient.from_connection_string(connection, eventhub_name=eventhub_name), **options)

    @classmethod
    def from_namespace(cls, namespace: str, eventhub_name: str, credential: Any, **options: Any) -> Self:
        """Identity-based: `namespace` is `<name>.servicebus.windows.net`, `credential` e.g. DefaultAzureCredential()
        with the Azure Event Hubs Data Sender role on the hub."""
        return cls(EventHubProducerClient(namespace, eventhub_name, credential), **options)

    def record(self, tenant_id: str, metric: str, quantity: QuantityLike, *, source: str, **fields: Any) -> UsageEvent:
        """Send one event now; returns it with its id and timestamp."""
        [event] = self.send([new_event(tenant_id, metric, quantity, source=source, **fields)])
        return event

    def send(self, events: Iterable[UsageEvent | Mapping[str, Any]]) -> list[UsageEvent]:
        """Validate every event, then send them all; returns them with their ids. One invalid event raises
        InvalidEvent naming each broken rule by index, and nothing is sent."""
        prepared = self.prepare(events)
        if prepared:
            try:
                self._publisher.publish(pack(prepared, self.max_message_bytes, self._key))
            except PublishError as error:
                raise SendFailed(str(error), prepared) from error
        return prepared

    def _key(self, event: UsageEvent) -> str:
        return hub_key(event, self.shards(event.tenant_id), self.catalog)

    def prepare(self, events: Iterable[UsageEvent | Mapping[str, Any]]) -> list[UsageEvent]:
        """The events validated as ingest validates them, each with an id and a timestamp."""
        now = self.clock()
        prepared, errors = validate_events(
            [stamped(item, now=now) for item in events],
            self.catalog,
            now=now,
            max_age=self.max_age,
            max_future=self.max_future,
        )
        if errors:
            raise InvalidEvent(errors)
        return prepared

    def close(self) -> None:
        self._publisher.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
