"""The Azure SDK clients the settings choose, and the credentials of identity-based connections.

Every client the app builds itself (the store, the hub's publisher and backlog, queues, blob containers) is built
here, with the retry policies and timeouts that keep an outage a 503 within seconds. The Functions host reads
`<Connection>__credential` and `<Connection>__clientId` for its bindings, but the SDK clients do not: `credential`
is the one place that turns those settings into a credential, so the app's own clients authenticate as the same
user-assigned identity as its bindings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
from azure.cosmos import CosmosClient
from azure.data.tables import TableServiceClient
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient

from metering.archive.publisher import ArchivingPublisher, CaptureWriter
from metering.billing.exports import marketplace
from metering.core.clock import Clock, utc_now
from metering.settings import Settings, StoreKind
from metering.stores import Store, cosmos, table
from metering.stores.cosmos import CosmosStore
from metering.stores.table import TableStore
from metering.transport import Backlog, Publisher
from metering.transport.eventhub import EventHubBacklog, EventHubPublisher
from metering.transport.queue import (
    QueueBacklog,
    QueuePublisher,
    queue_client,
    queue_client_at,
    storage_retry,
    storage_timeouts,
)


def credential(kind: str | None, client_id: str | None) -> Any:
    # Imported on first use: azure.identity is slow to import and local runs with a connection string never need it.
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential  # noqa: PLC0415

    if (kind or "").lower() == "managedidentity":
        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    return DefaultAzureCredential(managed_identity_client_id=client_id)


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
        "exports_table": settings.exports_table,
    }
    return TableStore(table_service(settings), **tables)


def table_service(settings: Settings) -> TableServiceClient:
    """The storage account's Table service, with the store's retry policy (table.RETRY) and timeouts so that
    no call waits minutes."""
    options: dict[str, Any] = {**table.RETRY, **storage_timeouts()}
    if settings.storage_connection:
        return TableServiceClient.from_connection_string(settings.storage_connection, **options)
    assert settings.storage_table_uri is not None
    identity = credential(settings.storage_credential, settings.storage_client_id)
    return TableServiceClient(settings.storage_table_uri, credential=identity, **options)


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
    # Event Hubs Capture archives what the hub accepts; the local queues get the same archive from the dev host,
    # each message under the partition its queue stands for.
    queue = QueuePublisher([queue_client(settings.storage_connection, name) for name in settings.local_queues])
    archive = CaptureWriter(build_container(settings, settings.archive_container), hub=hub)
    return ArchivingPublisher(queue, archive, clock, partition_of=queue.partition_id)


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
    return QueueBacklog([build_queue(settings, name) for name in settings.local_queues], settings.event_hub_name)


def stripe_client(settings: Settings) -> Any:
    """Stripe's official client, with its own retries off: the exporter retries 429s and 5xx with backoff, and
    decides what an answer means (a reused identifier is a delivery)."""
    import stripe  # noqa: PLC0415  (only when Stripe export is on)

    # The SDK logs two INFO lines per request: a run's summary (engine.py) and each failure's are what tell, and
    # in Azure every line is ingested (and billed) by Application Insights.
    logging.getLogger("stripe").setLevel(logging.WARNING)
    assert settings.stripe_api_key is not None
    base = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
    return stripe.StripeClient(
        settings.stripe_api_key,
        base_addresses=base,  # type: ignore[arg-type]
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=settings.export_timeout_seconds),
    )


def marketplace_http(settings: Settings) -> httpx.Client:
    return httpx.Client(timeout=settings.export_timeout_seconds)


def marketplace_token(settings: Settings) -> Callable[[], str]:
    """Bearer tokens for the Marketplace metering service (resource 20e940b3-4c77-4b0b-9a53-9e16a1b010a7).

    With `METERING_MARKETPLACE_APP_ID` (SaaS offers), the token is the app registration's that the offer names,
    obtained without a secret: the Marketplace identity (a managed identity of its own, with no other role) signs
    in as the app through a federated credential the app trusts. Without it (managed application offers), the
    token is the identity's own. The credentials cache tokens until shortly before they expire."""
    from azure.identity import ClientAssertionCredential, ManagedIdentityCredential  # noqa: PLC0415

    scope = f"{marketplace.RESOURCE_APP}/.default"
    client_id = settings.marketplace_identity_client_id
    identity = ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    if settings.marketplace_app_id is None:
        return lambda: identity.get_token(scope).token
    assert settings.marketplace_tenant_id is not None
    app = ClientAssertionCredential(
        settings.marketplace_tenant_id,
        settings.marketplace_app_id,
        lambda: identity.get_token("api://AzureADTokenExchange/.default").token,
    )
    return lambda: app.get_token(scope).token


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
