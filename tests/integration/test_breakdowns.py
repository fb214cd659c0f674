"""Breakdowns by a dimension add up to the total on every store: the events without the dimension are a group of
their own (kind `absent`), apart from the overflow bucket (kind `overflow`), for every aggregation kind, across a
day row and the state row's block, and after a cancel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from metering.core.events import UsageEvent
from metering.core.hub import Position
from metering.core.meters import GroupKind, parse_catalog
from metering.ledger.batch import SourcedEvent
from metering.ledger.cells import combine
from tests.support import wired

pytestmark = pytest.mark.store

NOV = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
KINDS = ("sum", "count", "max", "min", "latest")
CATALOG = parse_catalog(
    {
        "version": "t",
        "meters": {
            f"m.{kind}": {
                "unit": "unit",
                "aggregation": kind,
                "group_by": ["region", "tier"],
                "max_group_values": 2,
            }
            for kind in KINDS
        },
    }
)


def event(i: int, metric: str, quantity: str, day: int, **dimensions: str) -> SourcedEvent:
    usage = UsageEvent(
        event_id=f"e{i}",
        tenant_id="acme",
        metric=metric,
        quantity=quantity,
        timestamp=NOV + timedelta(days=day, minutes=i),
        source="test",
        dimensions=dimensions,
    )
    return SourcedEvent(usage, Position("0", i))


@pytest.fixture
def services(store, schedule, clock):
    return wired(store, clock=clock, schedule=schedule, catalog=CATALOG)


def stream(metric: str) -> list[SourcedEvent]:
    """Three values of region (one past the bound of two a day), events without it, on two days."""
    plan: list[tuple[str, int, dict[str, Any]]] = [
        ("5", 0, {"region": "eu"}),
        ("2", 0, {"region": "us"}),
        ("7", 0, {"region": "ap"}),  # the third value of the day: overflow
        ("11", 0, {}),
        ("3", 0, {"tier": "gold"}),  # has a tier but no region
        ("1", 1, {"region": "eu"}),
        ("13", 1, {}),
    ]
    return [event(i, metric, quantity, day, **dims) for i, (quantity, day, dims) in enumerate(plan)]


@pytest.mark.parametrize("kind", KINDS)
def test_the_groups_of_every_kind_add_up_to_the_total(services, schedule, kind):
    metric = f"m.{kind}"
    services.ledger.apply(stream(metric)[:5])
    # The second day moves the first day's block from the state row to its day row.
    services.new_ledger().apply(stream(metric)[5:])
    reader = services.usage
    period = schedule.period_at("acme", NOV)
    usage = reader.for_period("acme", metric, period)
    for dimension in ("region", "tier"):
        groups = reader.groups("acme", metric, dimension, period)
        whole = combine(CATALOG.meters[metric].aggregation, [g.cell for g in groups])
        assert whole is not None
        assert (whole.value, whole.count) == (usage.total, usage.event_count), dimension
    by_kind = {(g.kind, g.key): g.event_count for g in reader.groups("acme", metric, "region", period)}
    assert by_kind == {
        (GroupKind.VALUE, "eu"): 2,
        (GroupKind.VALUE, "us"): 1,
        (GroupKind.ABSENT, None): 3,
        (GroupKind.OVERFLOW, None): 1,
    }
    tiers = {(g.kind, g.key): g.event_count for g in reader.groups("acme", metric, "tier", period)}
    assert tiers == {(GroupKind.VALUE, "gold"): 1, (GroupKind.ABSENT, None): 6}


def test_a_cancel_subtracts_from_the_group_it_was_counted_in(services, schedule):
    services.ledger.apply(stream("m.sum"))
    services.cancels.cancel("acme", "e:e3")  # 11, without a region, on the first day (now a day row)
    services.cancels.cancel("acme", "e:e2")  # 7, in the overflow
    period = schedule.period_at("acme", NOV)
    groups = [
        (g.kind, g.key, str(g.total), g.event_count) for g in services.usage.groups("acme", "m.sum", "region", period)
    ]
    assert groups == [
        (GroupKind.VALUE, "eu", "6", 2),
        (GroupKind.VALUE, "us", "2", 1),
        (GroupKind.ABSENT, None, "16", 2),
        (GroupKind.OVERFLOW, None, "0", 0),
    ]
    assert str(services.usage.for_period("acme", "m.sum", period).total) == "24"
