"""The store port: what the ledger and the readers need from a store, whichever it is.

A store holds tables of JSON rows grouped in partitions. Within one partition it commits a list of operations
atomically (an entity group transaction in Table storage, a transactional batch in Cosmos DB): either every
create and every ETag-guarded replace happens, or none does and `CommitConflict` says which one failed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# Both Table storage transactions and Cosmos DB transactional batches hold at most 100 operations.
MAX_TRANSACTION_OPS = 100


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    etag: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Create:
    """Insert a row that must not exist yet (dedupe markers are only ever created this way)."""

    key: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Replace:
    """Overwrite a row only if it still has `etag`."""

    key: str
    data: dict[str, Any]
    etag: str


Operation = Create | Replace


class CommitConflict(Exception):
    """A precondition of a commit failed (a row to create exists, or a row changed): nothing was written."""

    def __init__(self, index: int | None, reason: str) -> None:
        super().__init__(f"operation {index} failed: {reason}")
        self.index = index
        self.reason = reason


class RowTable(Protocol):
    name: str

    def read(self, partition: str, keys: Collection[str]) -> dict[str, Row]:
        """The rows of `keys` that exist (missing keys are absent from the result)."""
        ...

    def range(self, partition: str, start: str, stop: str, limit: int | None = None) -> list[Row]:
        """Rows with start <= key < stop, in key order; at most `limit` of them when given."""
        ...

    def commit(self, partition: str, operations: Sequence[Operation]) -> list[str]:
        """Apply all operations atomically; returns the new ETag of each, in order."""
        ...

    def upsert(self, partition: str, key: str, data: dict[str, Any]) -> None: ...

    def delete(self, partition: str, keys: Collection[str]) -> None:
        """Delete rows, in atomic groups as large as the store allows; missing rows are no error."""
        ...

    def partition(self, partition: str) -> list[Row]: ...

    def count(self, limit: int | None = None) -> int:
        """How many rows the table holds, across partitions; counting stops at `limit` when given. Costs a scan
        of the keys: for operators (health), never for the counting path."""
        ...


class Store(Protocol):
    usage: RowTable
    conflicts: RowTable
    dead_letters: RowTable
    tenants: RowTable
    statements: RowTable
    late_events: RowTable
    # The open-period index, the hub's applied positions, alert records and the outbox.
    control: RowTable

    def ensure_ready(self) -> None:
        """Create what the store may create, check the rest exists; raise with a clear message if not."""
        ...

    def close(self) -> None: ...
