"""Test doubles at the storage boundary only (they wrap a real store and delegate every call), and the app's
services wired on a test's store.

`Probe` counts round trips, injects a crash around a commit, either before it reaches the store or after the
store applied it (the response is lost, as when a process dies mid-call), or right after the first commit that
holds a claim (between a claim and the application it claims for), and makes the store refuse commits
that hold a row of `refuse` the way a store refuses an oversized entity (`StoreRejected`, nothing written). The
code under test (ledger, readers) is never replaced.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from metering.bootstrap import Services
from metering.devhost.azurite import Azurite
from metering.ledger.keys import MARKERS
from metering.ledger.rows import Marker
from metering.settings import Settings
from metering.stores import Operation, Row, RowTable, Store, StoreRejected
from metering.stores.cosmos import CosmosStore
from metering.stores.table import TableStore


class InjectedCrash(RuntimeError):
    pass


@dataclass
class Probe:
    reads: int = 0
    ranges: int = 0
    commits: int = 0
    failed_commits: int = 0
    crash_after: int | None = None
    crash_applies: bool = False
    # Crash once right after the store applied a commit holding a claim (ledger/placement.py).
    crash_after_claim: bool = False
    refuse: set[str] = field(default_factory=set)
    refused: int = 0
    # Called on every read, before it reaches the store: lets a test start another thread's work at that point.
    on_read: Callable[[], None] | None = None


class ProbedRows:
    def __init__(self, inner: RowTable, probe: Probe) -> None:
        self.inner = inner
        self.probe = probe
        self.name = inner.name
        self.limits = inner.limits

    def read(self, partition: str, keys: Collection[str]) -> dict[str, Row]:
        self.probe.reads += 1
        if self.probe.on_read is not None:
            self.probe.on_read()
        return self.inner.read(partition, keys)

    def range(self, partition: str, start: str, stop: str, limit: int | None = None) -> list[Row]:
        self.probe.ranges += 1
        return self.inner.range(partition, start, stop, limit)

    def partition(self, partition: str) -> list[Row]:
        return self.inner.partition(partition)

    def upsert(self, partition: str, key: str, data: dict[str, Any]) -> None:
        self.inner.upsert(partition, key, data)

    def commit(self, partition: str, operations: Sequence[Operation]) -> list[str]:
        probe = self.probe
        for index, op in enumerate(operations):
            if op.key in probe.refuse:
                probe.refused += 1
                raise StoreRejected("EntityTooLarge", f"injected: the store refuses row {op.key}", index)
        if probe.crash_after is not None and probe.commits >= probe.crash_after:
            probe.crash_after = None
            if probe.crash_applies:
                self.inner.commit(partition, operations)
            raise InjectedCrash(f"crash {'after' if probe.crash_applies else 'before'} commit to {partition}")
        if probe.crash_after_claim and any(Marker(op.data).applied_shard is not None for op in _markers(operations)):
            probe.crash_after_claim = False
            self.inner.commit(partition, operations)
            raise InjectedCrash(f"crash after a claim's commit to {partition}")
        try:
            etags = self.inner.commit(partition, operations)
        except Exception:
            probe.failed_commits += 1
            raise
        probe.commits += 1
        return etags


def _markers(operations: Sequence[Operation]) -> list[Operation]:
    return [op for op in operations if MARKERS.holds(op.key)]


@dataclass
class ProbedStore:
    """A real store whose usage table is watched."""

    inner: Store
    probe: Probe = field(default_factory=Probe)

    def __post_init__(self) -> None:
        self.usage = ProbedRows(self.inner.usage, self.probe)
        self.conflicts = self.inner.conflicts
        self.dead_letters = self.inner.dead_letters
        self.tenants = self.inner.tenants
        self.statements = self.inner.statements
        self.late_events = self.inner.late_events
        self.control = self.inner.control
        self.journal = self.inner.journal
        self.exports = self.inner.exports

    def ensure_ready(self) -> None:
        self.inner.ensure_ready()

    def close(self) -> None:
        pass


def fresh_table_store(azurite: Azurite) -> TableStore:
    # Random names: every test and hypothesis example gets tables no other one has touched.
    suffix = uuid.uuid4().hex
    store = TableStore.from_connection_string(
        azurite.connection_string, usage_table=f"u{suffix}", conflicts_table=f"c{suffix}"
    )
    store.ensure_ready()
    return store


def fresh_cosmos_store(endpoint: str, key: str, *, non_atomic_local: bool) -> CosmosStore:
    # A database per test: the containers keep the names the Bicep declares, and no test sees another's rows.
    store = CosmosStore.from_key(endpoint, key, f"t{uuid.uuid4().hex}", non_atomic_local=non_atomic_local)
    store.ensure_ready()
    return store


# Atomicity (crash injection, concurrent writers) can only be checked on a real Cosmos DB: the local server's
# transactional batch is not atomic. These cases run when one is configured, and say why they did not otherwise.
REAL_COSMOS = (os.environ.get("COSMOS_TEST_ENDPOINT", ""), os.environ.get("COSMOS_TEST_KEY", ""))
NEEDS_REAL_COSMOS = pytest.mark.skipif(
    not all(REAL_COSMOS),
    reason="needs a real Cosmos DB (COSMOS_TEST_ENDPOINT/COSMOS_TEST_KEY): the local server's batch is not atomic",
)


class _GivenSettings(Settings):
    """Settings from the values given and the defaults alone: pydantic-settings would read the environment too."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: Any, init_settings: Any, **sources: Any) -> tuple[Any, ...]:
        return (init_settings,)


def make_settings(**values: Any) -> Settings:
    """Settings as the app reads them, from `values` (by field name) and the defaults only: never from the
    environment, which another test (the dev host's) may have changed for the whole worker."""
    return _GivenSettings.model_validate({"storage_connection": "UseDevelopmentStorage=true", **values})


def wired(store: Store, *, settings: Settings | None = None, **parts: Any) -> Services:
    """The app's services on `store`, as the composition root wires them; `parts` are Services' other keywords
    (clock, schedule, sink, backlog, ...)."""
    return Services(settings or make_settings(), store=store, **parts)


class FixedClock:
    """Time that moves only when a test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def run_async(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to its end in a thread of its own: the session's browser (Playwright's sync API) keeps an
    event loop running in this worker's main thread, where asyncio.run would refuse to start another."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
