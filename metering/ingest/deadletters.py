"""Dead letters: what the aggregator could not decode or apply, kept with the reason, never dropped.

A record is keyed by where it came from (hub partition, sequence number, index in the message), so a batch
delivered again records it once. A raw body too large for a table property (64 KiB) goes to blob storage and
the record points at it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContainerClient

from metering.core.clock import format_timestamp
from metering.ledger.keys import digest
from metering.stores import RowTable

# Characters of body kept in the row itself; the table's own limit is 32K characters per property.
INLINE_BODY_CHARS = 30_000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    body: str
    partition: str | None = None
    sequence: int | None = None
    index: int | None = None
    enqueued: datetime | None = None

    @property
    def key(self) -> tuple[str, str]:
        """Where it came from when known (one record however often it is delivered), else its content."""
        if self.partition is not None and self.sequence is not None:
            return self.partition, f"{self.sequence:020d}:{self.index if self.index is not None else '-'}"
        return "unknown", "h:" + digest(self.body)


class DeadLetters:
    def __init__(
        self, table: RowTable, container: Callable[[], ContainerClient], clock: Callable[[], datetime]
    ) -> None:
        self.table = table
        self._container_factory = container
        self._container: ContainerClient | None = None
        self.clock = clock

    def record(self, letter: DeadLetter) -> None:
        partition, key = letter.key
        data: dict[str, Any] = {
            "reason": letter.reason,
            "partition": letter.partition,
            "sequence": letter.sequence,
            "index": letter.index,
            "enqueued": format_timestamp(letter.enqueued) if letter.enqueued else None,
            "recorded": format_timestamp(self.clock()),
        }
        if len(letter.body) <= INLINE_BODY_CHARS:
            data["body"] = letter.body
        else:
            name = f"{partition}/{key.replace(':', '-')}.json"
            self.container().upload_blob(name, letter.body.encode(), overwrite=True)
            data["blob"] = name
        self.table.upsert(partition, key, data)

    def container(self) -> ContainerClient:
        if self._container is None:
            container = self._container_factory()
            with contextlib.suppress(ResourceExistsError):
                container.create_container()
            self._container = container
        return self._container
