"""Tenant settings without a store: the rules a change keeps and the record's codec (pure), and the directory on
the memory store (its cache, its writes under an ETag)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from metering.core.limits import Limits
from metering.core.meters import load_catalog
from metering.quotas.plans import load_plans
from metering.stores import Row
from metering.stores.memory import MemoryStore
from metering.tenants.records import (
    DEFAULT_RECORD,
    SETTINGS_ROW,
    LimitPair,
    TenantError,
    TenantRecord,
    TenantUpdate,
    apply_change,
)
from tests.support import FixedClock, wired

CATALOG = load_catalog()
PLANS = load_plans(None, CATALOG)
NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


def change(record: TenantRecord, **fields: object) -> TenantRecord:
    return apply_change(
        record, TenantUpdate(**fields), plans=PLANS, catalog=CATALOG, now=NOW, not_before=NOW, closed=lambda _p: False
    )


def test_every_broken_rule_of_a_change_is_named_at_once():
    with pytest.raises(TenantError) as refused:
        change(
            DEFAULT_RECORD,
            plan="gold",
            limits={"api.requests": LimitPair(soft=Decimal(9), hard=Decimal(3)), "no.such": LimitPair(hard=Decimal(1))},
            timezone="Mars/Base",
        )
    assert sorted(e.field for e in refused.value.errors) == [
        "limits.api.requests.soft",
        "limits.no.such",
        "plan",
        "timezone",
    ]


def test_an_override_replaces_and_null_removes_it():
    with_limit = change(DEFAULT_RECORD, plan="pro", limits={"api.requests": LimitPair(hard=Decimal(100))})
    assert (with_limit.plan, with_limit.limits) == ("pro", {"api.requests": Limits(None, Decimal(100))})
    assert change(with_limit, limits={"api.requests": None}).limits == {}


def test_new_terms_start_at_the_first_boundary_after_not_before():
    changed = change(DEFAULT_RECORD, billing_anchor_day=15, timezone="Europe/Berlin")
    [since_always, new] = changed.history
    assert since_always.effective_from is None
    # The boundary is the current terms' (calendar months in UTC): the new ones cannot cut a period short.
    assert new.effective_from == datetime(2026, 12, 1, tzinfo=UTC)
    assert (new.anchor_day, new.timezone) == (15, "Europe/Berlin")


def test_the_record_reads_back_as_it_was_written():
    record = change(
        DEFAULT_RECORD, plan="pro", limits={"api.requests": LimitPair(soft=Decimal("0.5"))}, timezone="Asia/Tokyo"
    )
    row = Row(SETTINGS_ROW, "etag", record.to_json("2026-11-24T12:00:00.000000Z"))
    assert TenantRecord.from_row(row) == TenantRecord(record.plan, record.limits, record.history, "etag", record.plans)
    assert [c.plan for c in record.plans] == ["pro"]


def test_tokens_not_before_moves_forward_only_and_reads_back():
    revoked = change(DEFAULT_RECORD, tokens_not_before="now")
    assert revoked.tokens_not_before == NOW
    row = Row(SETTINGS_ROW, "etag", revoked.to_json("2026-11-24T12:00:00.000000Z"))
    assert TenantRecord.from_row(row).tokens_not_before == NOW
    # Other changes keep it; a revocation cannot be undone, nor set ahead of the clock.
    assert change(revoked, plan="pro").tokens_not_before == NOW
    for instant, rule in (
        (datetime(2026, 11, 1, tzinfo=UTC), "must not be before the current one"),
        (datetime(2026, 11, 25, tzinfo=UTC), "must not be in the future"),
    ):
        with pytest.raises(TenantError) as refused:
            change(revoked, tokens_not_before=instant)
        [error] = refused.value.errors
        assert (error.field, error.message.startswith(rule)) == ("tokens_not_before", True)


def test_the_directory_caches_reads_and_drops_its_entry_on_a_write():
    store = MemoryStore()
    ticks = [0.0]
    services = wired(store, clock=FixedClock(NOW))
    directory = services.directory
    directory.monotonic = lambda: ticks[0]
    assert directory.record("acme") is DEFAULT_RECORD
    # Another instance changes the plan: this one sees it once its cache entry expires.
    wired(store, clock=FixedClock(NOW)).directory.update("acme", TenantUpdate(plan="pro"))
    assert directory.plan_of("acme").name == PLANS.default.name
    ticks[0] += directory.cache_seconds + 1
    assert directory.plan_of("acme").name == "pro"
    # Its own write is seen at once.
    directory.update("acme", TenantUpdate(plan="free"))
    assert directory.plan_of("acme").name == "free"
    period = directory.settings("acme").current_period
    assert (period.start, period.end) == (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))


def test_a_sampled_meter_cannot_be_given_a_limit():
    with pytest.raises(TenantError) as refused:
        change(DEFAULT_RECORD, limits={"pages.viewed": LimitPair(hard=Decimal(1000))})
    assert [(e.field, e.message) for e in refused.value.errors] == [
        ("limits.pages.viewed", "a sampled meter's figures are estimates, and a quota cannot be decided on an estimate")
    ]
