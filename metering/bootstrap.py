"""The composition root: the one place where settings choose and wire the real adapters."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, cached_property
from typing import Any

from azure.cosmos import CosmosClient
from azure.data.tables import TableServiceClient
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient

from metering.api.billing import Billing
from metering.api.ingest import Ingest
from metering.api.invoices import InvoicesApi
from metering.api.manage import Manage
from metering.api.reads import Reads
from metering.archive.publisher import ArchivingPublisher, CaptureWriter
from metering.billing.cancels import Cancels
from metering.billing.closing import PeriodCloser, period_closed
from metering.billing.invoices import Invoices
from metering.billing.journal import Journal
from metering.billing.late import LateEvents
from metering.connections import credential
from metering.core.clock import Clock, utc_now
from metering.core.meters import MeterCatalog, load_catalog
from metering.core.periods import PeriodSchedule, TenantSchedule
from metering.core.prices import Pricing
from metering.ingest.consumer import AfterApply
from metering.ingest.deadletters import DeadLetters
from metering.ingest.health import HealthCheck
from metering.ingest.service import IngestService
from metering.ledger.control import HubProgress
from metering.ledger.ledger import Ledger
from metering.ledger.reader import UsageReader
from metering.notifications.outbox import Outbox, QueueSink
from metering.quotas.alerts import AlertWatch
from metering.quotas.plans import PlanCatalog, load_plans
from metering.settings import Settings, StoreKind, load_settings
from metering.stores import Store, cosmos, table
from metering.stores.cosmos import CosmosStore
from metering.stores.table import TableStore
from metering.tenants.directory import TenantDirectory
from metering.transport import EVENT_HUB_MESSAGE_BYTES, QUEUE_MESSAGE_BYTES, Backlog, Publisher
from metering.transport.eventhub import EventHubBacklog, EventHubPublisher
from metering.transport.queue import (
    QueueBacklog,
    QueuePublisher,
    queue_client,
    queue_client_at,
    storage_retry,
    storage_timeouts,
)


def build_store(settings: Settings) -> Store:
    if settings.store is StoreKind.COSMOS:
        return build_cosmos_store(settings)
    # The SDK's retry policy of the store (table.RETRY), with timeouts so that no call waits minutes.
    options: dict[str, Any] = {**table.RETRY, **storage_timeouts()}
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
        service = TableServiceClient.from_connection_string(settings.storage_connection, **options)
    else:
        assert settings.storage_table_uri is not None
        identity = credential(settings.storage_credential, settings.storage_client_id)
        service = TableServiceClient(settings.storage_table_uri, credential=identity, **options)
    return TableStore(service, **tables)


# Cosmos's own timeouts: its connection timeout is 5 s already, its read timeout 65 s; `timeout` bounds a whole
# operation, retries included, so a request waiting on a frozen account is answered within about 20 s.
COSMOS_TIMEOUTS = {"connection_timeout": 5, "read_timeout": 5, "timeout": 20}


def build_cosmos_store(settings: Settings) -> CosmosStore:
    endpoint, database = settings.cosmos_endpoint, settings.cosmos_database
    assert endpoint is not None
    options: dict[str, Any] = {**cosmos.RETRY, **COSMOS_TIMEOUTS}
    if settings.cosmos_key:
        # Refused before the client is built: building it contacts the endpoint.
        if settings.cosmos_non_atomic_local and not cosmos.is_loopback(endpoint):
            raise cosmos.CosmosStoreError(
                f"COSMOS_NON_ATOMIC_LOCAL is set but the Cosmos endpoint {endpoint!r} is not on loopback: "
                "commits without a transactional batch are only allowed against a local test server"
            )
        # The local server's certificate is self-signed: skip verification for loopback only.
        client = CosmosClient(
            endpoint, credential=settings.cosmos_key, connection_verify=not cosmos.is_loopback(endpoint), **options
        )
        return CosmosStore(
            client, database, can_create=True, non_atomic_local=settings.cosmos_non_atomic_local, endpoint=endpoint
        )
    if settings.cosmos_non_atomic_local:
        raise ValueError("COSMOS_NON_ATOMIC_LOCAL is for the local Cosmos server, reached with COSMOS_KEY")
    identity = credential(settings.cosmos_credential, settings.cosmos_client_id)
    # With Entra ID, data-plane roles cannot create databases or containers: the Bicep declares them.
    client = CosmosClient(endpoint, credential=identity, **options)
    return CosmosStore(client, database, can_create=False, endpoint=endpoint)


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
    return QueueBacklog(build_queue(settings, settings.local_queue), settings.event_hub_name)


def build_container(settings: Settings, name: str | None = None) -> ContainerClient:
    """A blob container of the storage account: the dead-letter bodies' unless named."""
    name = name or settings.dead_letter_container
    options: dict[str, Any] = {"retry_policy": storage_retry(), **storage_timeouts()}
    if settings.storage_connection:
        return ContainerClient.from_connection_string(settings.storage_connection, name, **options)
    if not settings.storage_blob_uri:
        raise ValueError(f"set AzureWebJobsStorage__blobServiceUri for the blob container {name}")
    identity = credential(settings.storage_credential, settings.storage_client_id)
    return ContainerClient(settings.storage_blob_uri, name, credential=identity, **options)


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
        return TenantDirectory(
            self.store.tenants,
            self.plans,
            self.catalog,
            clock=self.clock,
            closed=lambda tenant, period: period_closed(self.store, tenant, period),
        )

    def pricing_at(self, tenant_id: str, end: datetime) -> Pricing:
        """The prices of the plan the tenant had at a period's end: what the period is rated with."""
        return self.plans.pricing(self.directory.plan_for_period(tenant_id, end))

    @cached_property
    def schedule(self) -> PeriodSchedule:
        return TenantSchedule(self.directory.history)

    @cached_property
    def outbox(self) -> Outbox:
        return Outbox(self.store.control, QueueSink(build_queue(self.settings, self.settings.notifications_queue)))

    @cached_property
    def backlog(self) -> Backlog:
        return build_backlog(self.settings)

    @cached_property
    def closer(self) -> PeriodCloser:
        return PeriodCloser(
            self.store,
            self.catalog,
            self.outbox,
            self.backlog,
            grace=self.settings.grace,
            retention=self.settings.dedupe_retention,
            clock=self.clock,
            pricing=self.pricing_at,
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
    def invoices(self) -> InvoicesApi:
        return InvoicesApi(Invoices(self.store, self.catalog, self.schedule, self.pricing_at, self.clock))

    @cached_property
    def journal(self) -> Journal:
        return Journal(self.store.journal)

    @cached_property
    def manage(self) -> Manage:
        return Manage(self.directory, self.closer, self.clock, HealthCheck(self.store, self.backlog, self.clock))

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
        return Ingest(self.ingest_service)

    @cached_property
    def ingest_service(self) -> IngestService:
        return IngestService(
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
