"""The composition root: the one place where settings choose and wire the real adapters."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache, cached_property

from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient

from metering.alerts import AlertWatch
from metering.api.billing import Billing
from metering.api.ingest import Ingest
from metering.api.manage import Manage
from metering.api.reads import Reads
from metering.archive.publisher import ArchivingPublisher, CaptureWriter
from metering.cancel import Cancels
from metering.closing import Backlog, PeriodCloser
from metering.consumer import AfterApply
from metering.control import HubProgress
from metering.deadletters import DeadLetters
from metering.identity import credential
from metering.journal import Journal
from metering.late import LateEvents
from metering.ledger import Clock, Ledger, utc_now
from metering.meters import MeterCatalog, load_catalog
from metering.notifications import Outbox, QueueSink
from metering.periods import PeriodSchedule, TenantSchedule
from metering.plans import PlanCatalog, load_plans
from metering.settings import Settings, StoreKind, load_settings
from metering.stores import Store
from metering.stores.cosmos import CosmosStore
from metering.stores.table import TableStore
from metering.tenants import TenantDirectory
from metering.transport import EVENT_HUB_MESSAGE_BYTES, QUEUE_MESSAGE_BYTES, Publisher
from metering.transport.eventhub import EventHubBacklog, EventHubPublisher
from metering.transport.queue import QueueBacklog, QueuePublisher, queue_client, queue_client_at, storage_retry
from metering.usage import UsageReader


def build_store(settings: Settings) -> Store:
    if settings.store is StoreKind.COSMOS:
        return build_cosmos_store(settings)
    tables = {
        "usage_table": settings.usage_table,
        "conflicts_table": settings.conflicts_table,
        "dead_letter_table": settings.dead_letter_table,
        "tenants_table": settings.tenants_table,
        "statements_table": settings.statements_table,
        "late_events_table": settings.late_events_table,
        "control_table": settings.control_table,
        "journal_table": settings.journal_table,
    }
    if settings.storage_connection:
        return TableStore.from_connection_string(settings.storage_connection, **tables)
    assert settings.storage_table_uri is not None
    identity = credential(settings.storage_credential, settings.storage_client_id)
    return TableStore.from_endpoint(settings.storage_table_uri, identity, **tables)


def build_cosmos_store(settings: Settings) -> CosmosStore:
    endpoint, database = settings.cosmos_endpoint, settings.cosmos_database
    assert endpoint is not None
    if settings.cosmos_key:
        return CosmosStore.from_key(
            endpoint, settings.cosmos_key, database, non_atomic_local=settings.cosmos_non_atomic_local
        )
    if settings.cosmos_non_atomic_local:
        raise ValueError("COSMOS_NON_ATOMIC_LOCAL is for the local Cosmos server, reached with COSMOS_KEY")
    identity = credential(settings.cosmos_credential, settings.cosmos_client_id)
    return CosmosStore.from_identity(endpoint, identity, database)


def build_publisher(settings: Settings, clock: Clock = utc_now) -> Publisher:
    hub = settings.event_hub_name
    if settings.event_hub_connection:
        return EventHubPublisher.from_connection_string(settings.event_hub_connection, hub)
    if settings.event_hub_namespace:
        identity = credential(settings.event_hub_credential, settings.event_hub_client_id)
        return EventHubPublisher.from_namespace(settings.event_hub_namespace, hub, identity)
    if not settings.storage_connection:
        raise ValueError(
            "no Event Hub configured (EventHubConnection) and no storage connection string for the local queue"
        )
    # Event Hubs Capture archives what the hub accepts; the local queue gets the same archive from the dev host.
    queue = QueuePublisher(queue_client(settings.storage_connection, settings.local_queue))
    archive = CaptureWriter(build_container(settings, settings.archive_container), hub=hub)
    return ArchivingPublisher(queue, archive, clock)


def build_queue(settings: Settings, name: str) -> QueueClient:
    if settings.storage_connection:
        return queue_client(settings.storage_connection, name)
    if not settings.storage_queue_uri:
        raise ValueError("set AzureWebJobsStorage__queueServiceUri for the notifications queue")
    identity = credential(settings.storage_credential, settings.storage_client_id)
    return queue_client_at(settings.storage_queue_uri, name, identity)


def build_backlog(settings: Settings) -> Backlog:
    hub, group = settings.event_hub_name, settings.event_hub_consumer_group
    if settings.event_hub_connection:
        return EventHubBacklog.from_connection_string(settings.event_hub_connection, hub, group)
    if settings.event_hub_namespace:
        identity = credential(settings.event_hub_credential, settings.event_hub_client_id)
        return EventHubBacklog.from_namespace(settings.event_hub_namespace, hub, group, identity)
    return QueueBacklog(build_queue(settings, settings.local_queue))


def build_container(settings: Settings, name: str | None = None) -> ContainerClient:
    """A blob container of the storage account: the dead-letter bodies' unless named."""
    name = name or settings.dead_letter_container
    if settings.storage_connection:
        return ContainerClient.from_connection_string(settings.storage_connection, name, retry_policy=storage_retry())
    if not settings.storage_blob_uri:
        raise ValueError(f"set AzureWebJobsStorage__blobServiceUri for the blob container {name}")
    identity = credential(settings.storage_credential, settings.storage_client_id)
    return ContainerClient(settings.storage_blob_uri, name, credential=identity, retry_policy=storage_retry())


@dataclass
class Services:
    """Long-lived objects shared by every invocation in a worker process (clients and caches are reused)."""

    settings: Settings
    clock: Clock = field(default=utc_now)

    @cached_property
    def catalog(self) -> MeterCatalog:
        return load_catalog(self.settings.meters_file)

    @cached_property
    def plans(self) -> PlanCatalog:
        return load_plans(self.settings.plans_file, self.catalog)

    @cached_property
    def directory(self) -> TenantDirectory:
        return TenantDirectory(self.store.tenants, self.plans, self.catalog, clock=self.clock)

    @cached_property
    def schedule(self) -> PeriodSchedule:
        return TenantSchedule(self.directory.history)

    @cached_property
    def outbox(self) -> Outbox:
        return Outbox(self.store.control, QueueSink(build_queue(self.settings, self.settings.notifications_queue)))

    @cached_property
    def closer(self) -> PeriodCloser:
        return PeriodCloser(
            self.store,
            self.catalog,
            self.outbox,
            build_backlog(self.settings),
            grace=self.settings.grace,
            retention=self.settings.dedupe_retention,
            clock=self.clock,
        )

    @cached_property
    def late_events(self) -> LateEvents:
        return LateEvents(
            self.store.late_events,
            self.ledger,
            self.schedule,
            self.settings.late_event_policy,
            self.clock,
            journal=self.journal,
        )

    @cached_property
    def after_apply(self) -> AfterApply:
        return AfterApply(
            late=self.late_events,
            alerts=AlertWatch(self.directory.limits, self.settings.thresholds, self.outbox, self.clock),
            outbox=self.outbox,
            progress=HubProgress(self.store.control),
        )

    @cached_property
    def billing(self) -> Billing:
        cancels = Cancels(
            self.store,
            self.catalog,
            self.schedule,
            clock=self.clock,
            max_future=self.settings.max_future,
            journal=self.journal,
        )
        return Billing(self.store.statements, self.late_events, cancels)

    @cached_property
    def journal(self) -> Journal:
        return Journal(self.store.journal)

    @cached_property
    def manage(self) -> Manage:
        return Manage(self.directory, self.closer, self.clock)

    @cached_property
    def store(self) -> Store:
        store = build_store(self.settings)
        store.ensure_ready()
        return store

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.store, self.catalog, self.schedule, clock=self.clock)

    @cached_property
    def usage(self) -> UsageReader:
        return UsageReader(self.store, self.catalog, self.schedule, clock=self.clock)

    @cached_property
    def publisher(self) -> Publisher:
        return build_publisher(self.settings, self.clock)

    @cached_property
    def ingest(self) -> Ingest:
        return Ingest(
            self.catalog,
            self.publisher,
            max_message_bytes=EVENT_HUB_MESSAGE_BYTES if self.settings.uses_event_hub else QUEUE_MESSAGE_BYTES,
            max_age=self.settings.max_event_age,
            max_future=self.settings.max_future,
            clock=self.clock,
            rate_of=self.directory.rate,
        )

    @cached_property
    def reads(self) -> Reads:
        return Reads(self.usage, self.directory.limits)

    @cached_property
    def dead_letters(self) -> DeadLetters:
        return DeadLetters(self.store.dead_letters, lambda: build_container(self.settings), self.clock)


@cache
def services() -> Services:
    """The process's services, built on first use: importing the app reads no setting."""
    return Services(load_settings())
