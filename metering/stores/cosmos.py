"""Azure Cosmos DB for NoSQL behind the store port.

One database, one container per table, partition key path `/pk` holding the store's partition string (the
synthetic `tenant|period|shard` the ledger builds), document id = row key. A document is
`{"id": key, "pk": partition, "d": data}` and its ETag is `_etag`. Row data stays JSON as the ledger wrote it:
totals are decimal strings, never Cosmos numbers (doubles), so nothing here ever patches or increments.

A commit is one transactional batch per partition (creates, and replaces guarded by `if_match_etag`): Cosmos
applies all of it or none. The local Cosmos server (`@vercel/cosmosdb-server`) cannot run the SDK's batch, so
with `non_atomic_local` -- allowed only for an endpoint on loopback -- a commit checks its preconditions and
then applies the operations one by one. That is correct for one writer that does not crash, and is not atomic:
crash and concurrency guarantees hold only against a real Cosmos DB (or its emulator).

Dedupe markers are purged by the period closer after the dedupe retention, as in the Table store. The
containers have TTL enabled with no default (`defaultTtl` -1, nothing expires unless it says so); given
`marker_ttl_seconds`, markers also carry a `ttl` as a backstop should the closer never run.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import logging
from collections.abc import Callable, Collection, Sequence
from typing import Any
from urllib.parse import urlparse

from azure.core import MatchConditions
from azure.cosmos import ContainerProxy, CosmosClient, DatabaseProxy, PartitionKey
from azure.cosmos.exceptions import (
    CosmosBatchOperationError,
    CosmosHttpResponseError,
    CosmosResourceNotFoundError,
)

from metering.ledger.keys import MARKERS
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

log = logging.getLogger(__name__)

# Container of each table of the store port: the names the Bicep declares (infra/main.bicep, cosmosContainers).
CONTAINERS = {
    "usage": "usage",
    "conflicts": "conflicts",
    "dead_letters": "deadletters",
    "tenants": "tenants",
    "statements": "statements",
    "late_events": "lateevents",
    "control": "control",
    "journal": "journal",
    "exports": "exports",
}
PARTITION_KEY_PATH = "/pk"
# A failed precondition inside a batch or a single request: the row to create exists (409), the row changed
# (412) or is gone (404). Any other status is a fault the caller retries.
_CONFLICT_STATUSES = {409, 412, 404}
# Statuses that refuse a request for its content (too large, or a body it cannot take): the same request fails
# the same way every time (docs/api.md, "Failure classes"). Any other status, 429 and 5xx included, is transient.
_REJECTED_STATUSES = {400, 413}
# A transactional batch holds at most 2 MB and an item at most 2 MB (its JSON, UTF-8); with a margin for the
# batch's own framing beyond what is counted here.
LIMITS = CommitLimits(
    max_operations=MAX_TRANSACTION_OPS,
    max_request_bytes=2 * 1024 * 1024 - 64 * 1024,
    max_row_bytes=2 * 1024 * 1024 - 64 * 1024,
)
_FRAMING_BYTES = 200
# Throttling (429) and transient faults are retried by the SDK; kept short, like the Table store, because a
# batch that still fails is retried whole by the Event Hub trigger's retry policy.
RETRY = {"retry_total": 4, "retry_backoff_factor": 0.4, "retry_backoff_max": 8}


class CosmosStoreError(RuntimeError):
    pass


def is_loopback(endpoint: str) -> bool:
    host = urlparse(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _row(document: dict[str, Any]) -> Row:
    return Row(document["id"], document["_etag"], document["d"])


class CosmosRows:
    """One container of JSON rows."""

    def __init__(
        self, container: ContainerProxy, name: str, *, atomic: bool = True, marker_ttl_seconds: int | None = None
    ) -> None:
        self._container = container
        self.name = name
        self._atomic = atomic
        self._marker_ttl = marker_ttl_seconds if name == CONTAINERS["usage"] else None
        self.limits = LIMITS

    def _document(self, partition: str, key: str, data: dict[str, Any]) -> dict[str, Any]:
        document: dict[str, Any] = {"id": key, "pk": partition, "d": data}
        if self._marker_ttl is not None and MARKERS.holds(key):
            document["ttl"] = self._marker_ttl
        return document

    def _query(self, partition: str, where: str, parameters: list[dict[str, Any]], limit: int | None = None) -> Any:
        # The filter repeats the partition key: the local server does not scope a query to its partition, and
        # it refuses a query without parameters. On Cosmos DB the extra test costs nothing.
        return self._container.query_items(
            f"SELECT * FROM c WHERE c.pk = @pk AND {where} ORDER BY c.id",
            parameters=[{"name": "@pk", "value": partition}, *parameters],
            partition_key=partition,
            max_item_count=min(limit or 1000, 1000),
        )

    def read(self, partition: str, keys: Collection[str]) -> dict[str, Row]:
        wanted = sorted(set(keys))
        found: dict[str, Row] = {}
        # One query per partition and group: cheaper in RU and round trips than a point read per key.
        for i in range(0, len(wanted), MAX_TRANSACTION_OPS):
            parameters = [{"name": "@ids", "value": wanted[i : i + MAX_TRANSACTION_OPS]}]
            for document in self._query(partition, "ARRAY_CONTAINS(@ids, c.id)", parameters):
                row = _row(document)
                found[row.key] = row
        return found

    def range(self, partition: str, start: str, stop: str, limit: int | None = None) -> list[Row]:
        parameters = [{"name": "@start", "value": start}, {"name": "@stop", "value": stop}]
        documents = self._query(partition, "c.id >= @start AND c.id < @stop", parameters, limit)
        return [_row(document) for document in itertools.islice(documents, limit)]

    def partition(self, partition: str) -> list[Row]:
        return [_row(document) for document in self._query(partition, "true", [])]

    def count(self, limit: int | None = None) -> int:
        # One cross-partition aggregate query: Cosmos counts on the server, whatever the number of documents.
        # (The local server refuses queries without parameters, hence the idle one.)
        documents = self._container.query_items(
            "SELECT VALUE COUNT(1) FROM c WHERE @all",
            parameters=[{"name": "@all", "value": True}],
            enable_cross_partition_query=True,
        )
        total = sum(int(value) for value in documents)
        return total if limit is None else min(total, limit)

    def count_where(self, where: Callable[[Row], bool], limit: int | None = None) -> int:
        documents = self._container.query_items(
            "SELECT * FROM c WHERE @all",
            parameters=[{"name": "@all", "value": True}],
            enable_cross_partition_query=True,
            max_item_count=1000,
        )
        return sum(1 for document in itertools.islice(documents, limit) if where(_row(document)))

    def scan(self, limit: int | None = None) -> list[tuple[str, Row]]:
        documents = self._container.query_items(
            "SELECT * FROM c WHERE @all",
            parameters=[{"name": "@all", "value": True}],
            enable_cross_partition_query=True,
            max_item_count=min(limit or 1000, 1000),
        )
        return [(document["pk"], _row(document)) for document in itertools.islice(documents, limit)]

    def commit(self, partition: str, operations: Sequence[Operation]) -> list[str]:
        return self._execute_batch(partition, operations)

    def _execute_batch(self, partition: str, operations: Sequence[Operation]) -> list[str]:
        """The one place a commit reaches Cosmos: a transactional batch, or (local server only) one by one."""
        documents = [self._document(partition, op.key, op.data) for op in operations]
        sizes = []
        for op, document in zip(operations, documents, strict=True):
            size = len(json.dumps(document).encode())
            sizes.append((size, size + _FRAMING_BYTES + (len(op.etag) if isinstance(op, Replace) else 0)))
        # Checked before anything is sent, on either path: the one-by-one path must not write half a commit.
        check_commit(operations, sizes, self.limits)
        if not self._atomic:
            return self._apply_one_by_one(partition, operations, documents)
        batch: list[Any] = []
        for op, document in zip(operations, documents, strict=True):
            if isinstance(op, Create):
                batch.append(("create", (document,)))
            elif isinstance(op, Replace):
                batch.append(("replace", (op.key, document), {"if_match_etag": op.etag}))
        try:
            results = self._container.execute_item_batch(batch, partition_key=partition)
        except CosmosBatchOperationError as error:
            index = error.error_index
            status = error.operation_responses[index].get("statusCode") if index is not None else error.status_code
            if status in _CONFLICT_STATUSES:
                raise CommitConflict(index, f"status {status}") from None
            if status in _REJECTED_STATUSES:
                raise StoreRejected(f"status {status}", str(error.message).splitlines()[0], index) from None
            raise
        except CosmosHttpResponseError as error:
            if error.status_code in _REJECTED_STATUSES:
                raise StoreRejected(f"status {error.status_code}", str(error.message).splitlines()[0]) from None
            raise
        return [result["eTag"] for result in results]

    def _apply_one_by_one(
        self, partition: str, operations: Sequence[Operation], documents: Sequence[dict[str, Any]]
    ) -> list[str]:
        # Check every precondition first, so that a conflict found here writes nothing; a writer racing between
        # the check and the writes can still leave part of the commit applied (hence local only).
        existing = self.read(partition, [op.key for op in operations])
        for index, op in enumerate(operations):
            row = existing.get(op.key)
            if isinstance(op, Create) and row is not None:
                raise CommitConflict(index, "status 409")
            if isinstance(op, Replace) and (row is None or row.etag != op.etag):
                raise CommitConflict(index, "status 412" if row else "status 404")
        etags: list[str] = []
        for index, (op, document) in enumerate(zip(operations, documents, strict=True)):
            try:
                if isinstance(op, Create):
                    result = self._container.create_item(document)
                else:
                    result = self._container.replace_item(
                        op.key, document, etag=op.etag, match_condition=MatchConditions.IfNotModified
                    )
            except CosmosHttpResponseError as error:
                if error.status_code in _CONFLICT_STATUSES:
                    raise CommitConflict(index, f"status {error.status_code}") from None
                if error.status_code in _REJECTED_STATUSES:
                    detail = str(error.message).splitlines()[0]
                    raise StoreRejected(f"status {error.status_code}", detail, index) from None
                raise
            etags.append(result["_etag"])
        return etags

    def upsert(self, partition: str, key: str, data: dict[str, Any]) -> None:
        self._container.upsert_item(self._document(partition, key, data))

    def delete(self, partition: str, keys: Collection[str]) -> None:
        # Deletes are idempotent and need no atomicity (a purge that stops halfway is resumed), so point deletes.
        for key in sorted(set(keys)):
            with contextlib.suppress(CosmosResourceNotFoundError):
                self._container.delete_item(key, partition_key=partition)


def _refuse_off_loopback(endpoint: str, *, non_atomic_local: bool) -> None:
    if non_atomic_local and not is_loopback(endpoint):
        raise CosmosStoreError(
            f"COSMOS_NON_ATOMIC_LOCAL is set but the Cosmos endpoint {endpoint!r} is not on loopback: "
            "commits without a transactional batch are only allowed against a local test server"
        )


class CosmosStore:
    """The metering containers of one Cosmos DB database."""

    def __init__(
        self,
        client: CosmosClient,
        database: str,
        *,
        can_create: bool,
        non_atomic_local: bool = False,
        endpoint: str = "",
        marker_ttl_seconds: int | None = None,
    ) -> None:
        _refuse_off_loopback(endpoint, non_atomic_local=non_atomic_local)
        if non_atomic_local:
            log.warning(
                "Cosmos store on %s with COSMOS_NON_ATOMIC_LOCAL: commits are NOT atomic (no transactional batch); "
                "a crash or a concurrent writer can leave a commit half applied",
                endpoint,
            )
        self._client = client
        self._database: DatabaseProxy = client.get_database_client(database)
        self._database_name = database
        self._can_create = can_create

        def rows(attribute: str) -> CosmosRows:
            name = CONTAINERS[attribute]
            container = self._database.get_container_client(name)
            return CosmosRows(container, name, atomic=not non_atomic_local, marker_ttl_seconds=marker_ttl_seconds)

        self.usage = rows("usage")
        self.conflicts = rows("conflicts")
        self.dead_letters = rows("dead_letters")
        self.tenants = rows("tenants")
        self.statements = rows("statements")
        self.late_events = rows("late_events")
        self.control = rows("control")
        self.journal = rows("journal")
        self.exports = rows("exports")

    @classmethod
    def from_key(
        cls, endpoint: str, key: str, database: str, *, non_atomic_local: bool = False, **options: Any
    ) -> CosmosStore:
        # Before the client, which contacts the endpoint as it is built.
        _refuse_off_loopback(endpoint, non_atomic_local=non_atomic_local)
        # The local server's certificate is self-signed: skip verification for loopback only.
        client = CosmosClient(endpoint, credential=key, connection_verify=not is_loopback(endpoint), **RETRY)
        return cls(client, database, can_create=True, non_atomic_local=non_atomic_local, endpoint=endpoint, **options)

    @classmethod
    def from_identity(cls, endpoint: str, credential: Any, database: str, **options: Any) -> CosmosStore:
        # With Entra ID, data-plane roles cannot create databases or containers: the Bicep declares them.
        client = CosmosClient(endpoint, credential=credential, **RETRY)
        return cls(client, database, can_create=False, endpoint=endpoint, **options)

    def ensure_ready(self) -> None:
        if self._can_create:
            database = self._client.create_database_if_not_exists(self._database_name)
            for name in CONTAINERS.values():
                database.create_container_if_not_exists(
                    name, partition_key=PartitionKey(path=PARTITION_KEY_PATH), default_ttl=-1
                )
            return
        missing: list[str] = []
        try:
            self._database.read()
        except CosmosResourceNotFoundError:
            raise CosmosStoreError(
                f"Cosmos database {self._database_name!r} does not exist: deploy infra/ (the Bicep creates it "
                "and its containers; with identity-based access the app cannot)"
            ) from None
        for name in CONTAINERS.values():
            try:
                self._database.get_container_client(name).read()
            except CosmosResourceNotFoundError:
                missing.append(name)
        if missing:
            raise CosmosStoreError(
                f"Cosmos containers missing in database {self._database_name!r}: {', '.join(missing)} "
                "(deploy infra/: with identity-based access the app cannot create them)"
            )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.__exit__(None, None, None)

    def drop(self) -> None:
        """Delete the whole database (tests give every case its own)."""
        with contextlib.suppress(CosmosResourceNotFoundError):
            self._client.delete_database(self._database_name)
