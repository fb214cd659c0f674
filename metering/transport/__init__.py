"""The hub's port: publishing validated events to the hub the aggregator reads (`Publisher`), and how far the
aggregator has applied them (`Backlog`). The adapters are eventhub.py (Azure Event Hubs) and queue.py (the local
Storage queue the dev host feeds the trigger from).

Events are packed per partition key into JSON arrays, as few messages as fit a size limit: Event Hubs bills
ingress in 64 KB units, and a Storage queue message holds 64 KiB after Base64. A message's partition key is its
tenant, so a tenant's events stay in one hub partition and reach one aggregator in order; a tenant with several
shards gets one key per shard, `<tenant>|<shard>` (ledger/routing.py), so its events spread over hub partitions
and aggregators. The key only spreads the work: where an event is counted never depends on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from metering.core.events import UsageEvent, decode_json
from metering.core.hub import Applied

# Event Hubs meters ingress in 64 KB units: a message just under one unit carries the most events per unit.
EVENT_HUB_MESSAGE_BYTES = 64_000
# A Storage queue message holds 64 KiB once Base64-encoded: 3/4 of that for the JSON itself.
QUEUE_MESSAGE_BYTES = 64 * 1024 * 3 // 4


@dataclass(frozen=True, slots=True)
class Message:
    partition_key: str
    body: bytes
    count: int


class PublishError(RuntimeError):
    """The transport did not durably accept every message; some may have been sent."""


class Backlog(Protocol):
    """How far the hub's events are applied, as the hub itself knows it (the closer waits for it; health shows
    it). Positions are looked up by the names the trigger gives partitions (core.hub.hub_partition)."""

    def applied_through(self, applied: Mapping[str, Applied], now: datetime) -> datetime:
        """The instant before which every event enqueued in the hub is applied."""
        ...

    def lag(self, applied: Mapping[str, Applied], now: datetime) -> dict[str, float]:
        """Per hub partition it reads (by the names positions are kept under), the age in seconds of the oldest
        event not applied yet; 0 when none waits."""
        ...


class EmptyBacklog:
    """A hub with nothing waiting: everything enqueued is applied (a rebuild replays the archive, not a hub)."""

    def applied_through(self, applied: Mapping[str, Applied], now: datetime) -> datetime:
        return now

    def lag(self, applied: Mapping[str, Applied], now: datetime) -> dict[str, float]:
        return {}


class Publisher(Protocol):
    def publish(self, messages: Sequence[Message]) -> None:
        """Return only once every message is durably accepted; raise PublishError otherwise."""
        ...

    def close(self) -> None: ...


def tenant_key(event: UsageEvent) -> str:
    return event.tenant_id


def pack(
    events: Iterable[UsageEvent], max_bytes: int, key_of: Callable[[UsageEvent], str] = tenant_key
) -> list[Message]:
    """The events of each partition key (`key_of`: the tenant by default) as JSON arrays of at most `max_bytes`
    bytes (measured on the encoded text). A key is always one tenant's."""
    by_tenant: dict[str, list[bytes]] = {}
    for event in events:
        by_tenant.setdefault(key_of(event), []).append(event.model_dump_json(exclude_none=True).encode())
    messages: list[Message] = []
    for tenant, encoded in by_tenant.items():
        current: list[bytes] = []
        size = 2  # the brackets
        for item in encoded:
            extra = len(item) + (1 if current else 0)
            if current and size + extra > max_bytes:
                messages.append(_message(tenant, current))
                current, size = [], 2
                extra = len(item)
            if size + extra > max_bytes:
                raise ValueError(f"one event of {len(item)} bytes exceeds the {max_bytes}-byte message limit")
            current.append(item)
            size += extra
        messages.append(_message(tenant, current))
    return messages


def _message(tenant: str, items: list[bytes]) -> Message:
    return Message(tenant, b"[" + b",".join(items) + b"]", len(items))


def decode_message(body: bytes) -> list[object]:
    """A message holds one event (a JSON object) or several (a JSON array): direct producers may send either."""
    decoded = decode_json(body)
    return decoded if isinstance(decoded, list) else [decoded]
