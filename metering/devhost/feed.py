"""Feeding a function app's Event Hub trigger from the local queue, with Event Hubs' delivery semantics.

The feed reads up to `maxEventBatchSize` messages (host.json), calls the function with them as
`func.EventHubEvent`s and deletes them only after it returns. A failed call leaves them to reappear after a
backoff, as the trigger's retry policy delivers a batch again; a message that failed `max_attempts` times is
dead-lettered and removed, so one bad message cannot stop the feed.

Each run of the feed is a partition of its own (`local-<random>`), numbering deliveries from 0: a sequence
number then names one delivery of one message, never two, which is all the aggregator assumes of it.
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

log = logging.getLogger(__name__)

# The Queue service returns at most 32 messages per request.
_PER_REQUEST = 32


@dataclass
class FeedStats:
    batches: int = 0
    messages: int = 0
    failures: int = 0
    dead_lettered: int = 0


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
        max_attempts: int = 5,
        visibility_seconds: int = 60,
        idle_seconds: float = 0.2,
        dead_letter: Callable[[QueueMessage, str], None] | None = None,
    ) -> None:
        self.client = client
        self.handler = handler
        self.arg_name = arg_name
        self.max_batch = max_batch
        self.max_attempts = max_attempts
        self.visibility_seconds = visibility_seconds
        self.idle_seconds = idle_seconds
        self.dead_letter = dead_letter
        self.partition = f"local-{uuid.uuid4().hex[:8]}"
        self.sequence = 0
        self.stats = FeedStats()
        context = {"PartitionId": self.partition, "EventHubName": hub, "ConsumerGroup": consumer_group}
        self._metadata = {"PartitionContext": Datum(json.dumps(context), "json")}

    def run(self, stop: threading.Event) -> None:
        with contextlib.suppress(ResourceExistsError):
            self.client.create_queue()
        while not stop.is_set():
            try:
                delivered = self.deliver_once()
            except AzureError:
                log.exception("local hub feed: the queue is unavailable; trying again")
                delivered = 0
            if delivered == 0:
                stop.wait(self.idle_seconds)

    def deliver_once(self) -> int:
        """Deliver one batch; returns how many messages it held."""
        messages = self._receive()
        if not messages:
            return 0
        poisoned = [m for m in messages if m.dequeue_count > self.max_attempts]
        for message in poisoned:
            if self.dead_letter is not None:
                self.dead_letter(message, f"delivered {message.dequeue_count - 1} times without success")
            self.client.delete_message(message)
            self.stats.dead_lettered += 1
        batch = [m for m in messages if m.dequeue_count <= self.max_attempts]
        if not batch:
            return len(messages)
        events = [self._event(message) for message in batch]
        try:
            self.handler(**{self.arg_name: events})
        except Exception:
            self.stats.failures += 1
            log.exception(
                "local hub feed: the function failed on %d messages; they will be delivered again", len(batch)
            )
            for message in batch:
                # Backoff grows with the attempts, as the trigger's exponential retry policy does.
                delay = min(2 ** (message.dequeue_count - 1), self.visibility_seconds)
                self.client.update_message(message, visibility_timeout=delay)
            return len(messages)
        for message in batch:
            self.client.delete_message(message)
        self.stats.batches += 1
        self.stats.messages += len(batch)
        return len(messages)

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
