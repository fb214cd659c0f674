"""The pre-aggregating writer's windows (pure) against the ledger on the memory store: for every aggregation kind,
the aggregates it sends count exactly what the raw events count (totals, event counts, days, hours, groups,
distinct values), whatever the order of recording, windows sent early and a key recorded again after its window
went; ids that never repeat; and the level changes of a time-weighted meter, which integrate exactly as every
report does."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.client.errors import InvalidEvent
from metering.client.levels import LevelChanges
from metering.client.windows import Folding, MeterRule, Windows, window_length_us
from metering.core import decimals
from metering.core.events import UsageEvent
from metering.core.hub import Position
from metering.core.meters import load_catalog
from metering.core.periods import Granularity
from metering.ledger.batch import SourcedEvent
from metering.stores.memory import MemoryStore
from tests.support import FixedClock, wired

CATALOG = load_catalog()
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
DAY = date(2026, 11, 24)
START = datetime(2026, 11, 24, 8, 57, 30, tzinfo=UTC)
WALL = NOW.timestamp()  # the wall clock of calls whose windows are drained, not left to fall due
SPAN_US = 5 * 60 * 1_000_000
# One of each kind of the default catalog, with what a raw event of it carries besides its quantity.
KINDS: dict[str, dict[str, Any]] = {
    "api.requests": {"dimensions": ["region", "endpoint"]},  # sum
    "reports.generated": {"dimensions": ["format"]},  # count
    "storage.gb_peak": {"dimensions": ["tier"]},  # max
    "credits.balance": {},  # min (negative allowed)
    "seats.licensed": {},  # latest
    "users.active": {"user": True},  # unique_count
}


def raw_events(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Recorded events over five minutes across an hour's end, for two tenants; distinct timestamps
    (microseconds) so that `latest` has one answer."""
    events = []
    used: set[int] = set()
    for i in range(count):
        metric = rng.choice(list(KINDS))
        offset = rng.randrange(SPAN_US)
        while offset in used:
            offset = rng.randrange(SPAN_US)
        used.add(offset)
        fields: dict[str, Any] = {
            "tenant_id": rng.choice(["acme", "globex"]),
            "metric": metric,
            "quantity": str(Decimal(rng.randint(-500 if metric == "credits.balance" else 0, 10_000)) / 100),
            "timestamp": START + timedelta(microseconds=offset),
            "source": "gateway",
            "event_id": f"raw-{i}",
        }
        dims = {d: rng.choice(["a", "b", "c"]) for d in KINDS[metric].get("dimensions", []) if rng.random() < 0.8}
        if dims:
            fields["dimensions"] = dims
        if KINDS[metric].get("user"):
            fields["user_id"] = f"user-{rng.randrange(12)}"
        if rng.random() < 0.1:
            fields["count"] = rng.randint(2, 50)
        events.append(fields)
    return events


def folded(
    events: list[dict[str, Any]], *, window: float = 10.0, max_open: int = 10_000, seed: int = 0
) -> list[UsageEvent]:
    """What a writer sends for `events`, recorded in a shuffled order, with windows falling due as they would."""
    windows = Windows(CATALOG, writer_id="w", source="gateway", window=window, max_open=max_open)
    order = list(events)
    random.Random(seed).shuffle(order)
    sent: list[UsageEvent] = []
    for index, raw in enumerate(order):
        fields = {k: v for k, v in raw.items() if k not in ("tenant_id", "metric", "quantity", "event_id")}
        sent.extend(
            windows.add(raw["tenant_id"], raw["metric"], raw["quantity"], fields, now=raw["timestamp"].timestamp())
        )
        if index % 97 == 0:  # a window that ends while later events of it are still to come
            sent.extend(windows.due(raw["timestamp"].timestamp()))
    sent.extend(windows.drain())
    assert windows.recorded == len(events)
    return sent


def figures(events: list[UsageEvent]) -> dict[str, Any]:
    """Every figure the readers give for the events, counted by the ledger on a memory store."""
    services = wired(MemoryStore(), clock=FixedClock(NOW))
    services.ledger.apply([SourcedEvent(e, Position("hub", i)) for i, e in enumerate(events)])
    reader = services.usage
    period = services.schedule.period_at("acme", NOW)
    found: dict[str, Any] = {}
    for tenant in ("acme", "globex"):
        for metric, kind in KINDS.items():
            usage = reader.current(tenant, metric)
            found[f"{tenant} {metric}"] = (usage.total, usage.event_count)
            found[f"{tenant} {metric} days"] = [
                (b.total, b.event_count) for b in reader.history(tenant, metric, DAY, DAY)
            ]
            if metric != "users.active":
                hours = reader.history(tenant, metric, DAY, DAY, Granularity.HOUR)
                found[f"{tenant} {metric} hours"] = [(b.total, b.event_count) for b in hours]
            for dim in kind.get("dimensions", []):
                groups = reader.groups(tenant, metric, dim, period)
                found[f"{tenant} {metric} {dim}"] = [(g.key, g.total, g.event_count) for g in groups]
    return found


def as_events(raw: list[dict[str, Any]]) -> list[UsageEvent]:
    return [UsageEvent.model_validate(fields) for fields in raw]


@pytest.mark.parametrize("seed", range(4))
def test_aggregates_count_exactly_what_the_raw_events_count_for_every_kind(seed):
    raw = raw_events(random.Random(seed), 1500)
    sent = folded(raw, seed=seed)
    assert figures(sent) == figures(as_events(raw))


def test_a_steady_stream_becomes_one_event_per_key_and_window():
    windows = Windows(CATALOG, writer_id="w", source="gw", window=10)
    sent: list[UsageEvent] = []
    for i in range(12_000):  # 200 a second for a minute, over 2 regions
        at = START + timedelta(microseconds=i * 5_000)
        sent += windows.add(
            "acme",
            "api.requests",
            "1",
            {"timestamp": at, "dimensions": {"region": "eu" if i % 2 else "us"}},
            now=at.timestamp(),
        )
        sent += windows.due(at.timestamp())
    sent += windows.drain()
    assert len(sent) == 2 * 6
    assert sum(e.count or 1 for e in sent) == 12_000
    assert {e.quantity for e in sent} == {Decimal(1000)}


def test_windows_sent_early_and_a_minute_window_still_count_exactly():
    raw = raw_events(random.Random(7), 1000)
    expected = figures(as_events(raw))
    assert figures(folded(raw, max_open=5)) == expected  # the oldest window goes whenever 5 aggregates are open
    assert figures(folded(raw, window=60)) == expected


def test_every_aggregate_has_an_id_of_its_own_even_for_a_key_sent_twice_in_one_window():
    raw = raw_events(random.Random(3), 800)
    sent = folded(raw, max_open=3)
    assert len({e.event_id for e in sent}) == len(sent)
    by_window_and_key: dict[tuple[Any, ...], int] = {}
    for event in sent:
        key = (
            event.tenant_id,
            event.metric,
            event.timestamp.replace(second=event.timestamp.second // 10 * 10, microsecond=0),
        )
        by_window_and_key[key] = by_window_and_key.get(key, 0) + 1
    assert max(by_window_and_key.values()) > 1  # the case the generation exists for did happen


def test_two_writers_never_share_an_id():
    fields = {"timestamp": NOW, "dimensions": {"region": "eu"}}
    ids = set()
    for writer in ("w1", "w2"):
        windows = Windows(CATALOG, writer_id=writer, source="s", window=10)
        windows.add("acme", "api.requests", "1", fields, now=WALL)
        ids |= {e.event_id for e in windows.drain()}
    assert len(ids) == 2


def test_an_aggregate_stands_for_its_events_in_one_event_of_the_window():
    windows = Windows(CATALOG, writer_id="w", source="gw", window=10)
    at = datetime(2026, 11, 24, 11, 59, 53, 250000, tzinfo=UTC)
    live = at.timestamp()  # recorded as they happen
    for quantity in ("1.5", "2", "0.25"):
        fields = {"timestamp": at, "dimensions": {"region": "eu"}, "user_id": "u1"}
        windows.add("acme", "api.requests", quantity, fields, now=live)
    windows.add("acme", "seats.licensed", 4, {"timestamp": at}, now=live)
    windows.add("acme", "seats.licensed", 9, {"timestamp": at + timedelta(seconds=5)}, now=live + 5)
    assert windows.next_due() == NOW.timestamp()  # the window's end
    assert windows.due(NOW.timestamp() - 0.001) == []
    total, latest = windows.due(NOW.timestamp())
    window_start = datetime(2026, 11, 24, 11, 59, 50, tzinfo=UTC)
    assert (total.quantity, total.count, total.timestamp) == (Decimal("3.75"), 3, window_start)
    assert (total.dimensions, total.user_id, total.source) == ({"region": "eu"}, None, "gw")  # user_id is not a key
    assert (latest.quantity, latest.count, latest.timestamp) == (Decimal(9), 2, at + timedelta(seconds=5))
    assert windows.open == 0


def test_a_window_recorded_after_its_end_stays_open_for_its_length():
    windows = Windows(CATALOG, writer_id="w", source="gw", window=10)
    backfill = NOW - timedelta(hours=1)
    windows.add("acme", "api.requests", "1", {"timestamp": backfill}, now=WALL)
    assert windows.next_due() == WALL + 10
    windows.add("acme", "api.requests", "1", {"timestamp": backfill}, now=WALL + 9)
    assert windows.due(WALL + 9.9) == []
    [event] = windows.due(WALL + 10)
    assert (event.quantity, event.count) == (Decimal(2), 2)


def test_a_sum_past_18_digits_or_a_billion_events_starts_another_aggregate():
    windows = Windows(CATALOG, writer_id="w", source="gw", window=10)
    big = "999999999999999999"
    assert windows.add("acme", "api.requests", big, {"timestamp": NOW}, now=WALL) == []
    [first] = windows.add("acme", "api.requests", "1", {"timestamp": NOW}, now=WALL)
    assert (first.quantity, first.count) == (Decimal(big), None)
    windows.add("acme", "reports.generated", 1, {"timestamp": NOW, "count": 10**9}, now=WALL)
    [full] = windows.add("acme", "reports.generated", 1, {"timestamp": NOW}, now=WALL)
    assert full.count == 10**9
    rest = windows.drain()
    assert sorted((e.metric, str(e.quantity), e.count) for e in rest) == [
        ("api.requests", "1", None),
        ("reports.generated", "1", None),
    ]


def test_what_cannot_be_folded_goes_as_recorded():
    windows = Windows(CATALOG, writer_id="w", source="gw", window=10)
    [own] = windows.add("acme", "api.requests", "1", {"timestamp": NOW, "event_id": "mine"}, now=WALL)
    [keyed] = windows.add("acme", "api.requests", "1", {"timestamp": NOW, "idempotency_key": "k1"}, now=WALL)
    [sampled] = windows.add("acme", "pages.viewed", "1", {"timestamp": NOW, "sample_weight": 10}, now=WALL)
    [unknown] = windows.add("acme", "no.such.meter", "1", {"timestamp": NOW}, now=WALL)  # the service will refuse it
    assert (own.event_id, keyed.idempotency_key, sampled.sample_weight, unknown.metric) == (
        "mine",
        "k1",
        10,
        "no.such.meter",
    )
    assert (windows.open, windows.recorded) == (0, 4)


@pytest.mark.parametrize(
    ("metric", "quantity", "fields", "field"),
    [
        ("api.requests", "-1", {}, "quantity"),
        ("api.requests", "1.0000000000001", {}, "quantity"),
        ("api.requests", "1", {"unit": "byte"}, "unit"),
        ("users.active", "1", {}, "user_id"),
        ("api.requests", "1", {"count": 0}, "count"),
        ("api.requests", "1", {"dimensions": {"Bad": "x"}}, "dimensions.Bad"),
        ("api.requests", "1", {"timestamp": "yesterday"}, "timestamp"),
        ("api.requests", "1", {"timestamp": datetime(2026, 11, 24, 9)}, "timestamp"),
    ],
)
def test_an_event_the_service_would_refuse_is_refused_before_it_is_folded(metric, quantity, fields, field):
    windows = Windows(CATALOG, writer_id="w", source="gw", window=10)
    with pytest.raises(InvalidEvent) as refused:
        windows.add("acme", metric, quantity, {"timestamp": NOW, **fields}, now=WALL)
    assert [e.field for e in refused.value.errors] == [field]
    assert (windows.open, windows.recorded) == (0, 0)


@pytest.mark.parametrize("window", [0, -10, 7, 0.7, 1000, 1800])
def test_a_window_must_divide_a_quarter_hour(window):
    with pytest.raises(ValueError, match="divides 15 minutes"):
        window_length_us(window)


@pytest.mark.parametrize(("window", "length"), [(10, 10_000_000), (0.5, 500_000), (900, 900_000_000)])
def test_window_lengths(window, length):
    assert window_length_us(window) == length


def test_time_weighted_meters_fold_as_level_changes():
    assert MeterRule.of(None).folding is Folding.ALONE
    assert {MeterRule.of(m).folding for m in CATALOG.meters.values()} >= {Folding.ADD, Folding.COUNT, Folding.DISTINCT}


# time-weighted levels -----------------------------------------------------------------------------------------


def report(i: int, second: int, level: int, resource: str = "r1", **fields: Any) -> UsageEvent:
    return UsageEvent(
        event_id=f"e{i:04d}",
        tenant_id="acme",
        metric="storage.gb",
        quantity=level,
        timestamp=NOW + timedelta(seconds=second),
        source="t",
        resource_id=resource,
        **fields,
    )


def integral(reports: list[UsageEvent], until: int = 10_000) -> Decimal:
    """The level integrated over time, the way the service does: each report holds until the next by (time, id)."""
    ordered = sorted(reports, key=lambda e: (e.timestamp, e.event_id))
    area = Decimal(0)
    for current, following in zip(ordered, [*ordered[1:], None], strict=True):
        end = NOW + timedelta(seconds=until) if following is None else following.timestamp
        area += current.quantity * Decimal((end - current.timestamp).total_seconds())
    return area


@settings(max_examples=300, deadline=None)
@given(
    levels=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 3)), min_size=1, max_size=60),
    order=st.randoms(use_true_random=False),
    history=st.integers(2, 8),
)
def test_level_changes_integrate_exactly_as_every_report_whatever_the_order(levels, order, history):
    reports = [report(i, second, level) for i, (second, level) in enumerate(levels)]
    recorded = list(reports)
    order.shuffle(recorded)
    changes = LevelChanges(history=history)
    sent: dict[str, UsageEvent] = {}
    for event in recorded:
        for out in changes.add("r1", event):
            sent[out.event_id or ""] = out
    assert integral(list(sent.values())) == integral(reports)


def test_repeated_levels_in_order_are_not_sent():
    changes = LevelChanges()
    sent = [e.event_id for i, level in enumerate([5, 5, 5, 7, 7, 5]) for e in changes.add("r1", report(i, i, level))]
    assert sent == ["e0000", "e0003", "e0005"]


def test_a_report_recorded_late_makes_the_one_after_it_a_change():
    changes = LevelChanges()
    assert [e.event_id for e in changes.add("r1", report(1, 10, 5))] == ["e0001"]
    assert changes.add("r1", report(2, 30, 5)) == []
    # Between them, a change: the report at 30 s now changes the level back, so it goes too.
    assert [e.event_id for e in changes.add("r1", report(3, 20, 8))] == ["e0003", "e0002"]


def test_a_report_older_than_what_is_kept_still_counts_exactly():
    changes = LevelChanges(history=2)
    reports = [report(1, 10, 5), report(2, 20, 5), report(3, 30, 7), report(4, 40, 7)]
    sent = [e for r in reports for e in changes.add("r1", r)]
    # The report at 20 s was left out (it repeats 5), then forgotten: it was sent as it was forgotten.
    assert [e.event_id for e in sent] == ["e0001", "e0003", "e0002"]
    late = report(5, 15, 9)  # between the first two, older than every report still kept
    sent += changes.add("r1", late)
    assert integral(sent) == integral([*reports, late])


def test_a_resource_forgotten_for_memory_sends_what_it_left_out():
    changes = LevelChanges(history=4, resources=1)
    changes.add("r1", report(1, 1, 5))
    assert changes.add("r1", report(2, 2, 5)) == []
    assert [e.event_id for e in changes.add("r2", report(3, 3, 1, resource="r2"))] == ["e0003", "e0002"]


def test_a_timestamp_may_be_rfc_3339_text():
    windows = Windows(CATALOG, writer_id="w", source="gw", window=10)
    windows.add("acme", "api.requests", "1", {"timestamp": "2026-11-24T10:00:05+01:00"}, now=WALL)
    windows.add("acme", "api.requests", "2", {"timestamp": datetime(2026, 11, 24, 9, 0, 9, tzinfo=UTC)}, now=WALL)
    [event] = windows.drain()
    assert (event.quantity, event.count, event.timestamp) == (Decimal(3), 2, datetime(2026, 11, 24, 9, tzinfo=UTC))


def test_decimals_round_trip_in_the_aggregate():
    windows = Windows(CATALOG, writer_id="w", source="gw", window=10)
    windows.add("acme", "api.requests", Decimal("0.000000000001"), {"timestamp": NOW}, now=WALL)
    windows.add("acme", "api.requests", 0.1, {"timestamp": NOW}, now=WALL)
    [event] = windows.drain()
    assert decimals.to_str(event.quantity) == "0.100000000001"
