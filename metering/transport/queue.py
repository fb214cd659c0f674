"""The local transport: an Azure Storage queue (on Azurite) standing in for Event Hubs.

The dev host reads it in batches and calls the Event Hub trigger with them, with Event Hubs' delivery
semantics: at least once, and again after a failed call. Bodies are Base64-encoded, as the Functions queue
tooling expects, which is why a message holds at most 48 KiB of JSON.
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


class QueuePublisher:
    def __init__(self, client: QueueClient) -> None:
        self._client = client
        self._ready = False

    def publish(self, messages: Sequence[Message]) -> None:
        try:
            if not self._ready:
                with contextlib.suppress(ResourceExistsError):
                    self._client.create_queue()
                self._ready = True
            for message in messages:
                self._client.send_message(message.body)
        except AzureError as error:
            raise PublishError(f"the local queue did not accept the events: {error}") from error

    def close(self) -> None:
        self._client.close()


class QueueBacklog:
    """How far the local queue's events are applied. A Storage queue keeps no strict order, so this is
    conservative: everything when it is empty, else no later than its oldest waiting message and no later than
    the newest message the feed has applied."""

    def __init__(self, client: QueueClient, hub: str = "usage") -> None:
        self._client = client
        self.hub = hub

    def applied_through(self, applied: Mapping[str, Applied], now: datetime) -> datetime:
        try:
            waiting = self._client.get_queue_properties().approximate_message_count
        except ResourceNotFoundError:
            return now  # nothing was ever published
        if not waiting:
            return now
        newest = max((position.enqueued for position in applied.values()), default=NOTHING_APPLIED)
        oldest = list(self._client.peek_messages(max_messages=1))
        if oldest and oldest[0].inserted_on is not None:
            return min(newest, oldest[0].inserted_on, now)
        return min(newest, now)

    def lag(self, applied: Mapping[str, Applied], now: datetime) -> dict[str, float]:
        """The queue is one partition, whichever run of the feed reads it (each run names a partition of its
        own): its lag is given for the newest of them, the one reading now, or under `<account>.queue|<hub>|-`
        before any has applied a batch. The oldest waiting message is the one a peek returns first (the queue
        keeps rough, not strict, order); when every waiting message is invisible (being delivered), the newest
        applied message's enqueued time bounds it."""
        live = max(applied.values(), key=lambda position: position.enqueued, default=None)
        name = (
            live.partition if live is not None else hub_partition(f"{self._client.account_name}.queue", self.hub, "-")
        )
        try:
            waiting = self._client.get_queue_properties().approximate_message_count
        except ResourceNotFoundError:
            waiting = 0
        if not waiting:
            return {name: 0.0}
        oldest = list(self._client.peek_messages(max_messages=1))
        if oldest and oldest[0].inserted_on is not None:
            since = oldest[0].inserted_on
        elif live is not None:
            since = live.enqueued
        else:
            return {name: 0.0}
        return {name: max((now - since).total_seconds(), 0.0)}
