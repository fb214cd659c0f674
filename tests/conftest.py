"""Fixtures shared by every test: a real Azurite per test worker, and fresh tables per test."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import Phase, settings

from metering.devhost.azurite import Azurite
from metering.meters import MeterCatalog, load_catalog
from metering.periods import CalendarMonthUtc
from metering.stores.table import TableStore

_names = itertools.count()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with Azurite(tmp_path_factory.mktemp("azurite")) as running:
        yield running


def fresh_table_store(azurite: Azurite) -> TableStore:
    # Table names are alphanumeric: the worker id and a counter keep parallel workers and tests apart.
    suffix = f"{os.environ.get('PYTEST_XDIST_WORKER', 'gw')}{next(_names)}".replace("gw", "w")
    store = TableStore.from_connection_string(
        azurite.connection_string, usage_table=f"usage{suffix}", conflicts_table=f"conflicts{suffix}"
    )
    store.ensure_ready()
    return store


@pytest.fixture
def table_store(azurite: Azurite) -> Iterator[TableStore]:
    store = fresh_table_store(azurite)
    yield store
    store.close()


@pytest.fixture(scope="session")
def catalog() -> MeterCatalog:
    return load_catalog()


@pytest.fixture
def schedule() -> CalendarMonthUtc:
    return CalendarMonthUtc()


class FixedClock:
    """Time that moves only when a test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))


@pytest.fixture
def project_root() -> Path:
    return Path(__file__).resolve().parents[1]


# `pytest --hypothesis-profile=no-shrink` reports the first failing example as found: shrinking an example
# that runs against Azurite can take minutes.
settings.register_profile("no-shrink", phases=[Phase.explicit, Phase.reuse, Phase.generate])
