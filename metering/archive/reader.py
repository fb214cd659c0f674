"""Reading the archive back between two instants, in enqueued order, from Capture's files or the dev host's.

Files are listed per day under each namespace, hub and partition, and read in the order of the instants their
names give. Each file's messages were enqueued at or after that instant, so a message read so far can be handed
out as soon as the next file to read starts later than it: memory holds about one window of messages, and the
order is exact (ties by partition, then sequence number) across partitions and overlapping files.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobPrefix, ContainerClient

from metering.archive.capture import ArchivedMessage, BlobPath, decode, parse_blob_name
from metering.core.hub import hub_partition

# Capture's longest window (intervalInSeconds is at most 900): a file named this long before the start of the
# range may still hold messages of it.
MAX_WINDOW = timedelta(seconds=900)


class ArchiveNotFound(LookupError):
    pass


class ArchiveReader:
    def __init__(self, container: ContainerClient, *, hub: str | None = None, window: timedelta = MAX_WINDOW) -> None:
        self.container = container
        self.hub = hub
        self.window = window

    def messages(self, start: datetime, end: datetime) -> Iterator[ArchivedMessage]:
        """Every archived message enqueued in [start, end), oldest first."""
        waiting: list[tuple[datetime, str, int, int, ArchivedMessage]] = []
        counter = 0  # keeps the heap from comparing messages when two share a position (a duplicate file)
        for path, name in self.files(start - self.window, end):
            while waiting and waiting[0][0] < path.instant:
                yield heapq.heappop(waiting)[-1]
            data = self.container.download_blob(name).readall()
            for message in decode(data, hub_partition(path.namespace, path.hub, path.partition)):
                if start <= message.enqueued < end:
                    counter += 1
                    heapq.heappush(waiting, (message.enqueued, message.partition, message.sequence, counter, message))
        while waiting:
            yield heapq.heappop(waiting)[-1]

    def files(self, since: datetime, until: datetime) -> list[tuple[BlobPath, str]]:
        """Capture files whose window starts in [since, until), in the order of their instants."""
        found: list[tuple[BlobPath, str]] = []
        dates = _date_prefixes(since, until)
        for partition_prefix in self._partitions():
            for date_prefix in dates:
                for blob in self.container.list_blobs(name_starts_with=partition_prefix + date_prefix):
                    path = parse_blob_name(blob.name)
                    if path is not None and since <= path.instant < until:
                        found.append((path, blob.name))
        found.sort(key=lambda item: (item[0].instant, item[1]))
        return found

    def _partitions(self) -> list[str]:
        """`namespace/hub/partition/` prefixes in the container (of one hub when given)."""
        try:
            self.container.get_container_properties()
        except ResourceNotFoundError:
            raise ArchiveNotFound(
                f"no blob container {self.container.container_name!r}: is METERING_ARCHIVE_CONTAINER right "
                "(Capture's container in Azure, usage-archive by default)?"
            ) from None
        prefixes = [""]
        for level in range(3):
            below: list[str] = []
            for prefix in prefixes:
                for item in self.container.walk_blobs(name_starts_with=prefix or None, delimiter="/"):
                    if not isinstance(item, BlobPrefix):
                        continue
                    if level == 1 and self.hub is not None and item.name != f"{prefix}{self.hub}/":
                        continue
                    below.append(item.name)
            prefixes = below
        return prefixes


def _date_prefixes(since: datetime, until: datetime) -> list[str]:
    """Name prefixes covering [since, until]: one listing per day for a window of up to a month, per month for
    up to two years, per year beyond (files outside the window are filtered by their names' instants)."""
    first, last = since.astimezone(UTC).date(), until.astimezone(UTC).date()
    span = (last - first).days
    if span <= 31:
        return [f"{first + timedelta(days=n):%Y/%m/%d}/" for n in range(span + 1)]
    if span <= 731:
        months = (last.year - first.year) * 12 + last.month - first.month
        return [
            f"{first.year + (first.month - 1 + n) // 12:04d}/{(first.month - 1 + n) % 12 + 1:02d}/"
            for n in range(months + 1)
        ]
    return [f"{year:04d}/" for year in range(first.year, last.year + 1)]
