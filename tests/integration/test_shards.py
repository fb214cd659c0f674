"""A tenant spread over several shards: every kind stays exact, first-wins holds for a key reused across meters,
a claim left by a crash is completed, and readers, the closer, cancels, late events, alerts and previews see one
period. On every store (conftest `store`) where the case needs no atomic commit."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from metering.billing.cancels import NotCancellable
from metering.billing.closing import Statement
from metering.core import decimals
from metering.core.events import UsageEvent
from metering.core.hub import Position
from metering.core.meters import load_catalog
from metering.core.periods import DEFAULT_HISTORY, Granularity, TenantSchedule
from metering.core.shards import ShardChange
from metering.ingest.consumer import HubMessage, consume
from metering.ledger.batch import SourcedEvent
from metering.ledger.keys import STATE_ROW, UNIQUES, key_shard, marker_key, partition_key
from metering.ledger.placement import value_shard
from metering.ledger.rows import Marker
from metering.notifications.outbox import DiscardSink
from metering.settings import LateEventPolicy
from metering.tenants.records import LimitPair, TenantUpdate
from metering.transport import EmptyBacklog
from tests.support import FixedClock, InjectedCrash, ProbedStore, make_settings, wired

pytestmark = pytest.mark.store

CATALOG = load_catalog()
NOV = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
SHARDS = 4


def sharded(shards: int = SHARDS) -> TenantSchedule:
    return TenantSchedule(lambda _tenant: DEFAULT_HISTORY, lambda _tenant: (ShardChange(shards, None),))


def event(i: int | str, metric: str = "api.requests", quantity: Any = "1", **fields: Any) -> UsageEvent:
    fields.setdefault("tenant_id", "acme")
    fields.setdefault("timestamp", NOV)
    fields.setdefault("source", "test")
    return UsageEvent(event_id=f"e{i}", metric=metric, quantity=quantity, **fields)


def sourced(events: list[UsageEvent], start: int = 0) -> list[SourcedEvent]:
    return [SourcedEvent(e, Position("0", start + i)) for i, e in enumerate(events)]


def services_on(store: Any, clock: Any, shards: int = SHARDS, **settings: Any) -> Any:
    return wired(
        store,
        settings=make_settings(grace_hours=0, **settings),
        clock=clock,
        schedule=sharded(shards),
        backlog=EmptyBacklog(),
        sink=DiscardSink(),
    )


def november(services: Any) -> Any:
    return services.schedule.period_at("acme", NOV)


def claimed_elsewhere(count: int = 1, start: int = 0) -> list[tuple[int, str]]:
    """Event numbers and users whose distinct value is applied in another shard than the event's key shard."""
    users = CATALOG.meters["users.active"]
    found = []
    for i in range(start, start + 1000):
        if key_shard("acme", f"e:e{i}", SHARDS) != value_shard(users, f"user-{i}", SHARDS):
            found.append((i, f"user-{i}"))
            if len(found) == count:
                return found
    raise AssertionError("too few events applied away from their key shard")


def figures(services: Any, metric: str, **period: Any) -> tuple[str, int]:
    usage = services.usage.for_period("acme", metric, november(services), **period)
    return decimals.to_str(usage.total), usage.event_count


def test_every_kind_is_exact_across_shards_in_totals_days_hours_and_groups(store, clock):
    N = 30  # noqa: N806 (events per meter)
    services = services_on(store, clock)
    days = [NOV - timedelta(days=d, hours=h) for d in range(3) for h in (0, 5)]
    events = []
    for i in range(N):
        at = days[i % len(days)]
        events += [
            event(f"s{i}", "api.requests", f"{i}.5", timestamp=at, dimensions={"region": "eu" if i % 3 else "us"}),
            event(f"m{i}", "storage.gb_peak", str(i * 7 % 101), timestamp=at),
            event(f"n{i}", "credits.balance", str(50 - i * 11 % 97), timestamp=at),
            event(f"l{i}", "seats.licensed", str(i), timestamp=at - timedelta(minutes=i)),
            event(f"u{i}", "users.active", "1", timestamp=at, user_id=f"user-{i % 37}"),
            event(f"c{i}", "reports.generated", "9", timestamp=at),
        ]
    for start in range(0, len(events), 97):
        services.ledger.apply(sourced(events[start : start + 97], start))
    distinct = min(N, 37)
    period = november(services)
    # The tenant's events are spread over all its shards, each a partition with its own state row.
    for shard in range(SHARDS):
        assert store.usage.read(partition_key("acme", period, shard), [STATE_ROW])
    # Every distinct value lives in exactly one shard: one row per user over the four partitions.
    rows = [len(store.usage.range(partition_key("acme", period, s), *UNIQUES)) for s in range(SHARDS)]
    assert sum(rows) == distinct
    assert sum(1 for n in rows if n) > 1
    latest = max((e for e in events if e.metric == "seats.licensed"), key=lambda e: (e.timestamp, e.event_id)).quantity
    assert figures(services, "api.requests") == (decimals.to_str(sum(Decimal(f"{i}.5") for i in range(N))), N)
    assert figures(services, "storage.gb_peak") == (str(max(i * 7 % 101 for i in range(N))), N)
    assert figures(services, "credits.balance") == (str(min(50 - i * 11 % 97 for i in range(N))), N)
    assert figures(services, "seats.licensed") == (str(latest), N)
    assert figures(services, "users.active") == (str(distinct), N)
    assert figures(services, "reports.generated") == (str(N), N)
    # Days and hours combine the shards' day rows and their state rows' latest days.
    first, last = (NOV - timedelta(days=2)).date(), NOV.date()
    for metric in ("api.requests", "users.active", "storage.gb_peak"):
        by_day = services.usage.history("acme", metric, first, last, Granularity.DAY)
        for bucket in by_day:
            inside = [e for e in events if e.metric == metric and bucket.start <= e.timestamp < bucket.end]
            assert bucket.event_count == len(inside)
            if metric == "users.active":
                assert bucket.total == len({e.user_id for e in inside})
            elif metric == "api.requests":
                assert bucket.total == sum(e.quantity for e in inside)
    hours = services.usage.history("acme", "api.requests", first, last, Granularity.HOUR)
    counted = {b.start: b.event_count for b in hours if b.event_count}
    expected = Counter(e.timestamp.replace(minute=0) for e in events if e.metric == "api.requests")
    assert counted == dict(expected)
    groups = {g.key: (g.total, g.event_count) for g in services.usage.groups("acme", "api.requests", "region", period)}
    for region in ("eu", "us"):
        inside = [e for e in events if e.metric == "api.requests" and e.dimensions.get("region") == region]
        assert groups[region] == (sum(e.quantity for e in inside), len(inside))


def test_a_key_reused_for_another_meter_counts_only_the_first_whichever_shard_applies_it(store, clock):
    services = services_on(store, clock)
    [(i, user), (j, other)] = claimed_elsewhere(2)
    # A distinct value first: its claim holds the key shard; the same key for a sum is a conflict.
    services.ledger.apply(sourced([event(i, "users.active", user_id=user)]))
    result = services.ledger.apply(sourced([event(i, "api.requests", "5")], 1))
    assert (result.applied, len(result.conflicts)) == (0, 1)
    # A sum first: its marker holds the key shard; the same key for a distinct value is a conflict, and its value
    # is never applied in the value's shard.
    services.ledger.apply(sourced([event(j, "api.requests", "7")], 2))
    result = services.ledger.apply(sourced([event(j, "users.active", user_id=other)], 3))
    assert (result.applied, len(result.conflicts)) == (0, 1)
    # The same payload again, whole or in one batch with its repeat, is a duplicate, never a second count.
    again = services.ledger.apply(sourced([event(i, "users.active", user_id=user)] * 2, 4))
    assert (again.applied, again.duplicates, len(again.conflicts)) == (0, 2, 0)
    assert figures(services, "users.active") == ("1", 1)
    assert figures(services, "api.requests") == ("7", 1)
    assert {row.data["dedupe_key"] for row in store.conflicts.partition("acme")} == {f"e:e{i}", f"e:e{j}"}


def test_a_key_reused_across_meters_in_one_batch_is_judged_after_the_first(store, clock):
    services = services_on(store, clock)
    [(i, user)] = claimed_elsewhere()
    result = services.ledger.apply(sourced([event(i, "users.active", user_id=user), event(i, "api.requests", "3")]))
    assert (result.applied, len(result.conflicts)) == (1, 1)
    assert figures(services, "users.active") == ("1", 1)
    assert figures(services, "api.requests") == ("0", 0)


def test_a_claim_left_by_a_crash_is_completed_by_the_redelivery(atomic_store, clock):
    probed = ProbedStore(atomic_store)
    services = services_on(probed, clock)
    [(i, user)] = claimed_elsewhere()
    batch = sourced([event(i, "users.active", user_id=user)])
    probed.probe.crash_after_claim = True
    with pytest.raises(InjectedCrash):
        services.ledger.apply(batch)
    period = november(services)
    key = partition_key("acme", period, key_shard("acme", f"e:e{i}", SHARDS))
    marker = marker_key("acme", f"e:e{i}")
    claim = Marker(atomic_store.usage.read(key, [marker])[marker].data)
    applied_in = value_shard(CATALOG.meters["users.active"], user, SHARDS)
    assert claim.applied_shard == applied_in
    assert figures(services, "users.active") == ("0", 0)  # claimed, not applied yet
    # The hub delivers the batch again, to a new instance: the claim is its own, so the event is applied now.
    result = services.new_ledger().apply(batch)
    assert result.applied == 1
    assert figures(services, "users.active") == ("1", 1)
    assert services.new_ledger().apply(batch).applied == 0
    assert figures(services, "users.active") == ("1", 1)


def test_the_closer_flips_every_shard_and_its_statement_combines_them(store):
    clock = FixedClock(NOV)
    services = services_on(store, clock)
    users = claimed_elsewhere(6)
    events = [event(n, "users.active", user_id=user) for n, user in users]
    events += [event(f"g{n}", "storage.gb_peak", str(n)) for n in range(12)]
    events += [event(f"a{n}", "api.requests", "1.25") for n in range(12)]
    services.ledger.apply(sourced(events))
    clock.now = datetime(2026, 12, 1, 1, tzinfo=UTC)
    assert [c.period.key for c in services.closer.run().closed] == ["2026-11-01"]
    period = november(services)
    for shard in range(SHARDS):
        state = store.usage.read(partition_key("acme", period, shard), [STATE_ROW])[STATE_ROW]
        assert state.data["status"] == "closed"
    statement = Statement.model_validate(store.statements.read("acme", ["2026-11-01"])["2026-11-01"].data)
    lines = {line.metric: (decimals.to_str(line.quantity), line.event_count) for line in statement.lines}
    assert lines == {"users.active": ("6", 6), "storage.gb_peak": ("11", 12), "api.requests": ("15", 12)}
    assert services.usage.for_period("acme", "api.requests", period).status == "closed"
    # Counted events replayed after the close are duplicates, in every shard; a new one is late.
    result = services.ledger.apply(sourced([*events, event("new", "users.active", user_id="newcomer")], 100))
    assert (result.applied, result.duplicates, len(result.late)) == (0, len(events), 1)


def test_a_cancel_finds_its_event_in_its_key_shard_and_follows_a_claim(store, clock):
    services = services_on(store, clock)
    [(i, user)] = claimed_elsewhere()
    sums = [event(f"a{n}", "api.requests", str(n)) for n in range(8)]
    services.ledger.apply(sourced([*sums, event(i, "users.active", user_id=user)]))
    for n in range(0, 8, 2):
        assert services.cancels.cancel("acme", f"e:ea{n}").quantity == str(n)
    assert figures(services, "api.requests") == ("16", 4)  # 1 + 3 + 5 + 7
    with pytest.raises(NotCancellable):
        services.cancels.cancel("acme", f"e:e{i}")


def test_alerts_check_the_shards_combined(store, clock):
    services = services_on(store, clock, alert_thresholds="80")
    services.directory.update("acme", TenantUpdate(limits={"api.requests": LimitPair(hard=Decimal(10))}))
    # Eight events of 1, spread over the shards: no shard reaches 8 alone, the period does.
    messages = [HubMessage(json.dumps(event(n).model_dump(mode="json")).encode(), "0", n, NOV) for n in range(8)]
    shards = {key_shard("acme", f"e:e{n}", SHARDS) for n in range(8)}
    assert len(shards) > 1
    consume(messages[:7], services.ledger, services.dead_letters, clock, services.after_apply)
    assert not store.control.range("outbox", "r|", "r|~")
    consume(messages[7:], services.ledger, services.dead_letters, clock, services.after_apply)
    [alert] = store.control.range("outbox", "r|", "r|~")
    assert (alert.data["type"], alert.data["usage"]) == ("quota.threshold_crossed", "8")


def test_the_invoice_preview_combines_the_shards(store, clock):
    services = services_on(store, clock)
    services.ledger.apply(sourced([event(n, "api.requests", "2.5") for n in range(10)]))
    preview = services.invoices.preview("acme")
    [line] = [line for line in preview.lines if line.metric == "api.requests"]
    assert (line.quantity, line.event_count) == (Decimal(25), 10)


def test_late_events_are_carried_into_the_key_shard_of_the_open_period(store):
    clock = FixedClock(datetime(2026, 10, 20, tzinfo=UTC))
    services = services_on(store, clock, late_event_policy=LateEventPolicy.ADJUST)
    october = [event(f"o{n}", "api.requests", "1", timestamp=datetime(2026, 10, 20, tzinfo=UTC)) for n in range(4)]
    services.ledger.apply(sourced(october))
    clock.now = NOV
    services.closer.run()
    late = [event(f"late{n}", "api.requests", "3", timestamp=datetime(2026, 10, 25, tzinfo=UTC)) for n in range(6)]
    result = services.ledger.apply(sourced(late, 50))
    assert services.late_events.handle(result.late).carried == 6
    usage = services.usage.for_period("acme", "api.requests", november(services))
    assert (usage.total, usage.event_count) == (Decimal(18), 6)
    period = november(services)
    for n in range(6):
        partition = partition_key("acme", period, key_shard("acme", f"e:elate{n}", SHARDS))
        assert store.usage.read(partition, [marker_key("acme", f"e:elate{n}")])


def test_shards_change_at_a_period_boundary_through_the_tenant_settings(store):
    clock = FixedClock(NOV)
    services = wired(store, settings=make_settings(), clock=clock, backlog=EmptyBacklog(), sink=DiscardSink())
    shown = services.directory.update("acme", TenantUpdate(shards=4))
    assert (shown.shards, shown.shards_effective_from) == (4, datetime(2026, 12, 1, tzinfo=UTC))
    assert [(c.shards, c.effective_from) for c in shown.shard_history] == [
        (1, None),
        (4, datetime(2026, 12, 1, tzinfo=UTC)),
    ]
    # November keeps one shard to its end, December has four.
    services.ledger.apply(sourced([event(n) for n in range(20)]))
    clock.now = datetime(2026, 12, 3, tzinfo=UTC)
    december = [event(f"d{n}", timestamp=datetime(2026, 12, 2, tzinfo=UTC)) for n in range(20)]
    services.ledger.apply(sourced(december, 100))
    nov = services.schedule.period_at("acme", NOV)
    dec = services.schedule.period_at("acme", datetime(2026, 12, 2, tzinfo=UTC))
    assert (services.schedule.shards("acme", nov), services.schedule.shards("acme", dec)) == (1, 4)
    assert not store.usage.read(partition_key("acme", nov, 1), [STATE_ROW])
    assert all(store.usage.read(partition_key("acme", dec, shard), [STATE_ROW]) for shard in range(4))
    assert services.usage.for_period("acme", "api.requests", dec).event_count == 20
    periods = services.usage.history("acme", "api.requests", date(2026, 11, 1), date(2026, 12, 31), Granularity.PERIOD)
    assert [bucket.event_count for bucket in periods] == [20, 20]
