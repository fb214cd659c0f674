"""Fixtures shared by every test: a real Azurite (and local Cosmos server) per test worker, fresh tables per test.

`store` runs a test on every store: the Table store on Azurite, the Cosmos store on the local Cosmos server,
whose commits are not atomic, and the memory store. `atomic_store` is for tests that need atomic commits (crash
injection, concurrent writers): the Table store, the memory store, and the Cosmos store only against a real
Cosmos DB or its emulator, given by COSMOS_TEST_ENDPOINT and COSMOS_TEST_KEY; without them that case is
reported as skipped, with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import Phase, settings

from metering.core.meters import MeterCatalog, load_catalog
from metering.core.periods import CalendarMonthUtc
from metering.devhost.azurite import Azurite
from metering.devhost.cosmos import CosmosServer
from metering.stores import Store
from metering.stores.memory import MemoryStore
from metering.stores.table import TableStore
from tests.support import NEEDS_REAL_COSMOS, REAL_COSMOS, FixedClock, fresh_cosmos_store, fresh_table_store


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with Azurite(tmp_path_factory.mktemp("azurite")) as running:
        yield running


@pytest.fixture
def table_store(azurite: Azurite) -> Iterator[TableStore]:
    store = fresh_table_store(azurite)
    yield store
    store.close()


@pytest.fixture(scope="session")
def cosmos_server() -> Iterator[CosmosServer]:
    with CosmosServer() as running:
        yield running


def _store_of(kind: str, request: pytest.FixtureRequest) -> Iterator[Store]:
    store: Store
    if kind == "table":
        store = fresh_table_store(request.getfixturevalue("azurite"))
    elif kind == "cosmos":
        server: CosmosServer = request.getfixturevalue("cosmos_server")
        store = fresh_cosmos_store(server.endpoint, server.key, non_atomic_local=True)
    elif kind == "memory":
        store = MemoryStore()
    else:
        store = fresh_cosmos_store(*REAL_COSMOS, non_atomic_local=False)
    yield store
    drop = getattr(store, "drop", None)
    if drop is not None:
        drop()
    store.close()


@pytest.fixture(params=["table", "cosmos", "memory"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    yield from _store_of(request.param, request)


@pytest.fixture(params=["table", "memory", pytest.param("cosmos_atomic", marks=NEEDS_REAL_COSMOS)])
def atomic_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    yield from _store_of(request.param, request)


@pytest.fixture(scope="session")
def catalog() -> MeterCatalog:
    return load_catalog()


@pytest.fixture
def schedule() -> CalendarMonthUtc:
    return CalendarMonthUtc()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))


@pytest.fixture
def project_root() -> Path:
    return Path(__file__).resolve().parents[1]


# `pytest --hypothesis-profile=no-shrink` reports the first failing example as found: shrinking an example
# that runs against Azurite can take minutes.
settings.register_profile("no-shrink", phases=[Phase.explicit, Phase.reuse, Phase.generate])
