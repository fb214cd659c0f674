"""The ledger and the readers on every store (conftest `store`): what each aggregation counts, and what it costs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from metering.core import decimals
from metering.core.events import UsageEvent
from metering.core.hub import Position
from metering.core.meters import GroupKind, parse_catalog
from metering.core.periods import Granularity
from metering.ledger.batch import SourcedEvent
from metering.ledger.keys import STATE_ROW, partition_key
from metering.ledger.reader import RangeError, UsageReader
from metering.stores import Replace
from tests.support import InjectedCrash, ProbedStore, wired

pytestmark = pytest.mark.store

NOV = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


def event(i: int | str, metric: str = "api.requests", quantity: Any = "1", **fields: Any) -> UsageEvent:
    fields.setdefault("tenant_id", "acme")
    fields.setdefault("timestamp", NOV)
    fields.setdefault("source", "test")
    return UsageEvent(event_id=f"e{i}", metric=metric, quantity=quantity, **fields)


def sourced(events: list[UsageEvent], start: int = 0, partition: str = "0") -> list[SourcedEvent]:
    return [SourcedEvent(e, Position(partition, start + i)) for i, e in enumerate(events)]


@pytest.fixture
def probed(store):
    return ProbedStore(store)


@pytest.fixture
def services(probed, schedule, clock):
    """The app's services on the probed store; `services.new_ledger()` is another aggregator instance."""
    return wired(probed, clock=clock, schedule=schedule)


@pytest.fixture
def ledger(services):
    return services.ledger


@pytest.fixture
def reader(store, schedule, clock):
    return wired(store, clock=clock, schedule=schedule).usage


def total(reader: UsageReader, metric: str, tenant: str = "acme") -> tuple[str, int]:
    aggregate = reader.current(tenant, metric)
    return decimals.to_str(aggregate.total), aggregate.event_count


def test_sum_is_exact_to_the_last_digit(ledger, reader):
    quantities = ["0.1"] * 10 + ["123456789012345678.123456789012", "0.000000000001"]
    ledger.apply(sourced([event(i, quantity=q) for i, q in enumerate(quantities)]))
    assert total(reader, "api.requests") == ("123456789012345679.123456789013", 12)


def test_each_aggregation_kind(ledger, reader):
    events = [
        event(1, "compute.seconds", "2.5"),
        event(2, "compute.seconds", "0.25"),
        event(3, "reports.generated", "7"),  # a count meter counts events, whatever the quantity
        event(4, "reports.generated", "1"),
        event(5, "storage.gb_peak", "10"),
        event(6, "storage.gb_peak", "30.5"),
        event(7, "storage.gb_peak", "20"),
        event(8, "credits.balance", "-5"),
        event(9, "credits.balance", "3"),
        event(10, "users.active", "1", user_id="ann"),
        event(11, "users.active", "1", user_id="bob"),
        event(12, "users.active", "1", user_id="ann"),
    ]
    ledger.apply(sourced(events))
    assert total(reader, "compute.seconds") == ("2.75", 2)
    assert total(reader, "reports.generated") == ("2", 2)
    assert total(reader, "storage.gb_peak") == ("30.5", 3)
    assert total(reader, "credits.balance") == ("-5", 2)
    assert total(reader, "users.active") == ("2", 3)


def test_events_counted_in_bulk_and_sampled_keep_their_figures_in_every_store(ledger, reader):
    # The cells of a sampled meter carry their variance as text: it must come back exactly from each store.
    ledger.apply(
        sourced(
            [
                event(1, "reports.generated", count=1_000_000_000),
                event(2, "storage.gb_peak", "4", count=9),
                event(3, "pages.viewed", sample_weight=1_000_000, count=7, dimensions={"page": "home"}),
                event(4, "pages.viewed", sample_weight=3),
            ]
        )
    )
    assert total(reader, "reports.generated") == ("1000000000", 1_000_000_000)
    assert total(reader, "storage.gb_peak") == ("4", 9)
    usage = reader.current("acme", "pages.viewed")
    assert (decimals.to_str(usage.total), usage.event_count) == ("7000003", 8)
    assert usage.cell is not None
    assert usage.cell.variance == Decimal(999_999_000_000 * 49 + 6)
    assert usage.estimate is True


def test_latest_follows_event_time_not_arrival(ledger, reader):
    # The newest event arrives first, in its own batch; the older one must not overwrite it.
    ledger.apply(sourced([event("new", "seats.licensed", "12", timestamp=NOV)]))
    ledger.apply(sourced([event("old", "seats.licensed", "99", timestamp=NOV - timedelta(hours=3))], start=1))
    assert total(reader, "seats.licensed") == ("12", 2)
    # Same instant: the greater event id wins, so the outcome never depends on arrival order.
    ledger.apply(sourced([event("z", "seats.licensed", "7", timestamp=NOV)], start=2))
    ledger.apply(sourced([event("a", "seats.licensed", "8", timestamp=NOV)], start=3))
    assert total(reader, "seats.licensed") == ("7", 4)


def test_unique_count_is_distinct_per_period_and_per_day(ledger, reader):
    day1, day2 = NOV, NOV + timedelta(days=1)
    events = [
        event(1, "users.active", user_id="ann", timestamp=day1),
        event(2, "users.active", user_id="bob", timestamp=day1),
        event(3, "users.active", user_id="ann", timestamp=day2),
    ]
    ledger.apply(sourced(events))
    # A fresh ledger knows nothing: distinct values must come from the store, not its memory.
    ledger.apply(sourced([event(4, "users.active", user_id="bob", timestamp=day2)], start=3))
    assert total(reader, "users.active") == ("2", 4)
    days = reader.history("acme", "users.active", day1.date(), day2.date(), Granularity.DAY)
    assert [(str(b.total), b.event_count) for b in days] == [("2", 2), ("2", 2)]


def test_duplicates_inside_and_across_batches_count_once(ledger, reader, probed):
    first = [event(i, quantity="2") for i in range(5)]
    result = ledger.apply(sourced(first + first[:2]))
    assert (result.applied, result.duplicates) == (5, 2)
    # A client retry: the same events in a later message, with new hub positions.
    result = ledger.apply(sourced([*first[1:4], event(9, quantity="2")], start=10))
    assert (result.applied, result.duplicates) == (1, 3)
    assert total(reader, "api.requests") == ("12", 6)
    # This instance wrote those markers, so the retry cost no failed commit.
    assert probed.probe.failed_commits == 0


def test_idempotency_key_dedupes_events_with_different_ids(services, ledger, reader):
    # A retry without an event id gets a new id from the server; the idempotency key still identifies it.
    a = event("first", quantity="5", idempotency_key="order-1")
    b = event("second", quantity="5", idempotency_key="order-1")
    ledger.apply(sourced([a]))
    result = services.new_ledger().apply(sourced([b], start=1))
    assert (result.applied, result.duplicates, result.conflicts) == (0, 1, [])
    assert total(reader, "api.requests") == ("5", 1)


def test_same_key_different_payload_first_wins_and_is_recorded(services, ledger, reader, store):
    ledger.apply(sourced([event(1, quantity="5")]))
    # A fresh aggregator (another instance) meets the conflict in the store, not in its memory.
    other = services.new_ledger()
    result = other.apply(sourced([event(1, quantity="500")], start=1))
    assert result.applied == 0
    assert [c.event.quantity for c in result.conflicts] == [Decimal(500)]
    assert total(reader, "api.requests") == ("5", 1)
    recorded = store.conflicts.partition("acme")
    assert len(recorded) == 1
    assert recorded[0].data["event"]["quantity"] == "500"
    assert recorded[0].data["dedupe_key"] == "e:e1"


def test_replay_of_applied_batch_costs_no_commit_and_one_read_per_partition(services, probed, reader):
    batch = sourced([event(i, tenant_id=f"t{i % 4}") for i in range(200)])
    services.new_ledger().apply(batch)
    before = probed.probe.reads, probed.probe.commits
    # A new instance (after a restart) receives the same batch again.
    result = services.new_ledger().apply(batch)
    assert (result.applied, result.duplicates, result.retries) == (0, 200, 0)
    assert probed.probe.commits - before[1] == 0
    assert probed.probe.reads - before[0] == 4  # one per tenant partition, never one per event


def test_replay_split_differently_still_costs_no_commit(services, probed):
    batch = sourced([event(i) for i in range(300)])
    services.new_ledger().apply(batch)
    replayer = services.new_ledger()
    commits = probed.probe.commits
    for part in (batch[:50], batch[50:120], batch[120:]):
        assert replayer.apply(part).applied == 0
    assert probed.probe.commits == commits
    assert probed.probe.failed_commits == 0


def test_steady_state_needs_no_reads(ledger, probed):
    ledger.apply(sourced([event(i) for i in range(50)]))
    reads = probed.probe.reads
    ledger.apply(sourced([event(i) for i in range(50, 150)], start=50))
    assert probed.probe.reads == reads


def test_batch_larger_than_one_transaction(ledger, reader, probed):
    events = [event(i, quantity="0.5", dimensions={"region": f"r{i % 3}"}) for i in range(1000)]
    result = ledger.apply(sourced(events))
    assert result.applied == 1000
    assert result.commits >= 11  # 100 operations per transaction, markers alone need 10
    assert total(reader, "api.requests") == ("500", 1000)
    period = ledger.schedule.period_at("acme", NOV)
    groups = reader.groups("acme", "api.requests", "region", period)
    assert [(g.key, str(g.total), g.event_count) for g in groups] == [
        ("r0", "167", 334),
        ("r1", "166.5", 333),
        ("r2", "166.5", 333),
    ]


def test_crash_after_a_commit_whose_response_was_lost(atomic_store, schedule, clock):
    # Needs atomic commits: a crash there leaves a commit whole or absent, never half applied.
    probed = ProbedStore(atomic_store)
    reader = wired(atomic_store, clock=clock, schedule=schedule).usage
    batch = sourced([event(i, tenant_id=f"t{i % 3}", quantity="1.25") for i in range(60)])
    probed.probe.crash_after, probed.probe.crash_applies = 1, True
    crashing = wired(probed, clock=clock, schedule=schedule).new_ledger(max_ops=8)
    with pytest.raises(InjectedCrash):
        crashing.apply(batch)
    # The same instance retries (the trigger's retry policy): its cached ETags are stale now.
    crashing.apply(batch)
    for tenant in ("t0", "t1", "t2"):
        assert total(reader, "api.requests", tenant) == ("25", 20)


def test_events_of_a_closed_period_are_returned_as_late(ledger, store, reader):
    ledger.apply(sourced([event(1)]))
    partition = partition_key("acme", ledger.schedule.period_at("acme", NOV))
    state = store.usage.read(partition, [STATE_ROW])[STATE_ROW]
    store.usage.commit(partition, [Replace(STATE_ROW, {**state.data, "status": "closed"}, state.etag)])
    # The instance still holds the open state: its commit fails on the ETag and it learns the period closed.
    result = ledger.apply(sourced([event(2), event(3)], start=1))
    assert result.applied == 0
    assert [p.event.event_id for p in result.late] == ["e2", "e3"]
    assert total(reader, "api.requests") == ("1", 1)
    assert reader.current("acme", "api.requests").status == "closed"


def test_events_fall_into_their_period_and_day(ledger, reader):
    events = [
        event(1, quantity="1", timestamp=datetime(2026, 10, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        event(2, quantity="2", timestamp=datetime(2026, 11, 1, 0, 0, tzinfo=UTC)),
        event(3, quantity="4", timestamp=datetime(2026, 11, 1, 0, 30, tzinfo=UTC)),
    ]
    ledger.apply(sourced(events))
    periods = reader.history("acme", "api.requests", date(2026, 10, 1), date(2026, 11, 30), Granularity.PERIOD)
    assert [(p.start.date().isoformat(), str(p.total)) for p in periods] == [("2026-10-01", "1"), ("2026-11-01", "6")]
    days = reader.history("acme", "api.requests", date(2026, 10, 31), date(2026, 11, 2), Granularity.DAY)
    assert [(str(d.total), d.event_count) for d in days] == [("1", 1), ("6", 2), ("0", 0)]
    hours = reader.history("acme", "api.requests", date(2026, 11, 1), date(2026, 11, 1), Granularity.HOUR)
    assert len(hours) == 24
    assert [(h.start.hour, str(h.total)) for h in hours if h.event_count] == [(0, "6")]


def test_history_ranges_are_bounded(reader):
    with pytest.raises(RangeError, match="at most 31 days"):
        reader.history("acme", "api.requests", date(2026, 1, 1), date(2026, 3, 1), Granularity.HOUR)
    with pytest.raises(RangeError, match="not hours"):
        reader.history("acme", "users.active", date(2026, 11, 1), date(2026, 11, 1), Granularity.HOUR)
    with pytest.raises(RangeError, match="before start"):
        reader.history("acme", "api.requests", date(2026, 11, 2), date(2026, 11, 1))


def test_a_tenant_without_usage_reads_zero(reader):
    aggregate = reader.current("nobody", "api.requests")
    assert (str(aggregate.total), aggregate.event_count, aggregate.last_updated) == ("0", 0, None)


def test_tenants_are_isolated(ledger, reader):
    ledger.apply(sourced([event(1, tenant_id="a", quantity="3"), event(1, tenant_id="b", quantity="4")]))
    # The same event id under two tenants is two events.
    assert total(reader, "api.requests", "a") == ("3", 1)
    assert total(reader, "api.requests", "b") == ("4", 1)


def test_group_values_past_the_bound_are_counted_in_overflow(store, schedule, clock):
    catalog = parse_catalog(
        {
            "version": "t",
            "meters": {"calls": {"unit": "count", "aggregation": "sum", "group_by": ["route"], "max_group_values": 2}},
        }
    )
    custom = wired(store, clock=clock, schedule=schedule, catalog=catalog)
    events = [event(i, "calls", "1", dimensions={"route": f"/r{i}"}) for i in range(5)]
    custom.ledger.apply(sourced(events))
    reader = custom.usage
    groups = reader.groups("acme", "calls", "route", schedule.period_at("acme", NOV))
    assert [(g.key, str(g.total)) for g in groups] == [("/r0", "1"), ("/r1", "1"), (None, "3")]
    assert total(reader, "calls") == ("5", 5)


def test_a_repeat_in_a_batch_is_judged_against_the_stored_payload(services, ledger, store, reader):
    ledger.apply(sourced([event(1, quantity="5")]))
    # In this batch the conflicting payload comes first, then an exact retry of what was stored.
    fresh = services.new_ledger()
    result = fresh.apply(sourced([event(1, quantity="7"), event(1, quantity="5")], start=1))
    assert (result.applied, result.duplicates) == (0, 1)
    assert [c.event.quantity for c in result.conflicts] == [Decimal(7)]
    assert [r.data["event"]["quantity"] for r in store.conflicts.partition("acme")] == ["7"]
    assert total(reader, "api.requests") == ("5", 1)


def test_applied_positions_stop_before_a_repeat_not_yet_judged(services, schedule, store):
    # Enough events for several chunks; the repeat (position 3) is judged after all of them commit, so the
    # recorded applied range must end before it: a redelivery after a crash there must judge it again.
    events = [event(i) for i in range(3)] + [event(0, quantity="2")] + [event(i) for i in range(3, 20)]
    services.new_ledger(max_ops=8).apply(sourced(events))
    partition = partition_key("acme", schedule.period_at("acme", NOV))
    state = store.usage.read(partition, [STATE_ROW])[STATE_ROW]
    assert state.data["wm"] == {"0": [[0, 2]]}


def test_a_replay_into_a_closed_period_is_a_duplicate_not_late(ledger, store, schedule):
    batch = sourced([event(1), event(2)])
    ledger.apply(batch)
    partition = partition_key("acme", schedule.period_at("acme", NOV))
    state = store.usage.read(partition, [STATE_ROW])[STATE_ROW]
    store.usage.commit(partition, [Replace(STATE_ROW, {**state.data, "status": "closed"}, state.etag)])
    # A new instance gets the batch again (as a client retry, so hub positions do not give it away) plus one
    # event nobody counted: only that one is late.
    retry = [SourcedEvent(e.event) for e in batch] + [SourcedEvent(event(3))]
    result = wired(store, schedule=schedule).ledger.apply(retry)
    assert (result.applied, result.duplicates) == (0, 2)
    assert [p.event.event_id for p in result.late] == ["e3"]


def test_days_move_out_of_the_state_row_and_late_days_still_count(services, ledger, reader, schedule):
    day1, day2 = NOV, NOV + timedelta(days=1)
    groups = {"region": "eu"}
    ledger.apply(sourced([event(1, quantity="1", timestamp=day1, dimensions=groups)]))
    # A later day: day 1's block moves to its row in the same commit that starts day 2's.
    ledger.apply(sourced([event(2, quantity="2", timestamp=day2, dimensions=groups)], start=1))
    # An event of the earlier day after that, then one of day 2 through a fresh instance.
    ledger.apply(sourced([event(3, quantity="4", timestamp=day1, dimensions={"region": "us"})], start=2))
    services.new_ledger().apply(sourced([event(4, quantity="8", timestamp=day2)], start=3))
    days = reader.history("acme", "api.requests", day1.date(), day2.date(), Granularity.DAY)
    assert [(str(d.total), d.event_count) for d in days] == [("5", 2), ("10", 2)]
    hours = reader.history("acme", "api.requests", day1.date(), day2.date(), Granularity.HOUR)
    assert [(h.start, str(h.total)) for h in hours if h.event_count] == [
        (day1.replace(minute=0), "5"),
        (day2.replace(minute=0), "10"),
    ]
    period = schedule.period_at("acme", NOV)
    # Event 4 has no region: the events without it are a group of their own, so the parts add up.
    assert [(g.key, str(g.total), g.kind) for g in reader.groups("acme", "api.requests", "region", period)] == [
        ("eu", "3", GroupKind.VALUE),
        ("us", "4", GroupKind.VALUE),
        (None, "8", GroupKind.ABSENT),
    ]
    assert total(reader, "api.requests") == ("15", 4)
