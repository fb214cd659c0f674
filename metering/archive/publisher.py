"""The dev host's stand-in for Event Hubs Capture: every message the local queue accepted, archived as Capture does.

`ArchivingPublisher` wraps the queue publisher. Once the queue has accepted a publish call's messages, they are
written as one Capture file, named as Capture names the window they fall in plus a unique suffix (one file per
call, not per window). The enqueued time it records is the instant the queue acknowledged the call, taken on
the app's clock: the queue's own insertion time has whole seconds only, too coarse to order the archive against
a period's close.

The archive is what the hub accepted. If its write fails after the queue accepted, the call raises
`PublishError`, so ingest answers 503 and the client sends the same events again: the queue then holds them
twice, which the aggregator's dedupe absorbs, and the archive gets them with the retry. A client that never
retries leaves events counted that the archive lacks; `metering rebuild` shows them as a difference.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.blob import ContainerClient

from metering.archive.capture import ArchivedMessage, encode, window_prefix
from metering.transport import Message, Publisher, PublishError

# The names the dev host gives the local hub in the archive: one partition, like the local queue.
LOCAL_NAMESPACE = "local"
LOCAL_PARTITION = "0"


class CaptureWriter:
    """Writes messages as Capture files into a blob container."""

    def __init__(
        self,
        container: ContainerClient,
        *,
        hub: str,
        namespace: str = LOCAL_NAMESPACE,
        partition: str = LOCAL_PARTITION,
    ) -> None:
        self.container = container
        self.namespace = namespace
        self.hub = hub
        self.partition = partition
        self._lock = threading.Lock()
        self._last_sequence = -1
        self._ready = False

    def _sequences(self, count: int) -> range:
        """Sequence numbers that only grow, across restarts too: microseconds since the epoch, or one more than
        the last when several come in one microsecond. A rebuild reads them as hub positions, so a number may
        never name two messages."""
        with self._lock:
            first = max(self._last_sequence + 1, time.time_ns() // 1000)
            self._last_sequence = first + count - 1
        return range(first, first + count)

    def write(self, messages: Sequence[Message], enqueued: datetime) -> str:
        """Archive `messages` as enqueued at `enqueued`; returns the blob's name."""
        archived = [
            ArchivedMessage(self.partition, sequence, enqueued, message.body, message.partition_key)
            for sequence, message in zip(self._sequences(len(messages)), messages, strict=True)
        ]
        name = f"{window_prefix(self.namespace, self.hub, self.partition, enqueued)}-{uuid.uuid4().hex}.avro"
        if not self._ready:
            with contextlib.suppress(ResourceExistsError):
                self.container.create_container()
            self._ready = True
        self.container.upload_blob(name, encode(archived), overwrite=False)
        return name


class ArchivingPublisher:
    def __init__(self, inner: Publisher, writer: CaptureWriter, clock: Callable[[], datetime]) -> None:
        self.inner = inner
        self.writer = writer
        self.clock = clock

    def publish(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        self.inner.publish(messages)
        accepted = self.clock()
        try:
            self.writer.write(messages, accepted)
        except AzureError as error:
            raise PublishError(
                f"the local queue accepted the events but the archive did not ({type(error).__name__})"
            ) from error

    def close(self) -> None:
        self.inner.close()
        self.writer.container.close()
