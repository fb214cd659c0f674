"""The journal on every store: entries keyed by tenant and time, written once; cancels and late-event carries
journaled before they are acknowledged, and written again (the same entry) when a retry meets the change done."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from metering.billing.journal import JournalEntry, JournalKind
from metering.core.events import UsageEvent
from metering.core.hub import Position
from metering.ledger.batch import SourcedEvent
from metering.notifications.outbox import DiscardSink
from metering.settings import LateEventPolicy
from metering.transport import EmptyBacklog
from tests.support import FixedClock, InjectedCrash, ProbedStore, make_settings, wired

pytestmark = pytest.mark.store

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
OCT = datetime(2026, 10, 20, 9, tzinfo=UTC)


def event(event_id: str, at: datetime, quantity: str = "1") -> UsageEvent:
    return UsageEvent(
        event_id=event_id, tenant_id="acme", metric="api.requests", quantity=quantity, timestamp=at, source="t"
    )


def entry(kind: str, at: datetime, subject: str, tenant: str = "acme") -> JournalEntry:
    return JournalEntry(kind=kind, tenant_id=tenant, time=at, subject=subject, details={"n": subject})


def test_entries_are_kept_per_tenant_in_time_order_and_written_once(store):
    journal = wired(store).journal
    later, earlier = entry("cancel", NOW, "e:2"), entry("cancel", NOW - timedelta(microseconds=1), "e:1")
    assert journal.record(later)
    assert journal.record(earlier)
    assert journal.record(entry("late.carry", NOW, "e:2"))  # another kind at the same instant: its own entry
    assert journal.record(entry("cancel", NOW, "e:2", tenant="beta"))
    assert not journal.record(later.model_copy(update={"details": {"n": "again"}}))  # the first one stays
    listed = journal.list("acme")
    assert [(e.kind, e.subject) for e in listed] == [("cancel", "e:1"), ("cancel", "e:2"), ("late.carry", "e:2")]
    assert listed[1].details == {"n": "e:2"}
    assert [e.subject for e in journal.list("acme", since=NOW)] == ["e:2", "e:2"]
    assert [e.subject for e in journal.list("acme", until=NOW)] == ["e:1"]
    assert [e.tenant_id for e in journal.list("beta")] == ["beta"]


def test_entries_in_bulk_take_a_transaction_per_hundred_and_keep_what_was_written(store):
    journal = wired(store).journal
    existing = entry("cancel", NOW, "e:kept")
    journal.record(existing)
    carries = [entry("late.carry", NOW + timedelta(microseconds=i), f"e:{i}") for i in range(150)]
    bulk = [
        *carries,
        carries[0],
        existing.model_copy(update={"details": {"n": "new"}}),
        entry("cancel", NOW, "x", "beta"),
    ]
    assert journal.record_all(bulk) == 151
    listed = journal.list("acme")
    assert len(listed) == 151
    assert [e for e in listed if e.subject == "e:kept"] == [existing]
    assert journal.record_all(bulk) == 0


def test_a_cancel_is_journaled_and_a_repeat_heals_a_lost_entry(store, schedule):
    clock = FixedClock(NOW)
    services = wired(store, settings=make_settings(max_future_minutes=0), clock=clock, schedule=schedule)
    services.ledger.apply([SourcedEvent(event("e1", NOW - timedelta(hours=1), "2.5"))])
    journal, cancels = services.journal, services.cancels
    result = cancels.cancel("acme", "e:e1")
    [written] = journal.list("acme")
    assert (written.kind, written.subject, written.time) == (JournalKind.CANCEL, "e:e1", result.cancelled_at)
    assert written.details["quantity"] == "2.5"
    assert written.details["metric"] == "api.requests"

    # A crash between the cancel's commit and its entry: the client's retry meets the cancel done, and writes
    # the entry the first attempt would have written.
    store.journal.delete("acme", [written.key])
    clock.now = NOW + timedelta(minutes=5)
    assert cancels.cancel("acme", "e:e1") == result
    assert journal.list("acme") == [written]


def test_a_carry_is_journaled_before_the_ledger_counts_it(atomic_store, schedule):
    probed = ProbedStore(atomic_store)
    clock = FixedClock(NOW)
    services = wired(
        probed,
        settings=make_settings(late_event_policy=LateEventPolicy.ADJUST, grace_hours=24, dedupe_retention_days=35),
        clock=clock,
        schedule=schedule,
        sink=DiscardSink(),
        backlog=EmptyBacklog(),
    )
    ledger, journal, late, closer = services.ledger, services.journal, services.late_events, services.closer
    ledger.apply([SourcedEvent(event("oct", OCT), Position("0", 1))])
    closer.run()
    result = ledger.apply([SourcedEvent(event("late", OCT, "7"), Position("0", 2))])
    assert [p.event.event_id for p in result.late] == ["late"]

    # The carry's commit fails (the process dies before it reaches the store): the entry is there already.
    probed.probe.crash_after = probed.probe.commits
    with pytest.raises(InjectedCrash):
        late.handle(result.late)
    [carried] = journal.list("acme")
    assert (carried.kind, carried.subject) == (JournalKind.LATE_CARRY, "e:late")
    assert carried.details["carried_to"] == "2026-11-01"
    assert carried.details["period_start"] == "2026-10-01"
    assert carried.details["event"]["quantity"] == "7"
    reader = services.usage
    november = schedule.period_at("acme", NOW)
    assert reader.for_period("acme", "api.requests", november).event_count == 0

    # Redelivered: counted once, and the journal still holds the one entry.
    clock.now = NOW + timedelta(minutes=3)
    for _ in range(2):
        late.handle(ledger.apply([SourcedEvent(event("late", OCT, "7"), Position("0", 2))]).late)
    assert str(reader.for_period("acme", "api.requests", november).total) == "7"
    assert journal.list("acme") == [carried]
