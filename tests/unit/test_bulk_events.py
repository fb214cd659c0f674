"""Events counted in bulk (`count`) and sampled events (`sample_weight`) through the ledger, the readers and cancels
on the memory store: what each kind adds, the variance kept exactly, reads marked as estimates with their bound,
and cancels that take back exactly what was added."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from metering.core import decimals
from metering.core.estimates import error_bound
from metering.core.events import UsageEvent, validate_events
from metering.core.hub import Position
from metering.core.meters import Aggregation, CatalogError, Meter, MeterCatalog, load_catalog, parse_catalog
from metering.core.periods import Granularity
from metering.ledger.batch import SourcedEvent, payload_hash
from metering.ledger.cells import Cell
from metering.stores.memory import MemoryStore
from tests.support import FixedClock, wired

NOV = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

# The default catalog (its plans must load), with a sampled sum meter beside its sampled count meter (pages.viewed).
DEFAULT = load_catalog()
CATALOG = MeterCatalog(
    version=DEFAULT.version,
    meters={
        **DEFAULT.meters,
        "bytes.scanned": Meter(name="bytes.scanned", unit="byte", aggregation=Aggregation.SUM, sampling=True),
    },
)


def event(i: int | str, metric: str = "api.requests", quantity: Any = "1", **fields: Any) -> UsageEvent:
    fields.setdefault("tenant_id", "acme")
    fields.setdefault("timestamp", NOV)
    fields.setdefault("source", "test")
    return UsageEvent(event_id=f"e{i}", metric=metric, quantity=quantity, **fields)


@pytest.fixture
def services():
    return wired(MemoryStore(), catalog=CATALOG, clock=FixedClock(NOW))


def apply(services, *events: UsageEvent, start: int = 0):
    return services.ledger.apply([SourcedEvent(e, Position("hub", start + i)) for i, e in enumerate(events)])


def figures(services, metric: str) -> tuple[str, int]:
    usage = services.usage.current("acme", metric)
    return decimals.to_str(usage.total), usage.event_count


# count --------------------------------------------------------------------------------------------------------


def test_count_adds_to_a_count_meters_total_and_to_every_meters_event_count(services):
    apply(
        services,
        event(1, "reports.generated", count=250),
        event(2, "reports.generated"),
        event(3, "api.requests", "40.5", count=30),
        event(4, "storage.gb_peak", "12", count=7),
        event(5, "seats.licensed", "9", count=3),
        event(6, "users.active", "1", user_id="ann", count=11),
        event(7, "users.active", "1", user_id="bob", count=2),
    )
    assert figures(services, "reports.generated") == ("251", 251)
    assert figures(services, "api.requests") == ("40.5", 30)  # a sum's events were summed by their sender
    assert figures(services, "storage.gb_peak") == ("12", 7)
    assert figures(services, "seats.licensed") == ("9", 3)
    assert figures(services, "users.active") == ("2", 13)  # distinct values, whatever the count


def test_count_reaches_the_day_hour_and_group_cells(services):
    apply(services, event(1, "api.requests", "3", count=5, dimensions={"region": "eu"}), event(2, "api.requests"))
    [day] = services.usage.history("acme", "api.requests", date(2026, 11, 24), date(2026, 11, 24))
    hours = services.usage.history("acme", "api.requests", date(2026, 11, 24), date(2026, 11, 24), Granularity.HOUR)
    groups = services.usage.groups("acme", "api.requests", "region", services.schedule.period_at("acme", NOV))
    assert (day.total, day.event_count) == (Decimal(4), 6)
    assert [(h.total, h.event_count) for h in hours if h.event_count] == [(Decimal(4), 6)]
    # The event without a region is a group of its own, so the groups add up to the total.
    assert [(g.key, g.total, g.event_count) for g in groups] == [("eu", Decimal(3), 5), (None, Decimal(1), 1)]


def test_a_retry_of_a_bulk_event_counts_once_and_another_count_under_its_id_is_a_conflict(services):
    first = event(1, "reports.generated", count=100)
    apply(services, first)
    result = apply(services, first, event(1, "reports.generated", count=101), start=10)
    assert (result.duplicates, len(result.conflicts)) == (1, 1)
    assert figures(services, "reports.generated") == ("100", 100)


def test_a_plain_event_hashes_as_it_did_before_count_and_weight_existed():
    # Computed by the payload hash of the release before them: stored markers keep recognising their retries.
    plain = UsageEvent.model_validate(
        {
            "event_id": "evt-1",
            "tenant_id": "acme",
            "metric": "api.requests",
            "quantity": "2.5",
            "timestamp": "2026-11-24T09:00:00Z",
            "source": "gw",
            "dimensions": {"region": "eu"},
        }
    )
    assert payload_hash(plain) == "0117c45c570c591bb7a8aead9a6d7523"
    assert payload_hash(plain.model_copy(update={"count": 1})) == payload_hash(plain)
    assert payload_hash(plain.model_copy(update={"count": 2})) != payload_hash(plain)


def test_cancel_subtracts_the_whole_count(services):
    apply(services, event(1, "reports.generated", count=40), event(2, "reports.generated", count=2))
    result = services.cancels.cancel("acme", "e:e1")
    assert result.quantity == "40"
    assert figures(services, "reports.generated") == ("2", 2)


# sampling -----------------------------------------------------------------------------------------------------


def test_a_sampled_count_is_the_weighted_sum_and_its_variance_is_exact(services):
    apply(
        services,
        event(1, "pages.viewed", sample_weight=100, dimensions={"page": "home"}),
        event(2, "pages.viewed", sample_weight=100, count=3, dimensions={"page": "home"}),
        event(3, "pages.viewed", dimensions={"page": "docs"}),  # no weight: kept for sure, no variance
    )
    usage = services.usage.current("acme", "pages.viewed")
    # 100 * 1 + 100 * 3 + 1; variance 100 * 99 * (1^2 + 3^2) = 99,000.
    assert (usage.total, usage.event_count) == (Decimal(401), 5)
    assert usage.cell is not None
    assert usage.cell.variance == Decimal(99_000)
    assert (usage.estimate, usage.error_bound) == (True, error_bound(Decimal(99_000)))
    assert usage.error_bound == Decimal("616.699602724050")  # 1.96 * sqrt(99000) = 616.6996027240491..., up
    groups = services.usage.groups("acme", "pages.viewed", "page", services.schedule.period_at("acme", NOV))
    assert [(g.key, g.total, g.estimate, g.error_bound) for g in groups] == [
        ("docs", Decimal(1), True, Decimal(0)),
        ("home", Decimal(400), True, usage.error_bound),
    ]


def test_a_sampled_sum_multiplies_the_quantity(services):
    apply(
        services, event(1, "bytes.scanned", "2.5", sample_weight=4), event(2, "bytes.scanned", "0.5", sample_weight=4)
    )
    usage = services.usage.current("acme", "bytes.scanned")
    assert usage.total == Decimal(12)
    assert usage.cell is not None
    assert usage.cell.variance == Decimal(12) * (Decimal("6.25") + Decimal("0.25"))
    [bucket] = services.usage.history("acme", "bytes.scanned", date(2026, 11, 24), date(2026, 11, 24))
    assert (bucket.total, bucket.estimate, bucket.error_bound) == (Decimal(12), True, usage.error_bound)


def test_reads_of_meters_that_are_not_sampled_carry_no_estimate(services):
    apply(services, event(1))
    usage = services.usage.current("acme", "api.requests")
    assert (usage.estimate, usage.error_bound) == (None, None)
    [bucket] = services.usage.history("acme", "api.requests", date(2026, 11, 24), date(2026, 11, 24))
    assert (bucket.estimate, bucket.error_bound) == (None, None)


def test_a_sampled_meter_without_usage_reads_zero_with_a_zero_bound(services):
    usage = services.usage.current("acme", "pages.viewed")
    assert (usage.total, usage.estimate, usage.error_bound) == (Decimal(0), True, Decimal(0))


def test_cancel_of_a_sampled_event_takes_back_its_estimate_and_its_variance(services):
    apply(services, event(1, "pages.viewed", sample_weight=50, count=2), event(2, "pages.viewed", sample_weight=10))
    result = services.cancels.cancel("acme", "e:e1")
    assert result.quantity == "100"
    usage = services.usage.current("acme", "pages.viewed")
    assert (usage.total, usage.event_count) == (Decimal(10), 1)
    assert usage.cell is not None
    assert usage.cell.variance == Decimal(90)


def test_sample_weight_is_refused_on_a_meter_that_is_not_sampled():
    items = [
        {
            "tenant_id": "acme",
            "metric": "api.requests",
            "quantity": "1",
            "timestamp": NOV,
            "source": "t",
            "sample_weight": 5,
        }
    ]
    accepted, errors = validate_events(items, CATALOG, now=NOW)
    assert accepted == []
    assert [(e.field, e.message) for e in errors] == [
        ("sample_weight", "only applies to sampled meters: api.requests is not sampled")
    ]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("count", 0, "must be from 1 to 1000000000"),
        ("count", 10**9 + 1, "must be from 1 to 1000000000"),
        ("count", "3", "must be a JSON integer"),
        ("count", True, "must be a JSON integer"),
        ("count", Decimal("2.0"), "must be a JSON integer"),
        ("sample_weight", 0, "must be from 1 to 1000000"),
        ("sample_weight", 10**6 + 1, "must be from 1 to 1000000"),
    ],
)
def test_count_and_sample_weight_are_whole_numbers_in_range(field, value, message):
    item = {
        "tenant_id": "acme",
        "metric": "pages.viewed",
        "quantity": "1",
        "timestamp": NOV,
        "source": "t",
        field: value,
    }
    _, errors = validate_events([item], CATALOG, now=NOW)
    assert [(e.field, e.message) for e in errors] == [(field, message)]


@pytest.mark.parametrize("kind", ["max", "min", "latest", "unique_count"])
def test_only_sum_and_count_meters_may_be_sampled(kind):
    body: dict[str, Any] = {"unit": "x", "aggregation": kind, "sampling": True}
    if kind == "unique_count":
        body["field"] = "user_id"
    with pytest.raises(CatalogError, match=f"sampling applies to sum and count meters only: a sampled {kind}"):
        parse_catalog({"version": "v", "meters": {"a.b": body}})


# the error bound ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variance", "bound"),
    [
        ("0", "0"),
        ("1", "1.96"),
        ("2", "2.771858582252"),  # 2.77185858225126...: rounded up, never down
        ("100", "19.6"),
        ("0.000000000000000000000001", "0.000000000002"),  # 1.96e-12, up to the twelfth place
    ],
)
def test_the_error_bound_is_1_96_standard_errors_rounded_up_to_12_places(variance, bound):
    assert decimals.to_str(error_bound(Decimal(variance))) == bound


def test_the_cell_of_a_sampled_meter_keeps_its_variance_through_its_stored_form():
    cell = Cell(Decimal("400"), 4, variance=Decimal("99000"))
    assert cell.to_json() == ["400", 4, "99000"]
    assert Cell.from_json(cell.to_json()) == cell
    assert Cell.from_json(["1", 1, "2026-11-24T09:30:00.000000Z", "e1"]).at == ("2026-11-24T09:30:00.000000Z", "e1")


def test_seeded_sampled_runs_fall_within_their_error_bound_in_the_expected_share():
    """Events of random sizes sampled at the source one in k (Bernoulli, as the sampling writer does): the 95 %
    bound must hold in about 95 % of runs. 200 seeded runs, so the share is within 4 points of 95 % unless the
    bound is wrong (a binomial's standard deviation is 1.5 points here)."""
    runs, held = 200, 0
    for seed in range(runs):
        rng = random.Random(seed)
        services = wired(MemoryStore(), catalog=CATALOG, clock=FixedClock(NOW))
        weight = rng.choice([5, 10, 20])
        truth = Decimal(0)
        kept = []
        for i in range(600):
            quantity = Decimal(rng.randint(1, 1000))
            truth += quantity
            if rng.randrange(weight) == 0:
                kept.append(event(i, "bytes.scanned", quantity, sample_weight=weight))
        apply(services, *kept)
        usage = services.usage.current("acme", "bytes.scanned")
        assert usage.error_bound is not None
        held += abs(usage.total - truth) <= usage.error_bound
    assert 0.91 <= held / runs <= 0.99, f"{held} of {runs} runs within their bound"
