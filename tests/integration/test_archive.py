"""The raw archive on Azurite blobs: the dev host's writer at publish, and the reader's order across files."""

from __future__ import annotations

import contextlib
import socket
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

from metering.archive.capture import ArchivedMessage, encode, window_prefix
from metering.archive.publisher import ArchivingPublisher, CaptureWriter
from metering.archive.reader import ArchiveNotFound, ArchiveReader
from metering.transport import Message, PublishError
from metering.transport.queue import QueuePublisher, queue_client, storage_retry
from tests.support import FixedClock

T0 = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def container(azurite):
    client = ContainerClient.from_connection_string(azurite.connection_string, f"a{uuid.uuid4().hex}")
    yield client
    with contextlib.suppress(ResourceNotFoundError):
        client.delete_container()


def capture_file(
    container: ContainerClient, partition: str, window: datetime, messages: list[ArchivedMessage], suffix: str = ""
):
    container.upload_blob(f"{window_prefix('ns', 'usage', partition, window)}{suffix}.avro", encode(messages))


def message(partition: str, sequence: int, at: datetime) -> ArchivedMessage:
    return ArchivedMessage(partition, sequence, at, f"{partition}:{sequence}".encode())


def test_the_reader_yields_every_message_of_the_range_in_enqueued_order(container):
    container.create_container()
    second = timedelta(seconds=1)
    # Two partitions, windows of 5 minutes named by their start; files of one window overlap the other
    # partition's, and one file is listed (by name) before an earlier one of another day's prefix.
    capture_file(container, "0", T0, [message("0", 1, T0 + 10 * second), message("0", 2, T0 + 400 * second)])
    capture_file(
        container, "1", T0 + 60 * second, [message("1", 7, T0 + 61 * second), message("1", 8, T0 + 62 * second)]
    )
    capture_file(container, "0", T0 + 300 * second, [message("0", 3, T0 + 410 * second)])
    capture_file(container, "1", T0 - 600 * second, [message("1", 6, T0 - 599 * second)])  # before the range
    # A window that starts the day before the range and reaches into it: listed through its own day's prefix.
    midnight = T0.replace(hour=0)
    capture_file(container, "1", midnight - 120 * second, [message("1", 5, midnight + 30 * second)])
    # The same instant in two partitions: ordered by partition, then sequence.
    capture_file(container, "0", T0 + 900 * second, [message("0", 4, T0 + 901 * second)])
    capture_file(container, "1", T0 + 900 * second, [message("1", 9, T0 + 901 * second)])
    # Not a Capture file, and another hub's: ignored.
    container.upload_blob("ns/usage/0/notes.txt", b"x")
    # A second file of one window (as the dev host writes, one per publish call).
    capture_file(container, "0", T0, [message("0", 99, T0 + 20 * second)], suffix="-b")
    container.upload_blob(f"{window_prefix('ns', 'other', '0', T0)}.avro", encode([message("0", 50, T0 + 5 * second)]))

    reader = ArchiveReader(container, hub="usage")
    # Partitions are named as the trigger names them: namespace, hub and partition id.
    read = [(m.partition.removeprefix("ns|usage|"), m.sequence) for m in reader.messages(midnight, T0 + 1000 * second)]
    assert read == [("1", 5), ("1", 6), ("0", 1), ("0", 99), ("1", 7), ("1", 8), ("0", 2), ("0", 3), ("0", 4), ("1", 9)]
    times = [m.enqueued for m in reader.messages(midnight, T0 + 1000 * second)]
    assert times == sorted(times)
    # The range is [start, end): a message enqueued at the end is not in it, one at the start is.
    assert [m.sequence for m in reader.messages(T0 + 61 * second, T0 + 400 * second)] == [7, 8]
    # Every hub of the container when none is named.
    assert 50 in {m.sequence for m in ArchiveReader(container).messages(T0, T0 + 10 * second)}


def test_a_missing_archive_container_is_named(container):
    with pytest.raises(ArchiveNotFound, match=container.container_name):
        list(ArchiveReader(container).messages(T0, T0 + timedelta(hours=1)))


def test_the_dev_host_archives_what_the_queue_accepted(azurite, container):
    queue = queue_client(azurite.connection_string, f"q{uuid.uuid4().hex}")
    clock = FixedClock(T0)
    publisher = ArchivingPublisher(QueuePublisher(queue), CaptureWriter(container, hub="usage"), clock)
    publisher.publish([Message("acme", b'[{"a":1}]', 1), Message("beta", b'[{"b":2}]', 1)])
    clock.now = T0 + timedelta(seconds=2)
    publisher.publish([Message("acme", b'[{"a":3}]', 1)])

    assert [m.content for m in queue.receive_messages(max_messages=10)] == [b'[{"a":1}]', b'[{"b":2}]', b'[{"a":3}]']
    names = sorted(blob.name for blob in container.list_blobs())
    assert len(names) == 2  # one file per publish call, under the Capture path of its instant
    assert all(name.startswith("local/usage/0/2026/11/24/12/00/0") for name in names)
    archived = list(ArchiveReader(container, hub="usage").messages(T0, T0 + timedelta(minutes=1)))
    assert [(m.body, m.partition_key, m.enqueued) for m in archived] == [
        (b'[{"a":1}]', "acme", T0),
        (b'[{"b":2}]', "beta", T0),
        (b'[{"a":3}]', "acme", T0 + timedelta(seconds=2)),
    ]
    sequences = [m.sequence for m in archived]
    assert sequences == sorted(set(sequences))  # never one number for two messages


def test_an_archive_that_fails_after_the_queue_accepted_fails_the_publish(azurite):
    # A blob endpoint where nothing listens: the queue accepts, the archive cannot.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unreachable = ContainerClient(
        f"http://127.0.0.1:{port}/devstoreaccount1", "archive", retry_policy=storage_retry(), retry_total=0
    )
    queue = queue_client(azurite.connection_string, f"q{uuid.uuid4().hex}")
    publisher = ArchivingPublisher(QueuePublisher(queue), CaptureWriter(unreachable, hub="usage"), FixedClock(T0))
    with pytest.raises(PublishError, match="archive"):
        publisher.publish([Message("acme", b"[]", 0)])
    # The queue had it: the client's retry (same event ids) is deduplicated by the aggregator.
    assert queue.get_queue_properties().approximate_message_count == 1
