"""The store port: what the ledger and the readers need from a store, whichever it is.

A store holds tables of JSON rows grouped in partitions. Within one partition it commits a list of operations
atomically (an entity group transaction in Table storage, a transactional batch in Cosmos DB): either every
create and every ETag-guarded replace happens, or none does and `CommitConflict` says which one failed.

Every other failure is one of two classes, decided here at the boundary (docs/api.md, "Failure classes"):
- `StoreRejected`: the store refused the request for what it holds (an entity or a request too large, a row twice
  in one transaction, a value it cannot take). The same request fails the same way every time, so it is never
  retried as is: the ledger isolates the events that cause it. Only errors on a short allowlist are this class.
- anything else (connection refused, timeouts, throttling, 5xx, 401/403 while roles propagate, a missing table):
  transient. The exception propagates as it is, and the whole batch is retried until the store is back.
Before sending, each store measures a commit as its SDK will encode it and refuses one over its limits with
`StoreRejected`, without a round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
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


class ContentionError(RuntimeError):
    """A write kept meeting concurrent writers until its attempts ran out: transient, retry the whole."""


class StoreRejected(Exception):
    """A deterministic refusal of one request: `code` is the store's error code (or the limit the store's own
    check found broken), `index` the operation it names when known. Nothing of the request was written."""

    def __init__(self, code: str, detail: str, index: int | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.index = index


@dataclass(frozen=True, slots=True)
class CommitLimits:
    """What one commit may hold, as the store counts it, with a margin under the service's own limits."""

    max_operations: int
    max_request_bytes: int
    max_row_bytes: int


def check_commit(operations: Sequence[Operation], sizes: Sequence[tuple[int, int]], limits: CommitLimits) -> None:
    """Refuse a commit the store would refuse: `sizes` are (row bytes, request bytes) of each operation as the
    store encodes it. Each entity at most once, each row and the whole request within the limits."""
    if len(operations) > limits.max_operations:
        raise StoreRejected(
            "TooManyOperations", f"{len(operations)} operations in one commit; at most {limits.max_operations}"
        )
    seen: set[str] = set()
    total = 0
    for index, (op, (row_bytes, request_bytes)) in enumerate(zip(operations, sizes, strict=True)):
        if op.key in seen:
            raise StoreRejected("InvalidDuplicateRow", f"row {op.key} appears twice in one commit", index)
        seen.add(op.key)
        if row_bytes > limits.max_row_bytes:
            raise StoreRejected(
                "EntityTooLarge", f"row {op.key} would be {row_bytes} bytes; at most {limits.max_row_bytes}", index
            )
        total += request_bytes
    if total > limits.max_request_bytes:
        raise StoreRejected(
            "RequestBodyTooLarge", f"the commit would be {total} bytes; at most {limits.max_request_bytes}"
        )


class RowTable(Protocol):
    name: str
    limits: CommitLimits

    def read(self, partition: str, keys: Collection[str]) -> dict[str, Row]:
        """The rows of `keys` that exist (missing keys are absent from the result)."""
        ...

    def range(self, partition: str, start: str, stop: str, limit: int | None = None) -> list[Row]:
        """Rows with start <= key < stop, in key order; at most `limit` of them when given."""
        ...

    def commit(self, partition: str, operations: Sequence[Operation]) -> list[str]:
        """Apply all operations atomically; returns the new ETag of each, in order. Raises `CommitConflict` for a
        failed precondition and `StoreRejected` for a request the store refuses for what it holds."""
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

    def scan(self, limit: int | None = None) -> list[tuple[str, Row]]:
        """Rows across partitions as (partition, row), at most `limit` of them, in no promised order. Costs a
        scan: for operators (the console's lists of what was set aside), never for the counting path."""
        ...

    def count_where(self, where: Callable[[Row], bool], limit: int | None = None) -> int:
        """How many of the table's rows `where` holds for, of at most `limit` rows read, without holding them
        all at once. Costs a scan of the rows: for operators (health: what still waits), never for counting."""
        ...


class Store(Protocol):
    usage: RowTable
    conflicts: RowTable
    dead_letters: RowTable
    tenants: RowTable
    statements: RowTable
    late_events: RowTable
    # Changes that do not travel through the hub (cancels, late-event carries, operator actions): billing/journal.py.
    journal: RowTable
    # The open-period index, the hub's applied positions, alert records and the outbox.
    control: RowTable
    # What each billing target (Stripe, the Azure Marketplace) was sent and acknowledged: billing/exports/rows.py.
    exports: RowTable

    def ensure_ready(self) -> None:
        """Create what the store may create, check the rest exists; raise with a clear message if not."""
        ...

    def close(self) -> None: ...
