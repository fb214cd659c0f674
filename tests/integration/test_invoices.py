"""Statements rated at close with the plan in force at the period's end, never rated again; the invoice
preview of an open period, which equals the statement its close writes; on the Table store against Azurite.

Time is a FixedClock the tests move; plans are the packaged ones (pro: a 49.00 fee, 100K calls included then
0.40 per 1K, 0.10 per GB-month of storage, 0.06 per compute hour).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from metering.billing.closing import PeriodCloser, Statement
from metering.billing.invoices import InvoicePreview, Invoices
from metering.billing.late import LateEvents
from metering.billing.statements import LineKind
from metering.bootstrap import Services
from metering.core.decimals import to_str
from metering.core.events import UsageEvent
from metering.core.hub import Position
from metering.core.prices import Pricing
from metering.ledger import control
from metering.ledger.batch import SourcedEvent
from metering.ledger.ledger import Ledger
from metering.notifications.queue import QueueSink
from metering.quotas.plans import PlanCatalog
from metering.settings import LateEventPolicy
from metering.stores import Store
from metering.tenants.directory import TenantDirectory
from metering.tenants.records import TenantError, TenantUpdate
from metering.transport.queue import QueueBacklog, queue_client
from tests.support import FixedClock, make_settings, wired

OCT_15 = datetime(2026, 10, 15, 9, tzinfo=UTC)
NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
NOV_24 = datetime(2026, 11, 24, 12, tzinfo=UTC)
DEC_1 = datetime(2026, 12, 1, tzinfo=UTC)


@dataclass
class Billed:
    store: Store
    clock: FixedClock
    plans: PlanCatalog
    directory: TenantDirectory
    ledger: Ledger
    late: LateEvents
    closer: PeriodCloser
    invoices: Invoices
    services: Services
    sequence: int = 0

    def pricing(self, tenant: str, end: datetime) -> Pricing:
        return self.plans.pricing(self.directory.plan_for_period(tenant, end))

    def apply(self, *events: UsageEvent) -> None:
        items = []
        for item in events:
            self.sequence += 1
            items.append(SourcedEvent(item, Position("0", self.sequence)))
        result = self.ledger.apply(items)
        self.late.handle(result.late)

    def statement(self, tenant: str, key: str) -> Statement:
        row = self.store.statements.read(tenant, [key])[key]
        return Statement.model_validate(row.data)

    def set_plan(self, tenant: str, plan: str, effective: datetime | None = None) -> Any:
        return self.directory.update(tenant, TenantUpdate(plan=plan, plan_effective_from=effective))


def build(store: Store, azurite: Any, catalog: Any, policy: LateEventPolicy = LateEventPolicy.REVIEW) -> Billed:
    clock = FixedClock(OCT_15)
    suffix = uuid.uuid4().hex[:16]
    settings = make_settings(grace_hours=24, dedupe_retention_days=35, late_event_policy=policy)
    services = wired(
        store,
        settings=settings,
        clock=clock,
        catalog=catalog,
        sink=QueueSink(queue_client(azurite.connection_string, f"n{suffix}")),
        backlog=QueueBacklog(queue_client(azurite.connection_string, f"h{suffix}")),
    )
    return Billed(
        store=store,
        clock=clock,
        plans=services.plans,
        directory=services.directory,
        ledger=services.ledger,
        late=services.late_events,
        closer=services.closer,
        invoices=services.invoices,
        services=services,
    )


@pytest.fixture
def billed(table_store, azurite, catalog) -> Billed:
    return build(table_store, azurite, catalog)


def event(tenant: str, name: str, metric: str, quantity: str, at: datetime, **fields: Any) -> UsageEvent:
    return UsageEvent(
        event_id=name, tenant_id=tenant, metric=metric, quantity=quantity, timestamp=at, source="test", **fields
    )


def amounts(lines: list[Any]) -> list[tuple[str | None, str, str]]:
    return [(line.metric, line.kind.value, str(line.amount)) for line in lines]


def test_a_period_is_rated_once_at_close_with_the_plan_in_force_at_its_end(billed):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    # On the default plan until the 15th, then on pro: the whole period is rated with pro.
    settings = billed.set_plan(tenant, "pro")
    assert [(c.plan, c.effective_from) for c in settings.plan_history] == [("pro", OCT_15)]
    billed.apply(
        event(tenant, "a", "api.requests", "250000", OCT_15),
        event(tenant, "b", "storage.gb", "12.5", OCT_15),
        event(tenant, "c", "compute.seconds", "5400", OCT_15),
        event(tenant, "d", "seats.licensed", "7", OCT_15),
    )
    billed.clock.now = NOV_24
    [closed] = billed.closer.run().closed
    assert closed.period.key == "2026-10-01"
    statement = billed.statement(tenant, "2026-10-01")
    assert (statement.currency, statement.plan, statement.plan_version) == ("USD", "pro", billed.plans.version)
    assert amounts(statement.lines) == [
        (None, "fee", "49.00"),
        ("api.requests", "usage", "60.00"),  # 150 billable thousands at 0.40
        ("compute.seconds", "usage", "0.09"),  # 1.5 hours at 0.06
        ("seats.licensed", "usage", "0.00"),  # the plan does not price it
        # 12.5 GB from 15 Oct 09:00: 399 of October's 744 hours, 6.703629032258 GB-months at 0.10.
        ("storage.gb", "usage", "0.67"),
    ]
    api = statement.lines[1]
    assert [t.model_dump(mode="json") for t in api.tiers] == [
        {"up_to": "900000", "quantity": "150000", "unit_price": "0.4", "flat_fee": "0", "amount": "60"}
    ]
    assert statement.lines[0].model_dump(mode="json") == {
        "metric": None,
        "kind": "fee",
        "unit": None,
        "aggregation": None,
        "quantity": "1",
        "event_count": 0,
        "amount": "49.00",
        "tiers": None,
    }
    assert (str(statement.subtotal), statement.rated) == ("109.76", True)
    assert sum(line.amount for line in statement.lines) == statement.subtotal

    # A plan change after the close changes nothing in it: not now, and not when backdated into it.
    stored = billed.store.statements.read(tenant, ["2026-10-01"])["2026-10-01"]
    billed.set_plan(tenant, "enterprise")
    with pytest.raises(TenantError) as refused:
        billed.set_plan(tenant, "free", OCT_15)
    assert [(e.field, "closed" in e.message) for e in refused.value.errors] == [("plan_effective_from", True)]
    assert billed.closer.run().closed == []
    # A closer that raced the first one, now under enterprise, finds the statement written and keeps it.
    # (November is indexed too: the storage level closing October carried into it.)
    [entry] = [
        e for e in control.indexed(billed.store.control) if e.tenant_id == tenant and e.period.key == "2026-10-01"
    ]
    assert billed.closer.close(entry, NOV_24) == statement
    assert billed.store.statements.read(tenant, ["2026-10-01"])["2026-10-01"].data == stored.data
    # November is rated with enterprise, the plan in force at its end.
    assert billed.pricing(tenant, DEC_1).plan == "enterprise"
    assert billed.pricing(tenant, NOV_1).plan == "pro"


def test_the_preview_of_an_open_period_is_the_statement_its_close_writes(table_store, azurite, catalog):
    billed = build(table_store, azurite, catalog, LateEventPolicy.ADJUST)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    billed.set_plan(tenant, "pro")
    billed.apply(event(tenant, "oct", "api.requests", "50000", OCT_15))
    billed.clock.now = NOV_1 + timedelta(hours=6)
    # In November's first 24 hours there is no forecast yet; without usage the preview is the base fee.
    early = billed.invoices.preview(tenant)
    assert (early.period_start, early.period_end, early.forecast) == (NOV_1, DEC_1, None)
    assert (amounts(early.lines), str(early.subtotal)) == ([(None, "fee", "49.00")], "49.00")

    billed.clock.now = datetime(2026, 11, 2, 1, tzinfo=UTC)
    billed.closer.run()  # October closes: 50K calls are within the allowance
    assert str(billed.statement(tenant, "2026-10-01").subtotal) == "49.00"
    # November: 95K calls, and a late October event of 10K carried in at the margin: 5K past the allowance.
    billed.apply(
        event(tenant, "n1", "api.requests", "95000", NOV_1 + timedelta(days=2)),
        event(tenant, "n2", "storage.gb", "3", NOV_1 + timedelta(days=2)),
        event(tenant, "late", "api.requests", "10000", OCT_15),
    )
    billed.clock.now = NOV_1 + timedelta(days=6)
    preview = billed.invoices.preview(tenant)
    assert (preview.currency, preview.plan, preview.plan_version) == ("USD", "pro", billed.plans.version)
    assert amounts(preview.lines) == [
        (None, "fee", "49.00"),
        ("api.requests", "usage", "0.00"),
        ("api.requests", "adjustment", "2.00"),  # rate(105K) - rate(95K) = 5 thousands at 0.40
        ("storage.gb", "usage", "0.28"),  # 3 GB from 3 Nov to the end if nothing changes: 2.8 GB-months
    ]
    assert str(preview.subtotal) == "51.28"
    # The forecast: 95K calls in 6 of 30 days make 475K (carried events and levels as they are).
    assert preview.forecast is not None
    assert [(line.kind.value, to_str(line.quantity), str(line.amount)) for line in preview.forecast.lines] == [
        ("fee", "1", "49.00"),
        ("usage", "475000", "150.00"),
        ("adjustment", "10000", "4.00"),
        ("usage", "2016", "0.28"),  # GB-hours: a level held is already its whole period's
    ]
    assert str(preview.forecast.subtotal) == "203.28"

    # Nothing more arrives; November closes with exactly what the preview said.
    billed.clock.now = DEC_1 + timedelta(days=1, hours=1)
    billed.closer.run()
    statement = billed.statement(tenant, "2026-11-01")
    assert statement.lines == preview.lines
    assert (statement.subtotal, statement.currency, statement.plan, statement.plan_version) == (
        preview.subtotal,
        preview.currency,
        preview.plan,
        preview.plan_version,
    )
    assert statement.lines[2].tiers[0].quantity == Decimal(5000)


def test_a_forecast_projects_sums_linearly_to_a_quotient_of_12_places(billed):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    billed.clock.now = NOV_1
    billed.set_plan(tenant, "pro")
    billed.apply(event(tenant, "a", "api.requests", "300000", NOV_1 + timedelta(hours=1)))
    billed.clock.now = NOV_1 + timedelta(days=9, hours=12)  # 9.5 of 30 days
    preview = billed.invoices.preview(tenant)
    assert preview.forecast is not None
    usage = preview.forecast.lines[1]
    assert to_str(usage.quantity) == "947368.421052631579"  # 300000 x 30 / 9.5, half even at 12 places
    assert str(usage.amount) == "338.95"  # 100K included: 847.368421... billable thousands at 0.40


def test_plan_changes_are_backdated_only_into_periods_not_closed(billed):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    billed.clock.now = NOV_24
    with pytest.raises(TenantError) as refused:
        billed.set_plan(tenant, "pro", NOV_24 + timedelta(minutes=1))
    assert refused.value.errors[0].field == "plan_effective_from"
    with pytest.raises(TenantError):
        billed.directory.update(tenant, TenantUpdate(plan_effective_from=NOV_1))
    # Into the open period: the whole period is then rated with it; a later change replaces nothing before it.
    billed.set_plan(tenant, "free")
    settings = billed.set_plan(tenant, "pro", NOV_1)
    assert [(c.plan, c.effective_from) for c in settings.plan_history] == [("pro", NOV_1)]
    settings = billed.set_plan(tenant, "enterprise")
    assert [(c.plan, c.effective_from) for c in settings.plan_history] == [("pro", NOV_1), ("enterprise", NOV_24)]
    assert billed.pricing(tenant, NOV_1).plan == billed.plans.default.name
    assert billed.pricing(tenant, DEC_1).plan == "enterprise"
    assert billed.directory.plan_of(tenant).name == "enterprise"  # limits and rates follow the plan now


def test_statements_written_before_prices_read_as_unrated(table_store, azurite, catalog):
    billed = build(table_store, azurite, catalog)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    old = {
        "tenant_id": tenant,
        "period_start": "2026-10-01T00:00:00Z",
        "period_end": "2026-11-01T00:00:00Z",
        "closed_at": "2026-11-02T00:05:00Z",
        "catalog_version": "2026-11-01",
        "lines": [
            {
                "metric": "api.requests",
                "kind": "usage",
                "unit": "count",
                "aggregation": "sum",
                "quantity": "40",
                "event_count": 1,
            }
        ],
    }
    table_store.statements.upsert(tenant, "2026-10-01", old)
    api = billed.services.http.billing
    body = api.statement(tenant, {"period": "2026-10-01"}, None).json()
    assert (body["currency"], body["plan"], body["subtotal"], body["lines"][0]["amount"]) == (None, None, None, None)
    assert not Statement.model_validate(old).rated
    text = api.statement(tenant, {"period": "2026-10-01"}, "text/csv").body.decode()
    header, row = text.splitlines()
    assert header.endswith(",catalog_version,currency,plan,plan_version,amount")
    assert row.endswith(",2026-11-01,,,,")


def test_a_preview_is_typed_for_the_contract(billed):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    billed.clock.now = NOV_24
    preview = billed.invoices.preview(tenant)
    body = InvoicePreview.model_validate_json(preview.model_dump_json()).model_dump(mode="json")
    assert body["plan"] == billed.plans.default.name
    assert (body["lines"], body["subtotal"], body["forecast"]) == ([], "0.00", {"lines": [], "subtotal": "0.00"})
    assert LineKind.FEE.value == "fee"
