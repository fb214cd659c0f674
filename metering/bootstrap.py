"""The composition root: the one place where settings choose and wire the real adapters."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from metering.identity import credential
from metering.ledger import Ledger
from metering.meters import MeterCatalog, load_catalog
from metering.periods import CalendarMonthUtc, PeriodSchedule
from metering.settings import Settings, load_settings
from metering.stores import Store
from metering.stores.table import TableStore
from metering.usage import UsageReader


def build_store(settings: Settings) -> Store:
    tables = {"usage_table": settings.usage_table, "conflicts_table": settings.conflicts_table}
    if settings.storage_connection:
        return TableStore.from_connection_string(settings.storage_connection, **tables)
    assert settings.storage_table_uri is not None
    identity = credential(settings.storage_credential, settings.storage_client_id)
    return TableStore.from_endpoint(settings.storage_table_uri, identity, **tables)


@dataclass
class Services:
    """Long-lived objects shared by every invocation in a worker process (clients and caches are reused)."""

    settings: Settings

    @cached_property
    def catalog(self) -> MeterCatalog:
        return load_catalog(self.settings.meters_file)

    @cached_property
    def schedule(self) -> PeriodSchedule:
        return CalendarMonthUtc()

    @cached_property
    def store(self) -> Store:
        store = build_store(self.settings)
        store.ensure_ready()
        return store

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.store, self.catalog, self.schedule)

    @cached_property
    def usage(self) -> UsageReader:
        return UsageReader(self.store, self.catalog, self.schedule)


def services() -> Services:
    return Services(load_settings())
