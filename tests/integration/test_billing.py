"""Periods closing into statements, late events, cancels and threshold alerts, on every store (conftest `store`).

Time is a FixedClock the tests move; the notifications queue and the queue standing in for the hub are real
Azurite queues. Concurrency tests use real threads against a store with atomic commits (conftest `atomic_store`).
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from azure.storage.queue import QueueClient

from metering.billing.cancels import Cancels, NotCancellable, NotCounted, PeriodClosed
from metering.billing.closing import LineKind, PeriodCloser, Statement
from metering.billing.late import LateEvents
from metering.bootstrap import Services
from metering.core import decimals
from metering.core.events import UsageEvent
from metering.core.hub import Applied, Position
from metering.core.limits import Limits
from metering.ledger.batch import SourcedEvent
from metering.ledger.control import OPEN
from metering.ledger.keys import STATE_ROW, marker_key, partition_key
from metering.ledger.ledger import Ledger
from metering.ledger.reader import UsageReader
from metering.notifications.outbox import Outbox
from metering.notifications.queue import QueueSink
from metering.quotas.alerts import AlertWatch
from metering.settings import LateEventPolicy
from metering.stores import Store
from metering.tenants.directory import TenantDirectory
from metering.tenants.records import LimitPair, TenantUpdate
from metering.transport.queue import QueueBacklog, queue_client
from tests.support import FixedClock, Probe, ProbedStore, make_settings, wired

pytestmark = pytest.mark.store

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
OCT = datetime(2026, 10, 20, 9, tzinfo=UTC)
GRACE = timedelta(hours=24)
RETENTION = timedelta(days=35)


@dataclass
class Pipeline:
    store: Store
    clock: FixedClock
    services: Services
    directory: TenantDirectory
    ledger: Ledger
    reader: UsageReader
    late: LateEvents
    alerts: AlertWatch
    outbox: Outbox
    closer: PeriodCloser
    notifications: QueueClient
    hub: QueueClient

    def apply(self, events: list[UsageEvent], start: int = 0, partition: str = "0") -> Any:
        items = [SourcedEvent(e, Position(partition, start + i)) for i, e in enumerate(events)]
        result = self.ledger.apply(items)
        self.late.handle(result.late)
        for first, state in result.states.values():
            if state is not None and state.status == "open":
                self.alerts.check(first.event.tenant_id, first.period, state.totals())
        self.outbox.dispatch()
        return result

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(m.content) for m in self.notifications.receive_messages(max_messages=32)]

    def statement(self, tenant: str, key: str) -> Statement | None:
        row = self.store.statements.read(tenant, [key]).get(key)
        return None if row is None else Statement.model_validate(row.data)

    def total(self, tenant: str, metric: str, at: datetime = OCT) -> tuple[str, int, str]:
        period = self.ledger.schedule.period_at(tenant, at)
        aggregate = self.reader.for_period(tenant, metric, period)
        return decimals.to_str(aggregate.total), aggregate.event_count, str(aggregate.status)


def build(store: Store, azurite: Any, policy: LateEventPolicy = LateEventPolicy.REVIEW, **parts: Any) -> Pipeline:
    clock = FixedClock(NOW)
    suffix = uuid.uuid4().hex[:16]
    notifications = queue_client(azurite.connection_string, f"n{suffix}")
    hub = queue_client(azurite.connection_string, f"h{suffix}")
    settings = make_settings(
        grace_hours=GRACE // timedelta(hours=1),
        dedupe_retention_days=RETENTION.days,
        late_event_policy=policy,
        alert_thresholds="80,100",
        max_future_minutes=0,
    )
    services = wired(
        store, settings=settings, clock=clock, sink=QueueSink(notifications), backlog=QueueBacklog(hub), **parts
    )
    return Pipeline(
        store=store,
        clock=clock,
        services=services,
        directory=services.directory,
        ledger=services.ledger,
        reader=services.usage,
        late=services.late_events,
        alerts=services.alerts,
        outbox=services.outbox,
        closer=services.closer,
        notifications=notifications,
        hub=hub,
    )


@pytest.fixture
def pipe(store, azurite) -> Pipeline:
    return build(store, azurite)


def event(i: int | str, tenant: str = "acme", at: datetime = OCT, metric: str = "api.requests", **fields) -> UsageEvent:
    fields.setdefault("quantity", "1.5")
    return UsageEvent(event_id=f"e{i}", tenant_id=tenant, metric=metric, timestamp=at, source="test", **fields)


# -- closing ---------------------------------------------------------------------------------------------


def test_close_writes_one_statement_equal_to_usage_and_freezes_the_period(pipe):
    pipe.apply([event(i) for i in range(5)] + [event("m", metric="storage.gb_peak", quantity="7")])
    pipe.apply([event("nov", at=NOW - timedelta(hours=1))])  # the open November period stays open
    report = pipe.closer.run()
    assert [(c.tenant_id, c.period.key) for c in report.closed] == [("acme", "2026-10-01")]
    statement = pipe.statement("acme", "2026-10-01")
    assert statement is not None
    lines = {(line.metric, line.kind): (str(line.quantity), line.event_count) for line in statement.lines}
    assert lines == {("api.requests", LineKind.USAGE): ("7.5", 5), ("storage.gb_peak", LineKind.USAGE): ("7", 1)}
    assert statement.catalog_version == pipe.ledger.catalog.version
    assert pipe.total("acme", "api.requests") == ("7.5", 5, "closed")
    assert pipe.total("acme", "api.requests", NOW) == ("1.5", 1, "open")
    closed = [m for m in pipe.messages() if m["type"] == "period.closed"]
    assert [m["id"] for m in closed] == ["period.closed:acme:2026-10-01"]
    assert closed[0]["statement"]["lines"] == statement.model_dump(mode="json")["lines"]

    # A new event of the closed period is late: the totals and the statement stay as they were.
    result = pipe.apply([event("after")], start=100)
    assert [p.event.event_id for p in result.late] == ["eafter"]
    assert pipe.total("acme", "api.requests") == ("7.5", 5, "closed")
    assert pipe.statement("acme", "2026-10-01") == statement
    assert [item.event["event_id"] for item in pipe.late.list("acme")] == ["eafter"]


def test_a_period_is_not_due_before_its_end_plus_grace(pipe):
    pipe.apply([event(1)])
    pipe.clock.now = datetime(2026, 11, 1, 23, 59, tzinfo=UTC)
    assert pipe.closer.run().closed == []
    pipe.clock.now = datetime(2026, 11, 2, tzinfo=UTC)
    assert len(pipe.closer.run().closed) == 1


def test_closing_twice_changes_nothing_and_sends_period_closed_once(pipe):
    pipe.apply([event(i) for i in range(3)])
    first = pipe.closer.run()
    second = pipe.closer.run()
    assert len(first.closed) == 1
    assert second.closed == []
    assert len(pipe.store.statements.partition("acme")) == 1
    assert [m["id"] for m in pipe.messages()] == ["period.closed:acme:2026-10-01"]
    assert pipe.store.control.partition(OPEN) == []


def test_concurrent_closers_write_exactly_one_statement_per_tenant(atomic_store, azurite):
    pipe = build(atomic_store, azurite)
    tenants = [f"t{i}" for i in range(12)]
    pipe.apply([event(i, tenant=t) for t in tenants for i in range(3)])
    other = build(atomic_store, azurite)
    errors: list[BaseException] = []

    def run(closer: PeriodCloser) -> None:
        try:
            closer.run()
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(c,)) for c in (pipe.closer, other.closer, pipe.closer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for tenant in tenants:
        statements = atomic_store.statements.partition(tenant)
        assert len(statements) == 1
        lines = Statement.model_validate(statements[0].data).lines
        assert [(str(line.quantity), line.event_count) for line in lines] == [("4.5", 3)]


class _CrashOnce:
    """The statements table, failing its first commit as a crash between two steps of closing would."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.crashed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def commit(self, partition: str, operations: Any) -> Any:
        if not self.crashed:
            self.crashed = True
            raise ConnectionError("injected crash before the statement was written")
        return self.inner.commit(partition, operations)


def test_a_crash_mid_close_resumes_on_the_next_run(pipe):
    pipe.apply([event(i) for i in range(4)])
    real = pipe.store.statements
    pipe.store.statements = _CrashOnce(real)
    try:
        with pytest.raises(ConnectionError):
            pipe.closer.run()
        # The state row is closed already, the statement not written, the period still in the open index.
        assert pipe.total("acme", "api.requests")[2] == "closed"
        assert pipe.statement("acme", "2026-10-01") is None
        assert len(pipe.store.control.partition(OPEN)) == 1
        assert len(pipe.closer.run().closed) == 1
    finally:
        pipe.store.statements = real
    statement = pipe.statement("acme", "2026-10-01")
    assert statement is not None
    assert [(str(line.quantity), line.event_count) for line in statement.lines] == [("6", 4)]
    assert pipe.store.control.partition(OPEN) == []


def test_closing_waits_while_the_hub_holds_events_not_yet_applied(pipe):
    pipe.apply([event(1)])
    pipe.hub.create_queue()
    pipe.hub.send_message(b"[]")  # waiting in the hub, enqueued after the period's end plus grace
    report = pipe.closer.run()
    assert (report.closed, report.waiting) == ([], 1)
    assert pipe.total("acme", "api.requests")[2] == "grace"
    # The aggregator applies a message enqueued after that instant: what waits is newer than the period.
    wired(pipe.store).progress.record([Applied("0", 7, datetime.now(UTC))], NOW)
    assert len(pipe.closer.run().closed) == 1


def test_an_aggregator_racing_the_closer_counts_each_event_in_the_statement_or_as_late(atomic_store, azurite):
    pipe = build(atomic_store, azurite)
    batches = [[event(f"{b}-{i}", quantity="1") for i in range(20)] for b in range(30)]
    halfway = threading.Event()
    flipping = threading.Event()
    errors: list[BaseException] = []

    def aggregate() -> None:
        try:
            for number, batch in enumerate(batches):
                pipe.apply(batch, start=number * 100)
                if number == 10:
                    halfway.set()
                    # A store as fast as memory would otherwise be done before the closer starts: go on once
                    # the closer reads the state row it is about to flip, and race its commit from there.
                    flipping.wait(timeout=60)
        except BaseException as error:
            errors.append(error)
        finally:
            halfway.set()

    closer = build(ProbedStore(atomic_store, Probe(on_read=flipping.set)), azurite).closer
    worker = threading.Thread(target=aggregate)
    worker.start()
    assert halfway.wait(timeout=60)
    closed = closer.run().closed  # while the aggregator goes on with the other batches
    worker.join()
    assert len(closed) == 1
    assert errors == []
    statement = pipe.statement("acme", "2026-10-01")
    assert statement is not None
    counted = statement.lines[0].event_count
    late = {item.event["event_id"] for item in pipe.late.list("acme", limit=10_000)}
    partition = partition_key("acme", pipe.ledger.schedule.period_at("acme", OCT))
    all_ids = [e.event_id for batch in batches for e in batch]
    markers = pipe.store.usage.read(partition, [marker_key("acme", f"e:{i}") for i in all_ids])
    in_statement = {i for i in all_ids if marker_key("acme", f"e:{i}") in markers}
    assert counted == len(in_statement) == int(statement.lines[0].quantity)
    assert in_statement.isdisjoint(late)
    assert in_statement | late == set(all_ids)
    # The close landed between the aggregator's commits: some batches before it, some after.
    assert counted >= 11 * 20
    assert late


def test_markers_are_purged_only_after_the_dedupe_retention(pipe):
    pipe.apply([event(i) for i in range(3)])
    pipe.closer.run()
    partition = partition_key("acme", pipe.ledger.schedule.period_at("acme", OCT))
    markers = [marker_key("acme", f"e:e{i}") for i in range(3)]
    pipe.clock.now = NOW + RETENTION - timedelta(minutes=1)
    pipe.closer.run()
    assert len(pipe.store.usage.read(partition, markers)) == 3
    # Until then a replay of a counted event is recognised as counted, not late.
    assert pipe.apply([event(0)], start=50).late == []
    pipe.clock.now = NOW + RETENTION + timedelta(minutes=1)
    assert pipe.closer.run().purged_markers == 3
    assert pipe.store.usage.read(partition, markers) == {}
    assert pipe.total("acme", "api.requests")[:2] == ("4.5", 3)


# -- late events -----------------------------------------------------------------------------------------


def test_late_events_under_review_are_recorded_once_and_counted_nowhere(pipe):
    pipe.apply([event(1)])
    pipe.closer.run()
    for attempt in range(3):
        pipe.apply([event("late-1", quantity="2"), event("late-2", quantity="3")], start=10 + attempt * 10)
    items = pipe.late.list("acme")
    assert sorted(i.event["event_id"] for i in items) == ["elate-1", "elate-2"]
    assert {i.carried_to for i in items} == {None}
    assert {str(i.period_start) for i in items} == {"2026-10-01"}
    assert pipe.total("acme", "api.requests") == ("1.5", 1, "closed")
    assert pipe.total("acme", "api.requests", NOW) == ("0", 0, "open")


def test_late_events_under_adjust_count_once_in_the_current_period(store, azurite):
    pipe = build(store, azurite, LateEventPolicy.ADJUST)
    pipe.apply([event(1)])
    pipe.closer.run()
    pipe.apply([event("n1", at=NOW - timedelta(hours=2), quantity="10")], start=5)
    for attempt in range(3):
        pipe.apply(
            [event("late", quantity="2"), event("level", metric="storage.gb_peak", quantity="99")],
            start=10 + attempt * 10,
        )
    assert pipe.total("acme", "api.requests", NOW) == ("12", 2, "open")
    assert pipe.total("acme", "storage.gb_peak", NOW) == ("0", 0, "open")  # a level is not carried
    carried = {i.event["event_id"]: i.carried_to for i in pipe.late.list("acme")}
    assert {k: str(v) if v else None for k, v in carried.items()} == {"elate": "2026-11-01", "elevel": None}
    assert pipe.total("acme", "api.requests") == ("1.5", 1, "closed")
    # November closes with the carried event as an adjustment line, apart from the usage line.
    pipe.clock.now = datetime(2026, 12, 2, 1, tzinfo=UTC)
    pipe.closer.run()
    statement = pipe.statement("acme", "2026-11-01")
    assert statement is not None
    assert [(line.kind, str(line.quantity), line.event_count) for line in statement.lines] == [
        (LineKind.USAGE, "10", 1),
        (LineKind.ADJUSTMENT, "2", 1),
    ]


# -- cancels ---------------------------------------------------------------------------------------------


@pytest.fixture
def cancels(pipe) -> Cancels:
    return pipe.services.cancels


def test_cancel_subtracts_its_contribution_exactly_once(atomic_store, azurite):
    # Concurrent cancels of one event: needs atomic commits.
    pipe = build(atomic_store, azurite)
    cancels = pipe.services.cancels
    at = NOW - timedelta(hours=3)
    events = [
        event(1, at=at, quantity="2.25", dimensions={"region": "eu"}),
        event(2, at=at, quantity="1", dimensions={"region": "us"}),
        UsageEvent(
            idempotency_key="k-9", tenant_id="acme", metric="reports.generated", quantity="1", timestamp=at, source="t"
        ),
    ]
    pipe.apply(events)
    first = cancels.cancel("acme", "e:e1")
    threads = [threading.Thread(target=cancels.cancel, args=("acme", "e:e1")) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cancels.cancel("acme", "e:e1") == first
    assert (first.metric, first.quantity) == ("api.requests", "2.25")
    assert pipe.total("acme", "api.requests", NOW) == ("1", 1, "open")
    period = pipe.ledger.schedule.period_at("acme", NOW)
    groups = pipe.reader.groups("acme", "api.requests", "region", period)
    assert [(g.key, str(g.total), g.event_count) for g in groups] == [("eu", "0", 0), ("us", "1", 1)]
    day = pipe.reader.history("acme", "api.requests", at.date(), at.date())
    assert [(str(b.total), b.event_count) for b in day] == [("1", 1)]
    cancels.cancel("acme", "k:k-9")
    assert pipe.total("acme", "reports.generated", NOW) == ("0", 0, "open")
    # A replay of a cancelled event is still a duplicate: it does not come back.
    pipe.apply(events, start=10)
    assert pipe.total("acme", "api.requests", NOW) == ("1", 1, "open")


def test_cancel_refuses_unknown_keys_closed_periods_and_levels(pipe, cancels):
    pipe.apply([event(1), event("gb", at=NOW - timedelta(hours=1), metric="storage.gb_peak", quantity="3")])
    with pytest.raises(NotCounted):
        cancels.cancel("acme", "e:nope")
    with pytest.raises(NotCancellable):
        cancels.cancel("acme", "e:egb")
    pipe.closer.run()
    with pytest.raises(PeriodClosed):
        cancels.cancel("acme", "e:e1")
    assert pipe.total("acme", "api.requests") == ("1.5", 1, "closed")


def test_cancel_of_a_day_already_moved_to_its_day_row(pipe, cancels):
    monday = datetime(2026, 11, 16, 10, tzinfo=UTC)
    pipe.apply([event(1, at=monday, quantity="4"), event(2, at=monday, quantity="1")])
    pipe.apply([event(3, at=NOW - timedelta(hours=1), quantity="2")], start=10)  # a later day moves Monday out
    cancels.cancel("acme", "e:e1")
    history = pipe.reader.history(
        "acme",
        "api.requests",
        monday.date(),
        monday.date(),
    )
    assert [(str(b.total), b.event_count) for b in history] == [("1", 1)]
    assert pipe.total("acme", "api.requests", NOW) == ("3", 2, "open")


# -- alerts ----------------------------------------------------------------------------------------------


def test_threshold_alerts_are_sent_once_under_replays_and_recrossings(pipe, cancels):
    pipe.directory.update("acme", TenantUpdate(limits={"api.requests": LimitPair(hard=Decimal(10))}))
    at = NOW - timedelta(hours=1)
    batch = [event(i, at=at, quantity="3") for i in range(3)]  # 9: past 80 % of 10
    pipe.apply(batch)
    pipe.apply(batch)  # a replay
    assert [m["id"] for m in pipe.messages()] == ["quota.threshold_crossed:acme:api.requests:2026-11-01:80"]
    pipe.apply([event(9, at=at, quantity="1")], start=20)  # 10: reaches 100 %
    cancels.cancel("acme", "e:e9")  # back to 9 ...
    pipe.apply([event(10, at=at, quantity="2")], start=30)  # ... and across again: 11
    messages = pipe.messages()
    assert [m["id"] for m in messages] == ["quota.threshold_crossed:acme:api.requests:2026-11-01:100"]
    assert (messages[0]["usage"], messages[0]["hard_limit"], messages[0]["threshold_percent"]) == ("10", "10", "100")


def test_a_second_instance_does_not_alert_again(store, azurite):
    first = build(store, azurite)
    first.directory.update("acme", TenantUpdate(limits={"api.requests": LimitPair(hard=Decimal(2))}))
    first.apply([event(1, at=NOW - timedelta(hours=1), quantity="2")])
    second = build(store, azurite)
    second.notifications = first.notifications
    second.apply([event(2, at=NOW - timedelta(hours=1), quantity="1")], start=5)
    assert sorted(m["id"] for m in first.messages()) == [
        "quota.threshold_crossed:acme:api.requests:2026-11-01:100",
        "quota.threshold_crossed:acme:api.requests:2026-11-01:80",
    ]


# -- tenant settings and quotas --------------------------------------------------------------------------


def test_new_terms_start_at_the_next_boundary_and_old_events_keep_their_period(pipe):
    pipe.apply([event(1, at=NOW - timedelta(days=2))])
    before = pipe.ledger.schedule.period_at("acme", NOW)
    settings = pipe.directory.update("acme", TenantUpdate(billing_anchor_day=15, timezone="Europe/Berlin"))
    assert settings.terms[-1].effective_from == before.end == datetime(2026, 12, 1, tzinfo=UTC)
    pipe.directory._cache.clear()  # another instance reading the row fresh
    assert pipe.ledger.schedule.period_at("acme", NOW) == before
    transition = pipe.ledger.schedule.period_at("acme", datetime(2026, 12, 5, tzinfo=UTC))
    assert (transition.start, transition.end) == (before.end, datetime(2026, 12, 14, 23, tzinfo=UTC))
    # A replay of the old event lands where it did: a duplicate, not a new count in another period.
    assert pipe.apply([event(1, at=NOW - timedelta(days=2))], start=9).applied == 0
    assert pipe.total("acme", "api.requests", NOW)[:2] == ("1.5", 1)


def test_a_change_within_the_settle_time_waits_for_the_boundary_after(pipe):
    pipe.clock.now = datetime(2026, 11, 30, 23, 55, tzinfo=UTC)
    settings = pipe.directory.update("acme", TenantUpdate(billing_anchor_day=10))
    assert settings.terms[-1].effective_from == datetime(2027, 1, 1, tzinfo=UTC)


def test_limits_come_from_the_plan_and_overrides_replace_its_pair(pipe):
    assert pipe.directory.limits("acme", "api.requests") == Limits()  # the default plan limits nothing
    pipe.directory.update("acme", TenantUpdate(plan="free"))
    assert pipe.directory.limits("acme", "api.requests") == Limits(Decimal(8000), Decimal(10000))
    pipe.directory.update("acme", TenantUpdate(plan="pro"))
    assert pipe.directory.limits("acme", "api.requests") == Limits(Decimal(800000), Decimal(1000000))
    pipe.directory.update("acme", TenantUpdate(limits={"api.requests": LimitPair(hard=Decimal(5))}))
    assert pipe.directory.limits("acme", "api.requests") == Limits(None, Decimal(5))
    pipe.directory.update("acme", TenantUpdate(limits={"api.requests": None}))
    assert pipe.directory.limits("acme", "api.requests") == Limits(Decimal(800000), Decimal(1000000))
    assert pipe.store.tenants.read("acme", ["settings"])["settings"].data["plan"] == "pro"


def test_state_rows_of_closed_periods_say_when_and_by_which_catalog(pipe):
    pipe.apply([event(1)])
    pipe.clock.now = NOW + timedelta(minutes=5)
    pipe.closer.run()
    partition = partition_key("acme", pipe.ledger.schedule.period_at("acme", OCT))
    state = pipe.store.usage.read(partition, [STATE_ROW])[STATE_ROW].data
    assert (state["status"], state["closed_at"][:16], state["catalog"]) == (
        "closed",
        "2026-11-24T12:05",
        pipe.ledger.catalog.version,
    )


def test_hub_progress_only_moves_forward(store):
    progress = wired(store).progress
    progress.record([Applied("3", 10, NOW)], NOW)
    progress.record([Applied("3", 4, NOW - timedelta(hours=1))], NOW)  # an older redelivery does not go back
    # A new instance (a restart) learns the stored position before it writes.
    wired(store).progress.record([Applied("3", 6, NOW - timedelta(minutes=30))], NOW)
    assert (progress.positions()["3"].sequence, progress.positions()["3"].enqueued) == (10, NOW)
