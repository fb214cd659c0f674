"""Feeding a function app's Event Hub trigger from the local queue, with Event Hubs' delivery semantics.

The feed reads up to `maxEventBatchSize` messages (host.json), calls the function with them as
`func.EventHubEvent`s and deletes them only after it returns. A failed call is made again with the same batch
(the same events and sequence numbers) after a capped exponential backoff, and again after every further
failure, forever: that is what the trigger's retry policy (function_app.py) does in Azure while it holds the
checkpoint, and a store outage must only delay counting, never drop events. What the aggregator cannot decode
or apply it dead-letters itself, event by event, so nothing is dead-lettered here for having failed.

Each run of the feed is a partition of its own, numbering deliveries from 0, named as Event Hubs' trigger
names one (`<namespace>|<hub>|<partition id>`, with `<account>.queue` as namespace and `local-<run>` as id, or
`local-<run>-<index>` for the queue of that index of a hub of several, transport/queue.py): a sequence number
then names one delivery of one message, never two, which is all the aggregator assumes of it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import azure.functions as func
from azure.core.exceptions import AzureError, ResourceExistsError
from azure.functions.meta import Datum
from azure.storage.queue import QueueClient, QueueMessage

from metering.core.hub import hub_partition

log = logging.getLogger(__name__)

# The Queue service returns at most 32 messages per request.
_PER_REQUEST = 32


@dataclass
class FeedStats:
    batches: int = 0
    messages: int = 0
    failures: int = 0


class HubFeed:
    def __init__(
        self,
        client: QueueClient,
        handler: Callable[..., Any],
        arg_name: str,
        *,
        hub: str,
        consumer_group: str,
        max_batch: int = 100,
        visibility_seconds: int = 10,
        min_backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 60.0,
        idle_seconds: float = 0.2,
        partition_id: str | None = None,
    ) -> None:
        self.client = client
        self.handler = handler
        self.arg_name = arg_name
        self.max_batch = max_batch
        # How long a received message stays hidden from other reads. Short, because a receive whose answer was
        # lost (the storage stopped mid-request) hides its messages that long; and harmless, because this feed
        # is the queue's only reader and renews the batch's invisibility while it retries it.
        self.visibility_seconds = visibility_seconds
        self.min_backoff_seconds = min_backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.idle_seconds = idle_seconds
        partition_id = partition_id or f"local-{uuid.uuid4().hex[:8]}"
        namespace = f"{client.account_name}.queue"
        self.partition = hub_partition(namespace, hub, partition_id)
        self.sequence = 0
        self.stats = FeedStats()
        context = {
            "FullyQualifiedNamespace": namespace,
            "EventHubName": hub,
            "PartitionId": partition_id,
            "ConsumerGroup": consumer_group,
        }
        self._metadata = {"PartitionContext": Datum(json.dumps(context), "json")}

    def run(self, stop: threading.Event) -> None:
        # A hub's partitions exist before anyone sends to them: so does the queue (if the storage answers yet).
        with contextlib.suppress(AzureError):
            self.client.create_queue()
        unavailable = 0
        while not stop.is_set():
            try:
                if unavailable:
                    with contextlib.suppress(ResourceExistsError):
                        self.client.create_queue()
                delivered = self.deliver_once(stop)
                unavailable = 0
            except AzureError as error:
                unavailable += 1
                # One traceback per outage; then a line per try, as the wait between tries grows.
                if unavailable == 1:
                    log.exception("local hub feed: the queue is unavailable; trying again")
                else:
                    log.warning("local hub feed: the queue is still unavailable (%s)", type(error).__name__)
                stop.wait(self.backoff(unavailable))
                continue
            if delivered == 0:
                stop.wait(self.idle_seconds)

    def deliver_once(self, stop: threading.Event | None = None) -> int:
        """Deliver one batch, again and again until the function takes it (or `stop` is set, leaving the
        messages to reappear once their visibility timeout ends); returns how many messages it held."""
        batch = self._receive()
        if not batch:
            return 0
        events = [self._event(message) for message in batch]
        stop = stop or threading.Event()
        attempt = 1
        while True:
            try:
                self.handler(**{self.arg_name: events})
                break
            except Exception:
                self.stats.failures += 1
                delay = self.backoff(attempt)
                log.exception(
                    "local hub feed: the function failed on %d messages (attempt %d); delivering them again in %.1f s",
                    len(batch),
                    attempt,
                    delay,
                )
                if stop.wait(delay):
                    return len(batch)
                batch = self._keep(batch)
                attempt += 1
        for message in batch:
            self.client.delete_message(message)
        self.stats.batches += 1
        self.stats.messages += len(batch)
        return len(batch)

    def backoff(self, attempt: int) -> float:
        """Seconds before the `attempt`-th failure is followed by another try: doubling, capped, never giving up."""
        return min(self.min_backoff_seconds * 2 ** min(attempt - 1, 30), self.max_backoff_seconds)

    def _keep(self, batch: list[QueueMessage]) -> list[QueueMessage]:
        """Extend the batch's invisibility while it is retried, as the trigger holds its checkpoint. When the
        storage is down this fails, which does no harm: only this feed reads the queue, and it is busy retrying."""
        kept = []
        for message in batch:
            try:
                renewed = self.client.update_message(message, visibility_timeout=self.visibility_seconds)
            except AzureError:
                kept.append(message)
                continue
            message.pop_receipt, message.next_visible_on = renewed.pop_receipt, renewed.next_visible_on
            kept.append(message)
        return kept

    def _receive(self) -> list[QueueMessage]:
        messages: list[QueueMessage] = []
        while len(messages) < self.max_batch:
            want = min(_PER_REQUEST, self.max_batch - len(messages))
            page = list(self.client.receive_messages(max_messages=want, visibility_timeout=self.visibility_seconds))
            messages.extend(page[:want])
            if len(page) < want:
                break
        return messages

    def _event(self, message: QueueMessage) -> func.EventHubEvent:
        body = message.content if isinstance(message.content, bytes) else str(message.content).encode()
        sequence = self.sequence
        self.sequence += 1
        return func.EventHubEvent(
            body=body,
            trigger_metadata=self._metadata,
            enqueued_time=message.inserted_on,
            partition_key=_tenant_of(body),
            sequence_number=sequence,
        )


def _tenant_of(body: bytes) -> str | None:
    try:
        decoded = json.loads(body)
    except ValueError:
        return None
    first = decoded[0] if isinstance(decoded, list) and decoded else decoded
    return first.get("tenant_id") if isinstance(first, dict) else None
