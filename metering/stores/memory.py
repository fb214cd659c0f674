"""The store port in memory: for unit tests of services, the exactly-once property test's many examples, and
benchmarks that measure code rather than Azurite. Not for the app: nothing survives the process.

It keeps the port's promises as the real stores do, and the conformance suite
(tests/integration/test_store_conformance.py) holds it to them: a commit is atomic (every create and ETag-guarded
replace happens, or none, and `CommitConflict` names the first that failed), creates never overwrite, every write
gets a new ETag, `range` and `partition` return rows in key order, deletes of missing rows are no error. A commit
is measured and refused as Table storage would refuse it (its limits are the tighter of the two stores'), so what
passes here passes there. Rows are kept as JSON text, as a store keeps them: a reader gets its own copy, and a
value JSON cannot hold fails at the write. Thread-safe: one lock per table.
"""

from __future__ import annotations

import itertools
import json
import threading
from bisect import bisect_left, insort
from collections.abc import Callable, Collection, Sequence
from typing import Any

from metering.stores import MAX_TRANSACTION_OPS, CommitConflict, CommitLimits, Create, Operation, Replace, Row
from metering.stores import check_commit as check_limits

# Table storage's limits (stores/table.py): the tighter of the two stores'.
LIMITS = CommitLimits(
    max_operations=MAX_TRANSACTION_OPS,
    max_request_bytes=4 * 1024 * 1024 - 128 * 1024,
    max_row_bytes=1024 * 1024 - 32 * 1024,
)
# What a store's request adds per operation beyond the row's JSON (keys, framing), as Table storage's does.
_FRAMING_BYTES = 800

_etags = itertools.count(1)


def _encode(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=True)


def _sizes(partition: str, op: Operation, text: str) -> tuple[int, int]:
    """(row bytes, request bytes) as Table storage counts them: UTF-16 text, and the row's JSON in the request."""
    row = 2 * (len(partition) + len(op.key) + len(text)) + 64
    return row, len(text) + _FRAMING_BYTES + len(partition) + len(op.key)


class MemoryRows:
    """One table of JSON rows."""

    def __init__(self, name: str, limits: CommitLimits = LIMITS) -> None:
        self.name = name
        self.limits = limits
        self._rows: dict[str, dict[str, tuple[str, str]]] = {}  # partition -> key -> (etag, JSON text)
        self._keys: dict[str, list[str]] = {}  # partition -> its keys, sorted
        self._lock = threading.Lock()

    def read(self, partition: str, keys: Collection[str]) -> dict[str, Row]:
        with self._lock:
            stored = self._rows.get(partition, {})
            return {key: self._row(key, stored[key]) for key in set(keys) if key in stored}

    def range(self, partition: str, start: str, stop: str, limit: int | None = None) -> list[Row]:
        with self._lock:
            keys = self._keys.get(partition, [])
            chosen = keys[bisect_left(keys, start) : bisect_left(keys, stop)]
            stored = self._rows.get(partition, {})
            return [self._row(key, stored[key]) for key in chosen[:limit]]

    def partition(self, partition: str) -> list[Row]:
        with self._lock:
            stored = self._rows.get(partition, {})
            return [self._row(key, stored[key]) for key in self._keys.get(partition, [])]

    def count(self, limit: int | None = None) -> int:
        with self._lock:
            total = sum(len(rows) for rows in self._rows.values())
        return total if limit is None else min(total, limit)

    def count_where(self, where: Callable[[Row], bool], limit: int | None = None) -> int:
        return sum(1 for _, row in self.scan(limit) if where(row))

    def scan(self, limit: int | None = None) -> list[tuple[str, Row]]:
        with self._lock:
            rows = [
                (partition, self._row(key, self._rows[partition][key]))
                for partition in sorted(self._rows)
                for key in self._keys.get(partition, [])
            ]
        return rows[:limit] if limit is not None else rows

    def commit(self, partition: str, operations: Sequence[Operation]) -> list[str]:
        texts = [_encode(op.data) for op in operations]
        check_limits(
            operations, [_sizes(partition, op, text) for op, text in zip(operations, texts, strict=True)], self.limits
        )
        with self._lock:
            stored = self._rows.get(partition, {})
            for index, op in enumerate(operations):
                if isinstance(op, Create) and op.key in stored:
                    raise CommitConflict(index, "EntityAlreadyExists")
                if isinstance(op, Replace):
                    if op.key not in stored:
                        raise CommitConflict(index, "ResourceNotFound")
                    if stored[op.key][0] != op.etag:
                        raise CommitConflict(index, "UpdateConditionNotSatisfied")
            return [self._put(partition, op.key, text) for op, text in zip(operations, texts, strict=True)]

    def upsert(self, partition: str, key: str, data: dict[str, Any]) -> None:
        text = _encode(data)
        with self._lock:
            self._put(partition, key, text)

    def delete(self, partition: str, keys: Collection[str]) -> None:
        with self._lock:
            stored = self._rows.get(partition, {})
            for key in set(keys) & stored.keys():
                del stored[key]
                sorted_keys = self._keys[partition]
                del sorted_keys[bisect_left(sorted_keys, key)]

    def _put(self, partition: str, key: str, text: str) -> str:
        stored = self._rows.setdefault(partition, {})
        if key not in stored:
            insort(self._keys.setdefault(partition, []), key)
        etag = f'W/"{next(_etags)}"'
        stored[key] = (etag, text)
        return etag

    @staticmethod
    def _row(key: str, stored: tuple[str, str]) -> Row:
        return Row(key, stored[0], json.loads(stored[1]))


class MemoryStore:
    """Every table of the store port, in this process's memory."""

    def __init__(self, prefix: str = "metering") -> None:
        self.usage = MemoryRows(prefix + "usage")
        self.conflicts = MemoryRows(prefix + "conflicts")
        self.dead_letters = MemoryRows(prefix + "deadletters")
        self.tenants = MemoryRows(prefix + "tenants")
        self.statements = MemoryRows(prefix + "statements")
        self.late_events = MemoryRows(prefix + "lateevents")
        self.control = MemoryRows(prefix + "control")
        self.journal = MemoryRows(prefix + "journal")
        self.exports = MemoryRows(prefix + "exports")

    def ensure_ready(self) -> None:
        pass

    def close(self) -> None:
        pass
