"""Fixtures shared by every test: a real Azurite per test worker, and fresh tables per test."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import Phase, settings

from metering.devhost.azurite import Azurite
from metering.meters import MeterCatalog, load_catalog
from metering.periods import CalendarMonthUtc
from metering.stores.table import TableStore
from tests.support import FixedClock, fresh_table_store


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
