"""The rules of billing exports that need no target: what each kind sends, what Stripe can hold exactly, how the
aggregator records the hours it changed, what the catalog, tenant settings and app settings accept, and how the
Marketplace stamps an increase."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from metering.billing.exports import values
from metering.billing.exports.engine import identifier, retry_delay
from metering.billing.exports.marketplace import MarketplaceTarget, _body
from metering.billing.exports.rows import Intent
from metering.core.meters import CatalogError, load_catalog, parse_catalog
from metering.core.periods import BillingPeriod
from metering.ledger import rows
from metering.ledger.batch import ChunkDeltas
from metering.ledger.reader import UsageReader
from metering.quotas.plans import load_plans
from metering.stores.memory import MemoryStore
from metering.tenants.records import DEFAULT_RECORD, TenantError, TenantUpdate, apply_change
from tests.support import make_settings

NOVEMBER = BillingPeriod(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC), "2026-11-01")


@pytest.mark.parametrize(
    ("value", "whole", "held"),
    [
        ("12", True, "12"),
        ("12.5", True, "12"),
        ("12.5", False, "12.5"),
        ("-2.5", True, "-2"),  # toward zero: a correction never takes away more than the figure fell
        ("0.4", True, "0"),
        ("1234567890123456.7", False, "1234567890123450"),  # 15 significant digits at most
        ("123456789012345678", True, "123456789012345000"),
        ("0.000000000001", False, "0.000000000001"),
    ],
)
def test_stripe_holds_whole_numbers_or_decimals_of_at_most_15_digits(value, whole, held):
    exact = values.stripe_exact(Decimal(value), whole_numbers=whole)
    assert exact == Decimal(held)
    assert abs(exact) <= abs(Decimal(value))


def test_kinds_send_hour_changes_or_period_increases_and_levels_are_refused():
    catalog = load_catalog()
    assert values.family(catalog.meters["api.requests"]) is values.Family.HOURLY
    assert values.family(catalog.meters["reports.generated"]) is values.Family.HOURLY
    assert values.family(catalog.meters["users.active"]) is values.Family.PERIOD
    assert values.family(catalog.meters["storage.gb_peak"]) is values.Family.PERIOD
    for kind in ("min", "latest"):
        document = {
            "version": "1",
            "meters": {"m.x": {"unit": "u", "aggregation": kind, "stripe_event_name": "x", "allow_negative": False}},
        }
        with pytest.raises(CatalogError, match="cannot be exported"):
            parse_catalog(document)
    with pytest.raises(CatalogError, match="stripe_event_name"):
        parse_catalog({"version": "1", "meters": {"m.x": {"unit": "u", "aggregation": "sum", "stripe_event_name": ""}}})


def test_a_slot_is_the_part_of_an_hour_inside_the_period():
    # A period of a tenant at +05:30 starts at 18:30 UTC: its first slot is half an hour.
    period = BillingPeriod(datetime(2026, 10, 31, 18, 30, tzinfo=UTC), datetime(2026, 11, 30, 18, 30, tzinfo=UTC), "k")
    assert values.slot_bounds(period, "2026-10-31T18") == (period.start, datetime(2026, 10, 31, 19, tzinfo=UTC))
    assert values.slot_bounds(period, "2026-11-30T18") == (datetime(2026, 11, 30, 18, tzinfo=UTC), period.end)
    assert values.hours_between(period.start, period.start + timedelta(hours=1)) == ["2026-10-31T18", "2026-10-31T19"]


def test_the_state_row_records_the_hours_changed_and_raises_a_floor_past_its_bound():
    state = rows.new_state("acme", NOVEMBER)
    for index in range(rows.MAX_CHANGED_HOURS + 3):
        hour = f"2026-11-{1 + index // 24:02d}T{index % 24:02d}"
        state = rows.apply_to_state(
            state, deltas=ChunkDeltas(), new_distinct={}, coverage={}, now="n", today=None, hours={hour}
        )
    view = rows.StateRow(state)
    assert view.version == rows.MAX_CHANGED_HOURS + 3
    assert len(view.changed_hours) == rows.MAX_CHANGED_HOURS
    # The three oldest were forgotten: a reader that saw less than version 3 must look at every hour.
    assert view.changes_floor == 3
    assert min(view.changed_hours.values()) == 4
    # A commit changing no hour (a distinct value) still moves the version.
    again = rows.apply_to_state(state, deltas=ChunkDeltas(), new_distinct={}, coverage={}, now="n", today=None)
    assert rows.StateRow(again).version == view.version + 1
    assert rows.StateRow(again).changed_hours == view.changed_hours


def test_the_reader_says_which_hours_changed_since_a_token(catalog, schedule):
    store = MemoryStore()
    reader = UsageReader(store, catalog, schedule)
    assert reader.changes("acme", NOVEMBER, None).hours == frozenset()  # no usage: nothing to look at
    state = rows.new_state("acme", NOVEMBER)
    for hour in ("2026-11-24T08", "2026-11-24T09"):
        state = rows.apply_to_state(
            state, deltas=ChunkDeltas(), new_distinct={}, coverage={}, now="n", today=None, hours={hour}
        )
    store.usage.upsert("acme|2026-11-01|0", "s", state)
    first = reader.changes("acme", NOVEMBER, None)
    assert first.hours is None  # a first look: every hour
    assert first.token == {"0": 2}
    assert reader.changes("acme", NOVEMBER, {"0": 1}).hours == {"2026-11-24T09"}
    assert reader.changes("acme", NOVEMBER, first.token).hours == frozenset()


def test_tenant_links_are_checked_and_an_empty_one_removes_it(catalog):
    plans = load_plans(None, catalog)
    now = datetime(2026, 11, 24, tzinfo=UTC)

    def change(record, **fields):
        return apply_change(
            record,
            TenantUpdate(**fields),
            plans=plans,
            catalog=catalog,
            now=now,
            not_before=now,
            closed=lambda _period: False,
        )

    linked = change(DEFAULT_RECORD, stripe_customer_id="cus_1", marketplace_resource_id="r", marketplace_plan_id="p")
    assert dict(linked.links) == {
        "stripe_customer_id": "cus_1",
        "marketplace_resource_id": "r",
        "marketplace_plan_id": "p",
    }
    assert "stripe_customer_id" not in change(linked, stripe_customer_id="").links
    with pytest.raises(TenantError) as refused:
        change(linked, marketplace_plan_id="")
    assert refused.value.errors[0].field == "marketplace_plan_id"
    with pytest.raises(ValueError, match="stripe_customer_id"):
        TenantUpdate(stripe_customer_id="cus 1")


def test_settings_of_the_targets_are_checked_at_start():
    assert make_settings(stripe_api_base="http://127.0.0.1:9/").stripe_api_base == "http://127.0.0.1:9"
    with pytest.raises(ValueError, match="https"):
        make_settings(stripe_api_base="http://stripe.example.com")
    with pytest.raises(ValueError, match="METERING_MARKETPLACE_TENANT_ID"):
        make_settings(marketplace_app_id="00000000-0000-0000-0000-000000000001")
    assert make_settings(stripe_api_key="", marketplace_app_id="").stripe_api_key is None
    assert make_settings().export_settle == timedelta(minutes=60)


def test_identifiers_are_short_and_derived_from_the_key_alone():
    first = identifier("stripe", "t" * 128, meter="api.requests", period="2026-11-01", slot="2026-11-24T09", revision=0)
    assert first == identifier(
        "stripe", "t" * 128, meter="api.requests", period="2026-11-01", slot="2026-11-24T09", revision=0
    )
    assert len(first) <= 100
    assert first != identifier(
        "stripe", "t" * 128, meter="api.requests", period="2026-11-01", slot="2026-11-24T09", revision=1
    )
    assert [retry_delay(n).total_seconds() for n in (1, 2, 3, 10)] == [30, 60, 120, 1800]


def _intent(value: str, hour: str = "2026-11-24T09") -> Intent:
    start = values.hour_start(hour)
    return Intent(
        target="marketplace",
        tenant_id="acme",
        meter="api.requests",
        period="2026-11-01",
        slot="p",
        revision=0,
        identifier="x",
        value=Decimal(value),
        hour=hour,
        timestamp=start,
        window_start=NOVEMBER.start,
        window_end=NOVEMBER.end,
        name="api_requests",
        link={"marketplace_resource_id": "res", "marketplace_plan_id": "gold"},
        created=start,
    )


def test_marketplace_quantities_travel_as_the_exact_decimals_they_are():
    body = _body([_intent("1234567890.123456789012")]).decode()
    assert '"quantity":1234567890.123456789012' in body
    assert '"effectiveStartTime":"2026-11-24T09:00:00Z"' in body


def test_the_marketplace_stamps_an_ended_periods_increase_in_its_last_hours_still_taken():
    target = MarketplaceTarget(None, "https://x", lambda: "t", clock=lambda: NOVEMBER.end)  # type: ignore[arg-type]
    now = NOVEMBER.end + timedelta(hours=2, minutes=5)
    assert target.stamp_increase(NOVEMBER, set(), now).hour == "2026-11-30T23"  # type: ignore[union-attr]
    assert target.stamp_increase(NOVEMBER, {"2026-11-30T23"}, now).hour == "2026-11-30T22"  # type: ignore[union-attr]
    # During the period: the current hour, once.
    during = datetime(2026, 11, 24, 12, 30, tzinfo=UTC)
    assert target.stamp_increase(NOVEMBER, set(), during).hour == "2026-11-24T12"  # type: ignore[union-attr]
    assert target.stamp_increase(NOVEMBER, {"2026-11-24T12"}, during) is None
    assert values.marketplace_billable(Decimal(90), Decimal(100)) == 0
