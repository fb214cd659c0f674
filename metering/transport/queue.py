"""The local transport: Azure Storage queues (on Azurite) standing in for Event Hubs, one per hub partition.

A message goes to the queue of the partition Event Hubs would choose for its partition key (partitioning.py), so
a tenant's key always lands on one queue. The dev host reads each queue in batches, one feed per queue, and calls
the Event Hub trigger with them, with Event Hubs' delivery semantics: at least once, and again after a failed
call. Bodies are Base64-encoded, as the Functions queue tooling expects, which is why a message holds at most
48 KiB of JSON.

Each run of a feed is a hub partition of its own (feed.py): `local-<run>` for a hub of one queue, and
`local-<run>-<index>` for the queue of index `<index>` of several, so positions and lags are told apart by queue.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import BinaryBase64DecodePolicy, BinaryBase64EncodePolicy, LinearRetry, QueueClient

from metering.core.hub import NOTHING_APPLIED, Applied, hub_partition
from metering.transport import Message, PublishError
from metering.transport.partitioning import partition_for


def storage_retry() -> LinearRetry:
    """The Storage SDKs' own retry policy (they ignore azure-core's retry keywords). Their exponential default
    waits 15 s and more between attempts, too long for an HTTP request waiting on it: a failed publish is
    answered 503 within about two seconds, and the client retries with the same event ids."""
    return LinearRetry(backoff=0.5, random_jitter_range=0.25, retry_total=2)


def storage_timeouts() -> dict[str, float]:
    """Seconds to connect, and to wait for an answer once connected, for every storage client (queues, blobs,
    tables). The SDKs' defaults (20 to 300 s) would hold an HTTP request on a frozen store for minutes; with
    these and the retry policies, a request of events is answered within about 25 s when the store stops
    answering. A timeout is a transient fault, retried as any other."""
    return {"connection_timeout": 5, "read_timeout": 5}


def _options() -> dict[str, Any]:
    return {
        "message_encode_policy": BinaryBase64EncodePolicy(),
        "message_decode_policy": BinaryBase64DecodePolicy(),
        "retry_policy": storage_retry(),
        **storage_timeouts(),
    }


def queue_client(connection: str, name: str) -> QueueClient:
    return QueueClient.from_connection_string(connection, name, **_options())


def queue_client_at(account_url: str, name: str, credential: Any) -> QueueClient:
    """The same client with an identity-based connection (the queue service URI of the account)."""
    return QueueClient(account_url, name, credential=credential, **_options())


def local_partition_id(run: str, index: int, partitions: int) -> str:
    """The partition id a feed run gives the queue of `index`: `local-<run>`, or `local-<run>-<index>`."""
    return f"local-{run}" if partitions == 1 else f"local-{run}-{index}"


def _queue_of(partition: str, partitions: int) -> int | None:
    """The queue index a feed's partition name stands for (None: a name of another hub layout)."""
    if partitions == 1:
        return 0
    parts = partition.rpartition("|")[2].split("-")
    if len(parts) != 3 or parts[0] != "local" or not parts[2].isdigit():
        return None
    index = int(parts[2])
    return index if index < partitions else None


class QueuePublisher:
    """Sends each message to the queue of its partition key's partition (one queue: all to it)."""

    def __init__(self, clients: QueueClient | Sequence[QueueClient]) -> None:
        self._clients = [clients] if isinstance(clients, QueueClient) else list(clients)
        self._ready = False

    def partition_id(self, partition_key: str) -> str:
        """The index, as text, of the partition (and queue) a key's messages go to."""
        return str(partition_for(partition_key, len(self._clients)))

    def publish(self, messages: Sequence[Message]) -> None:
        try:
            if not self._ready:
                for client in self._clients:
                    with contextlib.suppress(ResourceExistsError):
                        client.create_queue()
                self._ready = True
            for message in messages:
                self._clients[partition_for(message.partition_key, len(self._clients))].send_message(message.body)
        except AzureError as error:
            raise PublishError(f"the local queue did not accept the events: {error}") from error

    def close(self) -> None:
        for client in self._clients:
            client.close()


class QueueBacklog:
    """How far the local queues' events are applied. A Storage queue keeps no strict order, so this is
    conservative: everything when every queue is empty, else for each queue no later than its oldest waiting
    message and no later than the newest message its feeds have applied; the hub is applied through the earliest
    of its queues."""

    def __init__(self, clients: QueueClient | Sequence[QueueClient], hub: str = "usage") -> None:
        self._clients = [clients] if isinstance(clients, QueueClient) else list(clients)
        self.hub = hub

    def _positions(self, applied: Mapping[str, Applied], index: int) -> list[Applied]:
        return [p for name, p in applied.items() if _queue_of(name, len(self._clients)) == index]

    def applied_through(self, applied: Mapping[str, Applied], now: datetime) -> datetime:
        through = now
        for index, client in enumerate(self._clients):
            through = min(through, self._queue_through(client, self._positions(applied, index), now))
        return through

    def _queue_through(self, client: QueueClient, applied: list[Applied], now: datetime) -> datetime:
        try:
            waiting = client.get_queue_properties().approximate_message_count
        except ResourceNotFoundError:
            return now  # nothing was ever published
        if not waiting:
            return now
        newest = max((position.enqueued for position in applied), default=NOTHING_APPLIED)
        oldest = list(client.peek_messages(max_messages=1))
        if oldest and oldest[0].inserted_on is not None:
            return min(newest, oldest[0].inserted_on, now)
        return min(newest, now)

    def lag(self, applied: Mapping[str, Applied], now: datetime) -> dict[str, float]:
        """Each queue is one partition, whichever run of its feed reads it (each run names a partition of its
        own): its lag is given for the newest of them, the one reading now, or under `<account>.queue|<hub>|-`
        (`-<index>` for one of several queues) before any has applied a batch. The oldest waiting message is the
        one a peek returns first (a queue keeps rough, not strict, order); when every waiting message is invisible
        (being delivered), the newest applied message's enqueued time bounds it."""
        lags: dict[str, float] = {}
        for index, client in enumerate(self._clients):
            name, lag = self._queue_lag(client, index, self._positions(applied, index), now)
            lags[name] = lag
        return lags

    def _queue_lag(self, client: QueueClient, index: int, applied: list[Applied], now: datetime) -> tuple[str, float]:
        live = max(applied, key=lambda position: position.enqueued, default=None)
        unnamed = "-" if len(self._clients) == 1 else f"-{index}"
        name = live.partition if live is not None else hub_partition(f"{client.account_name}.queue", self.hub, unnamed)
        try:
            waiting = client.get_queue_properties().approximate_message_count
        except ResourceNotFoundError:
            waiting = 0
        if not waiting:
            return name, 0.0
        oldest = list(client.peek_messages(max_messages=1))
        if oldest and oldest[0].inserted_on is not None:
            since = oldest[0].inserted_on
        elif live is not None:
            since = live.enqueued
        else:
            return name, 0.0
        return name, max((now - since).total_seconds(), 0.0)
