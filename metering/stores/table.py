"""Azure Table storage (also Azurite and Cosmos DB for Table) behind the store port.

A row's JSON is kept in string properties d0, d1, ... of at most 32,000 ASCII characters each: a string
property holds 64 KiB of UTF-16, and JSON with escaped non-ASCII text is ASCII. Keys go into PartitionKey and
RowKey unchanged; the callers build them from restricted or hashed parts only.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Callable, Collection, Sequence
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient, TableTransactionError, UpdateMode

from metering.stores import (
    MAX_TRANSACTION_OPS,
    CommitConflict,
    CommitLimits,
    Create,
    Operation,
    Replace,
    Row,
    StoreRejected,
    check_commit,
)

_CHUNK = 32_000
_DATA_PROPERTIES = tuple(f"d{i}" for i in range(30))
# Error codes of a failed precondition, as opposed to a request the service refuses outright.
_CONFLICT_CODES = {"EntityAlreadyExists", "UpdateConditionNotSatisfied", "ResourceNotFound"}
# Errors caused by what was sent: the same request fails the same way every time (docs/api.md, "Failure
# classes"). Anything else (throttling, 5xx, timeouts, 401/403 while roles propagate, TableNotFound) is transient
# and propagates as is.
# A wrong entry here dead-letters events during an outage, so the list is short.
DETERMINISTIC_CODES = frozenset(
    {
        "EntityTooLarge",
        "RequestBodyTooLarge",
        "InvalidDuplicateRow",
        "PropertyValueTooLarge",
        "KeyValueTooLarge",
        "TooManyProperties",
        "InvalidInput",
        "OutOfRangeInput",
    }
)
# Table storage takes at most 4 MiB per transaction request and 1 MiB per entity (measured as below); a margin
# keeps a commit clear of them whatever the SDK's framing adds beyond what is counted here.
LIMITS = CommitLimits(
    max_operations=MAX_TRANSACTION_OPS,
    max_request_bytes=4 * 1024 * 1024 - 128 * 1024,
    max_row_bytes=1024 * 1024 - 32 * 1024,
)
# What the SDK's multipart framing adds per operation beyond the entity's JSON (its MIME headers and the
# request line with both keys): 567 bytes for a create and 632 for an update when measured against Azurite.
_FRAMING_BYTES = 800
# Azure Tables allows at most 15 comparisons in one $filter: the PartitionKey test plus 14 RowKeys.
_KEYS_PER_QUERY = 14
# The SDK's own exponential retry for transient faults (timeouts, 5xx, throttling). Kept short: a batch
# that still fails is retried whole by the Event Hub trigger's retry policy.
RETRY = {"retry_total": 4, "retry_backoff_factor": 0.4, "retry_backoff_max": 8}


def _literal(text: str) -> str:
    # An OData string literal. (The SDK's @parameter substitution splits the filter on spaces, so a
    # parameter next to a parenthesis is not found.)
    return "'" + text.replace("'", "''") + "'"


def encode(partition: str, key: str, data: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=True)
    entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": key}
    for i in range(0, max(len(text), 1), _CHUNK):
        entity[f"d{i // _CHUNK}"] = text[i : i + _CHUNK]
    return entity


def entity_bytes(entity: dict[str, Any]) -> int:
    """An entity's size as Table storage counts it against its 1 MiB limit: strings are UTF-16 (all ours are
    ASCII, two bytes a character), each property costs 8 bytes plus its name plus its value (4 + its text)."""
    size = 4 + 2 * (len(entity["PartitionKey"]) + len(entity["RowKey"]))
    for name, value in entity.items():
        if name not in ("PartitionKey", "RowKey"):
            size += 8 + 2 * len(name) + 4 + 2 * len(value)
    return size


def request_bytes(entity: dict[str, Any], etag: str | None) -> int:
    """An operation's share of the transaction's body as the SDK encodes it: the entity as JSON (the row's JSON
    text is escaped once more inside it) and its framing."""
    return len(json.dumps(entity)) + _FRAMING_BYTES + (len(etag) if etag else 0)


def rejected_code(error: HttpResponseError) -> str | None:
    """The allowlisted code of a deterministic refusal, or None: the error is then transient."""
    code = getattr(error, "error_code", None)
    return str(code) if code is not None and str(code) in DETERMINISTIC_CODES else None


def decode(entity: dict[str, Any]) -> Row:
    text = "".join(entity[name] for name in _DATA_PROPERTIES if name in entity)
    return Row(entity["RowKey"], entity.metadata["etag"], json.loads(text))  # type: ignore[attr-defined]


class TableRows:
    """One table of JSON rows."""

    def __init__(self, client: TableClient) -> None:
        self._client = client
        self.name = client.table_name
        self.limits = LIMITS

    def read(self, partition: str, keys: Collection[str]) -> dict[str, Row]:
        wanted = sorted(set(keys))
        found: dict[str, Row] = {}
        for i in range(0, len(wanted), _KEYS_PER_QUERY):
            group = wanted[i : i + _KEYS_PER_QUERY]
            keys_filter = " or ".join(f"RowKey eq {_literal(key)}" for key in group)
            query = f"PartitionKey eq {_literal(partition)} and ({keys_filter})"
            for entity in self._client.query_entities(query):
                row = decode(entity)
                found[row.key] = row
        return found

    def range(self, partition: str, start: str, stop: str, limit: int | None = None) -> list[Row]:
        query = f"PartitionKey eq {_literal(partition)} and RowKey ge {_literal(start)} and RowKey lt {_literal(stop)}"
        # Table storage returns a partition's rows in RowKey order, page by page.
        entities = self._client.query_entities(query, results_per_page=min(limit or 1000, 1000))
        return [decode(entity) for entity in itertools.islice(entities, limit)]

    def partition(self, partition: str) -> list[Row]:
        entities = self._client.query_entities(f"PartitionKey eq {_literal(partition)}")
        return [decode(e) for e in entities]

    def count(self, limit: int | None = None) -> int:
        # Table storage has no count: page through the keys alone, 1,000 to a response.
        entities = self._client.list_entities(select=["PartitionKey", "RowKey"], results_per_page=1000)
        return sum(1 for _ in itertools.islice(entities, limit))

    def count_where(self, where: Callable[[Row], bool], limit: int | None = None) -> int:
        entities = self._client.list_entities(results_per_page=1000)
        return sum(1 for entity in itertools.islice(entities, limit) if where(decode(entity)))

    def scan(self, limit: int | None = None) -> list[tuple[str, Row]]:
        entities = self._client.list_entities(results_per_page=min(limit or 1000, 1000))
        return [(entity["PartitionKey"], decode(entity)) for entity in itertools.islice(entities, limit)]

    def commit(self, partition: str, operations: Sequence[Operation]) -> list[str]:
        batch: list[Any] = []
        sizes: list[tuple[int, int]] = []
        for op in operations:
            entity = encode(partition, op.key, op.data)
            if isinstance(op, Create):
                batch.append(("create", entity))
                sizes.append((entity_bytes(entity), request_bytes(entity, None)))
            elif isinstance(op, Replace):
                options = {
                    "mode": UpdateMode.REPLACE,
                    "etag": op.etag,
                    "match_condition": MatchConditions.IfNotModified,
                }
                batch.append(("update", entity, options))
                sizes.append((entity_bytes(entity), request_bytes(entity, op.etag)))
        check_commit(operations, sizes, self.limits)
        try:
            results = self._client.submit_transaction(batch)
        except TableTransactionError as error:
            if error.error_code in _CONFLICT_CODES:
                raise CommitConflict(error.index, str(error.error_code)) from None
            if (code := rejected_code(error)) is not None:
                raise StoreRejected(code, str(error.message or error).splitlines()[0], error.index) from None
            raise
        except HttpResponseError as error:
            # A request refused before its operations are read (RequestBodyTooLarge) is not a transaction error.
            if (code := rejected_code(error)) is not None:
                raise StoreRejected(code, str(error.message or error).splitlines()[0]) from None
            raise
        return [result["etag"] for result in results]

    def upsert(self, partition: str, key: str, data: dict[str, Any]) -> None:
        self._client.upsert_entity(encode(partition, key, data), mode=UpdateMode.REPLACE)

    def delete(self, partition: str, keys: Collection[str]) -> None:
        wanted = sorted(set(keys))
        for i in range(0, len(wanted), MAX_TRANSACTION_OPS):
            group = wanted[i : i + MAX_TRANSACTION_OPS]
            try:
                self._client.submit_transaction([("delete", {"PartitionKey": partition, "RowKey": k}) for k in group])
            except TableTransactionError as error:
                if error.error_code != "ResourceNotFound":
                    raise
                # One row of the group is gone already (a concurrent purge): delete the rest one by one.
                for key in group:
                    with contextlib.suppress(ResourceNotFoundError):
                        self._client.delete_entity(partition, key)


class TableStore:
    """The metering tables of one storage account."""

    def __init__(
        self,
        service: TableServiceClient,
        *,
        usage_table: str,
        conflicts_table: str,
        dead_letter_table: str | None = None,
        tenants_table: str | None = None,
        statements_table: str | None = None,
        late_events_table: str | None = None,
        control_table: str | None = None,
        journal_table: str | None = None,
        exports_table: str | None = None,
    ) -> None:
        self._service = service

        def rows(name: str | None, suffix: str) -> TableRows:
            # Tests name only the usage table; the others follow it, so each test's tables stay its own.
            return TableRows(service.get_table_client(name or usage_table + suffix))

        self.usage = rows(usage_table, "")
        self.conflicts = rows(conflicts_table, "conflicts")
        self.dead_letters = rows(dead_letter_table, "dead")
        self.tenants = rows(tenants_table, "tenants")
        self.statements = rows(statements_table, "statements")
        self.late_events = rows(late_events_table, "late")
        self.control = rows(control_table, "control")
        self.journal = rows(journal_table, "journal")
        self.exports = rows(exports_table, "exports")
        self._all = (
            self.usage,
            self.conflicts,
            self.dead_letters,
            self.tenants,
            self.statements,
            self.late_events,
            self.control,
            self.journal,
            self.exports,
        )

    @classmethod
    def from_connection_string(cls, connection: str, **tables: str) -> TableStore:
        return cls(TableServiceClient.from_connection_string(connection, **RETRY), **tables)

    @classmethod
    def from_endpoint(cls, endpoint: str, credential: Any, **tables: str) -> TableStore:
        return cls(TableServiceClient(endpoint, credential=credential, **RETRY), **tables)

    def ensure_ready(self) -> None:
        for table in self._all:
            with contextlib.suppress(ResourceExistsError):
                self._service.create_table(table.name)

    def close(self) -> None:
        self._service.close()
