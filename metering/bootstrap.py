"""The composition root: every service built once, from parts a caller may inject.

`Services(settings)` is what the function app and the dev host run on: each part the settings choose (the store,
the hub's publisher and backlog, the notifications sink, the dead-letter container) is built from them by
connections.py on first use. Tests, benchmarks and the rebuild give some parts themselves (a memory store, a
fixed clock, a sink that discards, a hub with nothing waiting) and take everything else from here as the app
wires it: no service is wired anywhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import cache, cached_property
from typing import Any

from azure.storage.blob import ContainerClient

from metering import connections
from metering.api.billing import Billing
from metering.api.console import Console
from metering.api.exports import Exports
from metering.api.health import HealthRoute
from metering.api.ingest import Ingest
from metering.api.invoices import InvoicesApi
from metering.api.manage import Manage
from metering.api.openapi import OpenApiRoute
from metering.api.operations import Operations
from metering.api.portal import PortalApi
from metering.api.reads import Reads
from metering.api.webhooks import Webhooks
from metering.billing.cancels import Cancels
from metering.billing.carry import LevelCarry
from metering.billing.closing import PeriodCloser, period_closed
from metering.billing.exports.engine import Exporter
from metering.billing.exports.port import Target
from metering.billing.exports.reconcile import Reconciler
from metering.billing.exports.rows import ExportRows
from metering.billing.invoices import Invoices
from metering.billing.journal import Journal
from metering.billing.late import LateEvents
from metering.billing.late_actions import LateActions
from metering.core.clock import Clock, utc_now
from metering.core.meters import MeterCatalog, load_catalog
from metering.core.periods import PeriodSchedule, TenantSchedule
from metering.core.prices import Pricing
from metering.ingest.consumer import AfterApply
from metering.ingest.deadletters import DeadLetters
from metering.ingest.health import HealthCheck
from metering.ingest.redrive import Redrive
from metering.ingest.service import IngestService
from metering.ledger.control import HubProgress
from metering.ledger.ledger import ApplyResult, Ledger
from metering.ledger.reader import UsageReader
from metering.ledger.routing import by_shard
from metering.notifications.outbox import Outbox, Sink
from metering.notifications.queue import QueueSink
from metering.notifications.webhooks.dispatcher import WebhookDispatcher
from metering.notifications.webhooks.rows import WebhookDeliveries
from metering.notifications.webhooks.sender import WebhookSender
from metering.portal.overview import PortalOverviews
from metering.portal.tokens import PortalTokens
from metering.quotas.alerts import AlertWatch
from metering.quotas.overview import TenantOverview
from metering.quotas.plans import PlanCatalog, load_plans
from metering.settings import Settings, load_settings
from metering.stores import Store
from metering.tenants.directory import TenantDirectory
from metering.transport import EVENT_HUB_MESSAGE_BYTES, QUEUE_MESSAGE_BYTES, Backlog, Publisher
from metering.web.pages import Pages


class Services:
    """Long-lived objects shared by every invocation in a worker process (clients and caches are reused).

    Every keyword is a part to use instead of the one the settings choose; leave it out for the real one."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = utc_now,
        store: Store | None = None,
        publisher: Publisher | None = None,
        sink: Sink | None = None,
        backlog: Backlog | None = None,
        dead_letter_container: Callable[[], ContainerClient] | None = None,
        catalog: MeterCatalog | None = None,
        plans: PlanCatalog | None = None,
        schedule: PeriodSchedule | None = None,
        marketplace_token: Callable[[], str] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._store = store
        self._publisher = publisher
        self._sink = sink
        self._backlog = backlog
        self._container = dead_letter_container
        self._catalog = catalog
        self._plans = plans
        self._schedule = schedule
        self._marketplace_token = marketplace_token

    # -- parts: injected, or built from the settings -------------------------------------------------------

    @cached_property
    def store(self) -> Store:
        if self._store is not None:
            return self._store
        store = connections.build_store(self.settings)
        store.ensure_ready()
        return store

    @cached_property
    def publisher(self) -> Publisher:
        return self._publisher or connections.build_publisher(self.settings, self.clock)

    @cached_property
    def sink(self) -> Sink:
        if self._sink is not None:
            return self._sink
        return QueueSink(connections.build_queue(self.settings, self.settings.notifications_queue))

    @cached_property
    def backlog(self) -> Backlog:
        return self._backlog or connections.build_backlog(self.settings)

    @cached_property
    def catalog(self) -> MeterCatalog:
        return self._catalog or load_catalog(self.settings.meters_file)

    @cached_property
    def plans(self) -> PlanCatalog:
        return self._plans or load_plans(self.settings.plans_file, self.catalog)

    @cached_property
    def schedule(self) -> PeriodSchedule:
        return self._schedule or TenantSchedule(self.directory.history, self.directory.shard_history)

    # -- services ------------------------------------------------------------------------------------------

    @cached_property
    def directory(self) -> TenantDirectory:
        return TenantDirectory(
            self.store.tenants,
            self.plans,
            self.catalog,
            clock=self.clock,
            closed=lambda tenant, period: period_closed(
                self.store, tenant, period, self.schedule.shards(tenant, period)
            ),
        )

    def pricing_at(self, tenant_id: str, end: datetime) -> Pricing:
        """The prices of the plan the tenant had at a period's end: what the period is rated with."""
        return self.plans.pricing(self.directory.plan_for_period(tenant_id, end))

    @cached_property
    def ledger(self) -> Ledger:
        return self.new_ledger()

    def new_ledger(self, **options: Any) -> Ledger:
        """Another ledger instance on the same store (a second aggregator, with a cache of its own);
        `options` are Ledger's tuning keywords (max_ops, poison_share, ...)."""
        return Ledger(self.store, self.catalog, self.schedule, clock=self.clock, **options)

    @cached_property
    def usage(self) -> UsageReader:
        return UsageReader(self.store, self.catalog, self.schedule, clock=self.clock)

    @cached_property
    def journal(self) -> Journal:
        return Journal(self.store.journal)

    @cached_property
    def outbox(self) -> Outbox:
        dispatcher = self.webhook_dispatcher
        return Outbox(
            self.store.control,
            self.sink,
            webhooks=None if dispatcher is None else self.webhook_deliveries,
            after_dispatch=None if dispatcher is None else dispatcher.kick,
        )

    @cached_property
    def webhook_deliveries(self) -> WebhookDeliveries:
        return WebhookDeliveries(self.store.control, self.clock)

    @cached_property
    def webhook_dispatcher(self) -> WebhookDispatcher | None:
        """None without METERING_WEBHOOK_URL: notifications then go to the queue only."""
        settings = self.settings
        if settings.webhook_url is None or settings.webhook_secret is None:
            return None
        sender = WebhookSender(
            settings.webhook_url, settings.webhook_secret, timeout=settings.webhook_timeout_seconds, clock=self.clock
        )
        return WebhookDispatcher(self.webhook_deliveries, sender, self.clock)

    @cached_property
    def alerts(self) -> AlertWatch:
        return AlertWatch(self.directory.limits, self.settings.thresholds, self.outbox, self.clock)

    @cached_property
    def progress(self) -> HubProgress:
        return HubProgress(self.store.control)

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
    def late_actions(self) -> LateActions:
        return LateActions(
            self.store.late_events,
            ledger=self.ledger,
            schedule=self.schedule,
            reader=self.usage,
            journal=self.journal,
            clock=self.clock,
            after_apply=self.alert_after,
        )

    def alert_after(self, result: ApplyResult) -> None:
        """Threshold alerts of what an operator's action counted, as the aggregator raises them for a batch."""
        raised = sum(
            self.alerts.check(first.event.tenant_id, first.period, state.limit_figures())
            for first, state in result.states.values()
            if state is not None and not state.is_closed
        )
        if raised:
            self.outbox.dispatch()

    @cached_property
    def redrive(self) -> Redrive:
        return Redrive(
            self.dead_letters,
            ledger=self.ledger,
            late=self.late_events,
            reader=self.usage,
            journal=self.journal,
            clock=self.clock,
            after_apply=self.alert_after,
        )

    @cached_property
    def after_apply(self) -> AfterApply:
        return AfterApply(late=self.late_events, alerts=self.alerts, outbox=self.outbox, progress=self.progress)

    @cached_property
    def dead_letters(self) -> DeadLetters:
        container = self._container or (lambda: connections.build_container(self.settings))
        return DeadLetters(self.store.dead_letters, container, self.clock)

    @cached_property
    def closer(self) -> PeriodCloser:
        return PeriodCloser(
            self.store,
            self.catalog,
            self.outbox,
            self.backlog,
            self.progress,
            grace=self.settings.grace,
            retention=self.settings.dedupe_retention,
            clock=self.clock,
            pricing=self.pricing_at,
            shards=self.schedule.shards,
            carry=LevelCarry(self.store, self.catalog, self.schedule).carry,
        )

    @cached_property
    def cancels(self) -> Cancels:
        return Cancels(
            self.store,
            self.catalog,
            self.schedule,
            clock=self.clock,
            max_future=self.settings.max_future,
            journal=self.journal,
        )

    @cached_property
    def health(self) -> HealthCheck:
        return HealthCheck(self.store, self.backlog, self.progress, self.clock)

    @cached_property
    def invoices(self) -> Invoices:
        return Invoices(self.store, self.catalog, self.schedule, self.pricing_at, self.clock)

    @cached_property
    def portal_tokens(self) -> PortalTokens | None:
        """None without METERING_PORTAL_SECRET: the portal is off."""
        settings = self.settings
        if settings.portal_secret is None:
            return None
        keys = [settings.portal_secret, *([settings.portal_secret_previous] if settings.portal_secret_previous else [])]
        return PortalTokens(keys, clock=self.clock, not_before=self.directory.tokens_not_before)

    @cached_property
    def portal_overviews(self) -> PortalOverviews:
        return PortalOverviews(self.usage, self.directory.history, self.pricing_at, self.clock)

    @cached_property
    def pages(self) -> Pages:
        return Pages()

    @cached_property
    def export_targets(self) -> list[Target]:
        """The billing targets the settings turn on: Stripe with an API key, the Marketplace when enabled."""
        # Imported here: the Stripe SDK takes a noticeable time to import, and most deployments use neither.
        from metering.billing.exports.marketplace import MarketplaceTarget  # noqa: PLC0415
        from metering.billing.exports.stripe import StripeTarget  # noqa: PLC0415

        settings = self.settings
        targets: list[Target] = []
        if settings.stripe_api_key is not None:
            targets.append(
                StripeTarget(
                    connections.stripe_client(settings), decimals_allowed=settings.stripe_decimals, clock=self.clock
                )
            )
        if settings.marketplace_enabled:
            token = self._marketplace_token or connections.marketplace_token(settings)
            targets.append(
                MarketplaceTarget(
                    connections.marketplace_http(settings), settings.marketplace_api_base, token, clock=self.clock
                )
            )
        return targets

    @cached_property
    def exporter(self) -> Exporter:
        return Exporter(
            self.store,
            self.usage,
            self.catalog,
            self.export_targets,
            record=self.directory.record,
            pricing=self.pricing_at,
            backlog=self.backlog,
            progress=self.progress,
            settle=self.settings.export_settle,
            clock=self.clock,
        )

    @cached_property
    def export_reconciler(self) -> Reconciler:
        return Reconciler(
            ExportRows(self.store.exports),
            self.usage,
            self.catalog,
            self.export_targets,
            pricing=self.pricing_at,
            clock=self.clock,
        )

    @cached_property
    def ingest(self) -> IngestService:
        return IngestService(
            self.catalog,
            self.publisher,
            max_message_bytes=EVENT_HUB_MESSAGE_BYTES if self.settings.uses_event_hub else QUEUE_MESSAGE_BYTES,
            max_age=self.settings.max_event_age,
            max_future=self.settings.max_future,
            clock=self.clock,
            rate_of=self.directory.rate,
            key_of=by_shard(self.schedule, self.catalog),
        )

    # -- entry points --------------------------------------------------------------------------------------

    @cached_property
    def http(self) -> HttpHandlers:
        return HttpHandlers(self)


class HttpHandlers:
    """The HTTP handlers, one per area, as the function app's routes call them; each is built (with what it
    needs, and nothing else) on its first request."""

    def __init__(self, services: Services) -> None:
        self._services = services

    @cached_property
    def ingest(self) -> Ingest:
        return Ingest(self._services.ingest)

    @cached_property
    def reads(self) -> Reads:
        return Reads(self._services.usage, self._services.directory.limits)

    @cached_property
    def billing(self) -> Billing:
        return Billing(self._services.store.statements, self._services.late_events, self._services.cancels)

    @cached_property
    def manage(self) -> Manage:
        return Manage(self._services.directory, self._services.closer, self._services.clock)

    @cached_property
    def health(self) -> HealthRoute:
        return HealthRoute(self._services.health)

    @cached_property
    def openapi(self) -> OpenApiRoute:
        return OpenApiRoute(self._services.catalog)

    @cached_property
    def invoices(self) -> InvoicesApi:
        return InvoicesApi(self._services.invoices)

    @cached_property
    def portal(self) -> PortalApi:
        services = self._services
        return PortalApi(
            tokens=services.portal_tokens,
            overviews=services.portal_overviews,
            reads=self.reads,
            invoices=self.invoices,
            billing=self.billing,
            pages=services.pages,
            frame_ancestors=services.settings.portal_frame_ancestors,
        )

    @cached_property
    def exports(self) -> Exports:
        services = self._services
        return Exports(
            services.exporter, services.export_reconciler, services.directory, services.schedule, services.clock
        )

    @cached_property
    def webhooks(self) -> Webhooks:
        dispatcher = self._services.webhook_dispatcher
        return Webhooks(
            self._services.webhook_deliveries,
            after_redrive=None if dispatcher is None else dispatcher.kick,
            journal=self._services.journal,
            clock=self._services.clock,
        )

    @cached_property
    def console(self) -> Console:
        services = self._services
        overview = TenantOverview(
            services.store, services.catalog, services.usage, services.directory.limits, services.clock
        )
        return Console(overview, services.pages)

    @cached_property
    def operations(self) -> Operations:
        services = self._services
        return Operations(
            late=services.late_events,
            late_actions=services.late_actions,
            dead_letters=services.dead_letters,
            redrive=services.redrive,
            journal=services.journal,
            conflicts=services.store.conflicts,
            control=services.store.control,
        )


@cache
def services() -> Services:
    """The process's services, built on first use: importing the app reads no setting."""
    return Services(load_settings())
