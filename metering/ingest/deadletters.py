"""Dead letters: what the aggregator could not decode or apply, kept with the reason, never dropped.

A record is keyed by where it came from (hub partition, sequence number, index in the message), so a batch
delivered again records it once. A raw body too large for a table property (64 KiB) goes to blob storage and
the record points at it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContainerClient

from metering.core.clock import format_timestamp
from metering.ledger.keys import digest
from metering.stores import Row, RowTable

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


def letter_id(partition: str, key: str) -> str:
    """A dead letter's id in routes: its partition and key, URL-safe and reversible."""
    return base64.urlsafe_b64encode(f"{partition}\n{key}".encode()).decode().rstrip("=")


def letter_address(letter_id: str) -> tuple[str, str] | None:
    """The partition and key an id names; None for text that is no id."""
    try:
        text = base64.urlsafe_b64decode(letter_id + "=" * (-len(letter_id) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    partition, sep, key = text.partition("\n")
    return (partition, key) if sep and partition and key else None


@dataclass(frozen=True, slots=True)
class StoredLetter:
    """A dead letter as stored, with its id and, once re-driven, what came of it."""

    id: str
    partition: str
    key: str
    etag: str
    data: dict[str, Any]

    @property
    def redriven(self) -> dict[str, Any] | None:
        return _redriven(self.data)


def _redriven(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """What came of a letter's re-drive (ingest/redrive.py marks it), if it was re-driven."""
    value = data.get("redriven")
    return value if isinstance(value, dict) else None


def waits(row: Row) -> bool:
    """A dead letter waits for an operator until it is re-driven."""
    return _redriven(row.data) is None


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

    def get(self, letter_id: str) -> StoredLetter | None:
        address = letter_address(letter_id)
        if address is None:
            return None
        partition, key = address
        row = self.table.read(partition, [key]).get(key)
        return None if row is None else StoredLetter(letter_id, partition, key, row.etag, row.data)

    def list(self, limit: int = 1000) -> list[StoredLetter]:
        """Dead letters, oldest recorded first (at most `limit` read: a scan, for operators)."""
        letters = [
            StoredLetter(letter_id(partition, row.key), partition, row.key, row.etag, row.data)
            for partition, row in self.table.scan(limit)
        ]
        return sorted(letters, key=lambda letter: (str(letter.data.get("recorded") or ""), letter.id))

    def body(self, letter: StoredLetter) -> str:
        """The raw body, from the row or from blob storage when it was too large for a property."""
        if "body" in letter.data:
            return str(letter.data["body"])
        return self.container().download_blob(str(letter.data["blob"])).readall().decode("utf-8", errors="replace")

    def container(self) -> ContainerClient:
        if self._container is None:
            container = self._container_factory()
            with contextlib.suppress(ResourceExistsError):
                container.create_container()
            self._container = container
        return self._container
