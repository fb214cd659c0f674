"""Exports to Stripe and the Azure Marketplace, exactly once: after every scenario of issue 18, what each target
holds adds up exactly to our totals, and the reconciliation route says so (or names the difference a target
cannot take, with its reason).

The targets are local HTTP servers that behave as Stripe and the Marketplace do (tests/targets.py); Stripe is
reached through the official SDK, the Marketplace over HTTP, exactly as in Azure: only the Marketplace's Entra
token is given by the test. Every scenario runs on the Table store (Azurite) and the memory store (and on a real
Cosmos DB when one is configured); the normal run also on the local Cosmos server.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from metering import connections
from metering.billing.exports.engine import LEASE, RunReport
from metering.bootstrap import Services
from metering.core.events import UsageEvent
from metering.core.hub import Applied, Position
from metering.ledger.batch import SourcedEvent
from metering.settings import LateEventPolicy
from metering.stores import Operation, Replace, RowTable, Store
from metering.stores.memory import MemoryStore
from metering.tenants.records import TenantUpdate
from tests.support import FixedClock, InjectedCrash, fresh_cosmos_store, make_settings, wired
from tests.targets import MARKETPLACE_TOKEN, STRIPE_KEY, Fault, IdentityEndpoint, MarketplaceServer, StripeServer

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
H08 = datetime(2026, 11, 24, 8, 10, tzinfo=UTC)
H09 = datetime(2026, 11, 24, 9, 20, tzinfo=UTC)
H10 = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)
EVENT_NAMES = ("api_requests", "compute_seconds", "storage_gb", "active_users", "reports_generated")
# The pro plan (the packaged plans.toml) includes 100,000 API calls; the Marketplace is sent what is above.
PRO_INCLUDED = {"api.requests": Decimal(100_000), "users.active": Decimal(5)}


class HubAt:
    """The hub as far as the closer and the exporters see it: applied through `at` (None: through now). The one
    part that cannot run here (Event Hubs), replaced at its port."""

    def __init__(self) -> None:
        self.at: datetime | None = None

    def applied_through(self, applied: Mapping[str, Applied], now: datetime) -> datetime:
        return now if self.at is None else min(now, self.at)

    def lag(self, applied: Mapping[str, Applied], now: datetime) -> dict[str, float]:
        return {}


@dataclass
class Exporting:
    store: Store
    clock: FixedClock
    stripe: StripeServer
    marketplace: MarketplaceServer
    hub: HubAt
    services: Services
    tenants: list[str] = field(default_factory=list)
    sequence: int = 0

    def another(self) -> Services:
        """A second exporter (its own process, as another instance of the function app) on the same store."""
        return build_services(self.store, self.clock, self.stripe, self.marketplace, self.hub)

    def tenant(self, plan: str = "pro") -> str:
        tenant = f"t-{uuid.uuid4().hex[:10]}"
        self.services.directory.update(
            tenant,
            TenantUpdate(
                plan=plan,
                stripe_customer_id=f"cus_{tenant[2:]}",
                marketplace_resource_id=f"res-{tenant}",
                marketplace_plan_id="gold",
            ),
        )
        self.tenants.append(tenant)
        return tenant

    def apply(self, *events: UsageEvent) -> None:
        items = []
        for event in events:
            self.sequence += 1
            items.append(SourcedEvent(event, Position("ns|usage|0", self.sequence)))
        result = self.services.ledger.apply(items)
        assert not result.rejected
        assert not result.late

    def run(self, services: Services | None = None) -> RunReport:
        return (services or self.services).exporter.run()

    def reconcile(self, tenant: str) -> dict[str, dict[str, dict[str, Any]]]:
        """The reconciliation route's answer, by target and metric."""
        response = self.services.http.exports.reconcile(tenant, {})
        assert response.status == 200, response.body
        return {t["target"]: {m["metric"]: m for m in t["metrics"]} for t in response.json()["targets"]}

    def ours(self, tenant: str, metric: str) -> Decimal:
        return self.services.usage.current(tenant, metric).total

    def assert_exact(self, tenant: str, *, except_marketplace: Mapping[str, str] | None = None) -> None:
        """What each target holds is our figure, to the last digit, and the route shows no difference (or, for
        the Marketplace, exactly the differences given)."""
        reconciled = self.reconcile(tenant)
        customer, resource = f"cus_{tenant[2:]}", f"res-{tenant}"
        for metric, view in reconciled["stripe"].items():
            assert Decimal(view["ours"]) == self.ours(tenant, metric)
            assert self.stripe.total(customer, view["target_metric"]) == Decimal(view["acknowledged"]), metric
            assert view["difference"] == "0", (metric, view)
            assert view["reasons"] == []
        for metric, view in reconciled["marketplace"].items():
            included = PRO_INCLUDED.get(metric, Decimal(0))
            assert Decimal(view["ours"]) == max(self.ours(tenant, metric) - included, Decimal(0))
            assert self.marketplace.total(resource, view["target_metric"]) == Decimal(view["acknowledged"]), metric
            expected = (except_marketplace or {}).get(metric, "0")
            assert view["difference"] == expected, (metric, view)


def event(tenant: str, metric: str, quantity: str, at: datetime, name: str | None = None, **fields: Any) -> UsageEvent:
    return UsageEvent(
        event_id=name or uuid.uuid4().hex,
        tenant_id=tenant,
        metric=metric,
        quantity=quantity,
        timestamp=at,
        source="test",
        **fields,
    )


def build_services(
    store: Store, clock: FixedClock, stripe: StripeServer, marketplace: MarketplaceServer, hub: HubAt
) -> Services:
    settings = make_settings(
        stripe_api_key=STRIPE_KEY,
        stripe_api_base=stripe.url,
        marketplace_enabled=True,
        marketplace_api_base=marketplace.url,
        export_timeout_seconds=1,
        late_event_policy=LateEventPolicy.REVIEW,
    )
    return wired(store, settings=settings, clock=clock, backlog=hub, marketplace_token=lambda: MARKETPLACE_TOKEN)


def exporting(store: Store) -> Iterator[Exporting]:
    clock = FixedClock(NOW)
    stripe = StripeServer(clock).meter(*EVENT_NAMES).start()
    marketplace = MarketplaceServer(clock).start()
    hub = HubAt()
    try:
        yield Exporting(store, clock, stripe, marketplace, hub, build_services(store, clock, stripe, marketplace, hub))
    finally:
        stripe.stop()
        marketplace.stop()


@pytest.fixture
def ex(atomic_store: Store) -> Iterator[Exporting]:
    yield from exporting(atomic_store)


def usage_of(tenant: str) -> list[UsageEvent]:
    """A morning of one tenant: calls over three hours (above the 100K the pro plan includes), compute seconds,
    reports, distinct users and a storage peak."""
    return [
        event(tenant, "api.requests", "60000", H08),
        event(tenant, "api.requests", "45000", H09),
        event(tenant, "api.requests", "7", H10),
        event(tenant, "compute.seconds", "1800", H09),
        event(tenant, "reports.generated", "1", H09),
        event(tenant, "reports.generated", "1", H10),
        event(tenant, "users.active", "1", H08, user_id="ada"),
        event(tenant, "users.active", "1", H09, user_id="bob"),
        event(tenant, "users.active", "1", H10, user_id="ada"),
        event(tenant, "storage.gb_peak", "40", H08),
        event(tenant, "storage.gb_peak", "75", H10),
    ]


# -- a normal run ----------------------------------------------------------------------------------------------


def _normal_run(ex: Exporting) -> None:
    tenants = [ex.tenant(), ex.tenant()]
    for tenant in tenants:
        ex.apply(*usage_of(tenant))
    report = ex.run()
    # Stripe: a meter event per hour and sum meter (api 3, compute 1, reports 2), and the increases of the
    # distinct users and the peak (one each); the Marketplace: one event per dimension with usage above
    # what the plan includes (api 5,007 above 100,000; compute, storage, users: none included, reports: none).
    assert report.sent == 2 * (8 + 4)
    assert (report.failed, report.pending) == (0, 0)
    for tenant in tenants:
        ex.assert_exact(tenant)
    assert ex.stripe.total(f"cus_{tenants[0][2:]}", "api_requests") == Decimal(105_007)
    assert ex.marketplace.total(f"res-{tenants[0]}", "api_requests") == Decimal(5_007)
    # One call at a time per customer and meter, as Stripe allows: it never had to throttle one.
    assert not any("concurrent" in refusal for refusal in ex.stripe.refusals)
    # Nothing changed: the next run sends nothing, and reads no hour.
    creates, batches = ex.stripe.creates, len(ex.marketplace.batches)
    assert ex.run() == RunReport(0, 0, 0)
    assert (ex.stripe.creates, len(ex.marketplace.batches)) == (creates, batches)


def test_a_normal_run_sends_each_figure_once(ex):
    _normal_run(ex)


@pytest.fixture
def ex_cosmos(cosmos_server: Any) -> Iterator[Exporting]:
    store = fresh_cosmos_store(cosmos_server.endpoint, cosmos_server.key, non_atomic_local=True)
    try:
        yield from exporting(store)
    finally:
        store.drop()
        store.close()


def test_a_normal_run_on_the_local_cosmos_server(ex_cosmos):
    # Its commits are not atomic, which one exporter at a time does not need; it is slow, so one tenant and
    # two meters.
    ex = ex_cosmos
    tenant = ex.tenant()
    ex.apply(*[e for e in usage_of(tenant) if e.metric in ("api.requests", "users.active")])
    assert ex.run() == RunReport(sent=5, failed=0, pending=0)
    ex.assert_exact(tenant)
    assert ex.run() == RunReport(0, 0, 0)


def test_an_hour_is_sent_once_the_hub_applied_past_its_end_plus_the_settle_delay(ex):
    tenant = ex.tenant()
    ex.apply(*usage_of(tenant))
    # The hub has applied what was enqueued until 10:30: settled are the hours that ended by 09:30.
    ex.hub.at = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)
    ex.run()
    customer = f"cus_{tenant[2:]}"
    assert ex.stripe.total(customer, "api_requests") == Decimal(60_000)
    view = ex.reconcile(tenant)["stripe"]["api.requests"]
    assert (view["difference"], view["reasons"][0][:13]) == ("45007", "not sent yet:")
    # The Marketplace's period figure leaves out the hours not settled: 60,000 is within the 100,000 included.
    assert ex.marketplace.total(f"res-{tenant}", "api_requests") == 0
    ex.hub.at = None
    ex.run()
    ex.assert_exact(tenant)


# -- a run killed between send and record ----------------------------------------------------------------------


class CrashingRows:
    """The exports table, made to crash once at the first commit that records an acknowledgement: the send has
    happened, and its answer is not recorded (a process killed between the two)."""

    def __init__(self, inner: RowTable) -> None:
        self.inner = inner
        self.name = inner.name
        self.limits = inner.limits
        self.armed = True

    def commit(self, partition: str, operations: Sequence[Operation]) -> list[str]:
        if self.armed and any(isinstance(op, Replace) and op.data.get("status") == "acked" for op in operations):
            self.armed = False
            raise InjectedCrash("killed between the send and its record")
        return self.inner.commit(partition, operations)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class WithCrashingExports:
    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.exports = CrashingRows(inner.exports)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_run_killed_between_send_and_record_sends_nothing_twice(ex):
    tenant = ex.tenant()
    ex.apply(*usage_of(tenant))
    crashing = WithCrashingExports(ex.store)
    killed = build_services(crashing, ex.clock, ex.stripe, ex.marketplace, ex.hub)  # type: ignore[arg-type]
    with pytest.raises(InjectedCrash):
        killed.exporter.run()
    sent_before = len(ex.stripe.events)
    assert sent_before > 0
    # Until the dead run's leases run out, no one sends what it sent again (what it had not claimed yet, the
    # Marketplace's intents, another run may send).
    creates = ex.stripe.creates
    assert ex.run().pending == sent_before
    assert ex.stripe.creates == creates
    ex.clock.now += LEASE + timedelta(seconds=1)
    report = ex.run()
    assert report.pending == 0
    assert report.sent == sent_before
    # The intents went again, unchanged: Stripe recognised their identifiers, the Marketplace its hours.
    assert len(ex.stripe.events) == sent_before
    assert len(set(ex.stripe.identifiers())) == len(ex.stripe.events)
    ex.assert_exact(tenant)


# -- a target answering 500 or timing out, then succeeding -----------------------------------------------------


def test_a_target_answering_500_or_timing_out_then_succeeding(ex):
    tenant = ex.tenant()
    ex.apply(*usage_of(tenant))
    # Refused outright, taken with the answer lost, held past the client's timeout (and taken), throttled: each
    # retried with backoff, the same identifier every time.
    ex.stripe.faults = [
        Fault(500),
        Fault(500, applied=True),
        Fault(200, hold=1.5, applied=True),
        Fault(429),
        *[Fault(503)] * 8,
    ]
    ex.marketplace.faults = [Fault(500), Fault(500, applied=True), Fault(200, hold=1.5, applied=True), Fault(503)]
    first = ex.run()
    assert first.failed > 0
    for _ in range(3):
        ex.clock.now += timedelta(minutes=30)
        if ex.run().pending == 0:
            break
    assert not ex.stripe.faults
    assert not ex.marketplace.faults
    assert len(set(ex.stripe.identifiers())) == len(ex.stripe.events)
    ex.assert_exact(tenant)


# -- a late event and a cancel after an hour was exported ------------------------------------------------------


def test_a_late_event_and_a_cancel_after_their_hours_were_exported(ex):
    tenant = ex.tenant()
    ex.apply(*usage_of(tenant), event(tenant, "api.requests", "40", H09, name="to-cancel"))
    ex.run()
    ex.assert_exact(tenant)
    customer = f"cus_{tenant[2:]}"
    # An event of 08:10 arrives only now (from a client's buffer); then a counted one of 09:20 is cancelled.
    ex.clock.now += timedelta(hours=2)
    ex.apply(event(tenant, "api.requests", "25", H08), event(tenant, "users.active", "1", H09, user_id="cy"))
    ex.run()
    ex.assert_exact(tenant)
    ex.clock.now += timedelta(hours=1)
    ex.services.cancels.cancel(tenant, "e:to-cancel")
    ex.run()
    # Stripe takes both in their original hours: +25 at 08:00, and -40 at 09:00.
    hourly = sorted(
        (datetime.fromtimestamp(e.timestamp, UTC).hour, e.value)
        for e in ex.stripe.events
        if e.customer == customer and e.event_name == "api_requests"
    )
    assert hourly == [(8, Decimal(25)), (8, Decimal(60_000)), (9, Decimal(-40)), (9, Decimal(45_040)), (10, Decimal(7))]
    # The Marketplace took the late increase, and cannot take the fall: it holds 40 more than we count, and
    # the route says so, with the reason.
    ex.assert_exact(tenant, except_marketplace={"api.requests": "-40"})
    view = ex.reconcile(tenant)["marketplace"]["api.requests"]
    assert "takes no decreases" in view["reasons"][0]
    assert ex.marketplace.total(f"res-{tenant}", "api_requests") == Decimal(5_072)


# -- two exporters at once -------------------------------------------------------------------------------------


def test_two_exporters_at_once_send_nothing_twice(ex):
    other = ex.another()
    ex.stripe.hold_each = 0.01  # every send takes a while: the two runs overlap
    tenants = [ex.tenant() for _ in range(3)]
    for round_ in range(3):
        for tenant in tenants:
            ex.apply(*usage_of(tenant)[round_ * 4 : round_ * 4 + 4])
        ex.clock.now += timedelta(minutes=10)
        threads = [threading.Thread(target=ex.run, args=(services,)) for services in (ex.services, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    # What is left (an intent one run saw the other hold) goes in a later run.
    ex.clock.now += LEASE + timedelta(seconds=1)
    ex.run()
    ex.run(other)
    assert len(set(ex.stripe.identifiers())) == len(ex.stripe.events)
    for tenant in tenants:
        ex.assert_exact(tenant)


# -- 1,000 tenants in one run ----------------------------------------------------------------------------------


@pytest.fixture
def ex_memory() -> Iterator[Exporting]:
    yield from exporting(MemoryStore())


def test_a_thousand_tenants_in_one_run(ex_memory):
    ex = ex_memory
    tenants = [ex.tenant() for _ in range(1000)]
    ex.apply(*(event(tenant, "api.requests", str(100_001 + index), H09) for index, tenant in enumerate(tenants)))
    started = time.perf_counter()
    report = ex.run()
    elapsed = time.perf_counter() - started
    assert report == RunReport(sent=2000, failed=0, pending=0)
    print(f"1,000 tenants: one run sent 2,000 intents in {elapsed:.1f} s")
    assert max(ex.marketplace.batches) == 25
    assert len(ex.marketplace.batches) == 40
    for index, tenant in enumerate(tenants):
        assert ex.stripe.total(f"cus_{tenant[2:]}", "api_requests") == 100_001 + index
        assert ex.marketplace.total(f"res-{tenant}", "api_requests") == index + 1
    for tenant in tenants[::100]:
        ex.assert_exact(tenant)


# -- an intent older than the target's window -----------------------------------------------------------------


@pytest.mark.parametrize("delivered", [True, False], ids=["delivered", "never-delivered"])
def test_an_intent_older_than_the_window_is_reconciled_not_sent_again(ex, delivered):
    tenant = ex.tenant()
    customer = f"cus_{tenant[2:]}"
    ex.apply(event(tenant, "api.requests", "100100", H09))
    # Every attempt fails; with `delivered`, the first took effect and only its answer was lost.
    first = Fault(500, applied=delivered)
    ex.stripe.faults = [first, *[Fault(500)] * 3]
    ex.marketplace.faults = [first, *[Fault(500)] * 3]
    assert ex.run().pending == 2
    assert ex.reconcile(tenant)["stripe"]["api.requests"]["pending"] == "100100"
    assert len(ex.stripe.events) == int(delivered)
    # A day later Stripe may have forgotten the identifier: sending it again could count it twice.
    ex.clock.now += timedelta(hours=25)
    ex.run()
    events = [e for e in ex.stripe.events if e.customer == customer]
    assert len(events) == 1  # never sent twice
    if not delivered:
        # The summary showed Stripe never got it: sent again as a new event, under a new identifier.
        assert events[0].received == ex.clock.now
    # The Marketplace answered the intent sent again with Duplicate (it held it) or Expired (it never got it,
    # and its hour is past: the value went again in the current hour).
    expected = ["Duplicate"] if delivered else ["Expired", "Accepted"]
    assert ex.marketplace.statuses[-len(expected) :] == expected
    ex.assert_exact(tenant)


# -- what a target cannot hold ---------------------------------------------------------------------------------


def test_a_fraction_stripe_cannot_hold_is_a_difference_never_rounded_away(ex):
    tenant = ex.tenant()
    ex.apply(event(tenant, "compute.seconds", "90.75", H09), event(tenant, "compute.seconds", "0.5", H10))
    ex.run()
    view = ex.reconcile(tenant)["stripe"]["compute.seconds"]
    assert (view["ours"], view["acknowledged"], view["difference"]) == ("91.25", "90", "1.25")
    assert "cannot be held exactly by Stripe" in view["reasons"][0]
    assert ex.stripe.total(f"cus_{tenant[2:]}", "compute_seconds") == 90
    assert ex.stripe.refusals == []  # nothing was sent that Stripe would refuse


def test_an_unlinked_tenant_is_not_exported_and_a_refusal_blocks_no_other_tenant(ex):
    unlinked = f"t-{uuid.uuid4().hex[:10]}"
    ex.apply(event(unlinked, "api.requests", "5", H09))
    refused, fine = ex.tenant(), ex.tenant()
    ex.stripe.meters.pop("reports_generated")  # a meter Stripe does not have: its events are refused
    ex.apply(event(refused, "reports.generated", "1", H09), event(fine, "api.requests", "3", H09))
    report = ex.run()
    assert report.failed == 1
    assert ex.stripe.total(f"cus_{fine[2:]}", "api_requests") == 3
    view = ex.reconcile(refused)["stripe"]["reports.generated"]
    assert view["difference"] == "1"
    assert "refused" in view["reasons"][0]
    unlinked_view = ex.reconcile(unlinked)
    assert [t["api.requests"]["acknowledged"] for t in unlinked_view.values()] == ["0", "0"]
    # Said as it is: not linked (never "not sent yet", which would promise a send).
    for view in unlinked_view.values():
        assert view["api.requests"]["reasons"][0].startswith("the tenant is not linked to")
        assert not any("not sent yet" in reason for reason in view["api.requests"]["reasons"])
    # Refused as it would be sent again: not retried until something changes; then it goes.
    assert ex.run().failed == 0
    ex.stripe.meter("reports_generated")
    ex.services.directory.update(refused, TenantUpdate(stripe_customer_id=f"cus_{refused[2:]}x"))
    ex.run()
    assert ex.stripe.total(f"cus_{refused[2:]}x", "reports_generated") == 1


# -- the Marketplace token -------------------------------------------------------------------------------------


def test_the_marketplace_token_is_the_marketplace_identitys_for_the_metering_resource(monkeypatch):
    endpoint = IdentityEndpoint()
    try:
        monkeypatch.setenv("IDENTITY_ENDPOINT", endpoint.url)
        monkeypatch.setenv("IDENTITY_HEADER", "secret-header")
        settings = make_settings(marketplace_enabled=True, marketplace_identity_client_id="1b2c3d4e-client")
        token = connections.marketplace_token(settings)
        assert token() == MARKETPLACE_TOKEN
        # Cached until shortly before it expires: one request for many sends.
        assert token() == MARKETPLACE_TOKEN
        [(query, header)] = endpoint.requests
        assert header == "secret-header"
        assert query["resource"] == ["20e940b3-4c77-4b0b-9a53-9e16a1b010a7"]
        # The Marketplace identity's, not the app's own identity.
        assert query["client_id"] == ["1b2c3d4e-client"]
    finally:
        endpoint.stop()


def test_a_run_out_of_budget_leaves_the_rest_to_the_next_which_starts_there(ex):
    tenants = [ex.tenant() for _ in range(3)]
    for tenant in tenants:
        ex.apply(event(tenant, "api.requests", "100005", H09))
    exporter = ex.services.exporter
    # A budget spent at once: a run sends nothing and plans one tenant and target (it always plans one).
    exporter.budget = timedelta(0)
    pending = [ex.run().pending for _ in range(2 * len(tenants))]
    # Each run went on where the last stopped: one more intent every run, each tenant and target once.
    assert pending == [1, 2, 3, 4, 5, 6]
    assert ex.stripe.events == []
    exporter.budget = timedelta(minutes=4)
    assert ex.run() == RunReport(sent=6, failed=0, pending=0)
    assert len(set(ex.stripe.identifiers())) == len(ex.stripe.events) == 3
    for tenant in tenants:
        ex.assert_exact(tenant)


def test_an_hour_cancelled_to_nothing_is_corrected_to_nothing(ex):
    # The only event of an hour, exported and then cancelled: the hour's figure is zero, not absent, and the
    # correction goes to Stripe in that hour; the Marketplace, which takes no decreases, reports it.
    tenant = ex.tenant()
    ex.apply(event(tenant, "api.requests", "100000", H08), event(tenant, "api.requests", "30", H09, name="only"))
    ex.run()
    ex.assert_exact(tenant)
    ex.clock.now += timedelta(minutes=30)
    ex.services.cancels.cancel(tenant, "e:only")
    assert ex.run().sent == 1
    ex.assert_exact(tenant, except_marketplace={"api.requests": "-30"})
    customer = f"cus_{tenant[2:]}"
    hour_nine = [e.value for e in ex.stripe.events if datetime.fromtimestamp(e.timestamp, UTC).hour == 9]
    assert hour_nine == [Decimal(30), Decimal(-30)]
    assert ex.stripe.total(customer, "api_requests") == Decimal(100_000)
