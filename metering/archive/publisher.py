"""The dev host's stand-in for Event Hubs Capture: every message the local queue accepted, archived as Capture does.

`ArchivingPublisher` wraps the queue publisher. Once the queues have accepted a publish call's messages, they are
written as one Capture file per partition (the queue each went to), named as Capture names the window they fall
in plus a unique suffix (one file per call and partition, not per window). The enqueued time it records is the
instant the queues acknowledged the call, taken on the app's clock: a queue's own insertion time has whole
seconds only, too coarse to order the archive against a period's close.

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

# The names the dev host gives the local hub in the archive; its partitions are the local queues' indexes.
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

    def write(self, messages: Sequence[Message], enqueued: datetime, partition: str | None = None) -> str:
        """Archive `messages` of one partition (the writer's own by default) as enqueued at `enqueued`; returns
        the blob's name."""
        partition = partition or self.partition
        archived = [
            ArchivedMessage(partition, sequence, enqueued, message.body, message.partition_key)
            for sequence, message in zip(self._sequences(len(messages)), messages, strict=True)
        ]
        name = f"{window_prefix(self.namespace, self.hub, partition, enqueued)}-{uuid.uuid4().hex}.avro"
        if not self._ready:
            with contextlib.suppress(ResourceExistsError):
                self.container.create_container()
            self._ready = True
        self.container.upload_blob(name, encode(archived), overwrite=False)
        return name


class ArchivingPublisher:
    def __init__(
        self,
        inner: Publisher,
        writer: CaptureWriter,
        clock: Callable[[], datetime],
        *,
        partition_of: Callable[[str], str] | None = None,
    ) -> None:
        """`partition_of` names the partition a partition key's messages went to (the writer's one if not given)."""
        self.inner = inner
        self.writer = writer
        self.clock = clock
        self.partition_of = partition_of

    def publish(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        self.inner.publish(messages)
        accepted = self.clock()
        by_partition: dict[str | None, list[Message]] = {}
        for message in messages:
            partition = None if self.partition_of is None else self.partition_of(message.partition_key)
            by_partition.setdefault(partition, []).append(message)
        try:
            for partition, group in by_partition.items():
                self.writer.write(group, accepted, partition)
        except AzureError as error:
            raise PublishError(
                f"the local queue accepted the events but the archive did not ({type(error).__name__})"
            ) from error

    def close(self) -> None:
        self.inner.close()
        self.writer.container.close()
