"""Scratch stores for a rebuild: a fresh set of tables (or a Cosmos database) beside the live ones, dropped after.

Tables get a random prefix in the live storage account; a Cosmos store gets a database of its own in the live
account. Dead-letter bodies too large for a row go to a scratch blob container. Nothing live is written.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

from metering.connections import build_container, table_service
from metering.settings import Settings, StoreKind
from metering.stores import Store
from metering.stores.cosmos import CosmosStore
from metering.stores.table import TableStore

# Every table of the store port, by TableStore's keyword and the suffix its scratch table gets.
_TABLES = {
    "usage_table": "usage",
    "conflicts_table": "conflicts",
    "dead_letter_table": "deadletters",
    "tenants_table": "tenants",
    "statements_table": "statements",
    "late_events_table": "lateevents",
    "control_table": "control",
    "journal_table": "journal",
    "exports_table": "exports",
}


class ScratchError(RuntimeError):
    pass


@dataclass
class Scratch:
    store: Store
    name: str  # the tables' prefix, or the Cosmos database
    container: ContainerClient  # dead-letter bodies
    _drop: Callable[[], None]

    def drop(self) -> None:
        self._drop()
        with contextlib.suppress(ResourceNotFoundError):
            self.container.delete_container()
        self.store.close()


def create_scratch(settings: Settings, kind: StoreKind | None = None) -> Scratch:
    """A new, empty scratch store of `kind` (the live store's by default), ready to write."""
    token = uuid.uuid4().hex[:10]
    container = build_container(settings, f"rebuild-{token}-deadletters")
    if (kind or settings.store) is StoreKind.COSMOS:
        return _cosmos(settings, f"rebuild-{token}", container)
    return _tables(settings, f"rebuild{token}", container)


def _tables(settings: Settings, prefix: str, container: ContainerClient) -> Scratch:
    names = {keyword: prefix + suffix for keyword, suffix in _TABLES.items()}
    service = table_service(settings)
    store = TableStore(service, **names)

    def drop() -> None:
        for name in names.values():
            service.delete_table(name)  # a missing table is no error here

    scratch = Scratch(store, prefix, container, drop)
    try:
        store.ensure_ready()
    except Exception:
        scratch.drop()  # what was created so far
        raise
    return scratch


def _cosmos(settings: Settings, database: str, container: ContainerClient) -> Scratch:
    endpoint = settings.cosmos_endpoint
    assert endpoint is not None
    if not settings.cosmos_key:
        # Entra data-plane roles cannot create databases, and the deployed account has its keys off.
        raise ScratchError(
            "a scratch Cosmos database needs an account key (COSMOS_KEY); with identity-based access rebuild "
            "into scratch tables instead: --scratch-store table"
        )
    store = CosmosStore.from_key(
        endpoint, settings.cosmos_key, database, non_atomic_local=settings.cosmos_non_atomic_local
    )
    scratch = Scratch(store, database, container, store.drop)
    try:
        store.ensure_ready()
    except Exception:
        scratch.drop()
        raise
    return scratch
