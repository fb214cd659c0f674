"""Time-weighted meters on every store (Table storage on Azurite, the local Cosmos server, memory): a level
placed between its neighbours out of order, carried into the next period by the closer, and a cancel, each
against its figure computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from metering.core.events import UsageEvent
from metering.core.hub import Position
from metering.core.periods import Granularity
from metering.ledger.batch import SourcedEvent
from metering.notifications.outbox import DiscardSink
from metering.transport import EmptyBacklog
from tests.support import FixedClock, make_settings, wired

NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
DEC_1 = datetime(2026, 12, 1, tzinfo=UTC)


def level(i: int, when: datetime, quantity: str, resource: str) -> UsageEvent:
    return UsageEvent(
        event_id=f"e{i}",
        tenant_id="acme",
        metric="storage.gb",
        quantity=quantity,
        timestamp=when,
        source="test",
        resource_id=resource,
    )


def test_levels_carries_and_cancels_on_every_store(store: Any) -> None:
    clock = FixedClock(DEC_1 + timedelta(minutes=30))
    services = wired(
        store, settings=make_settings(grace_hours=1), clock=clock, backlog=EmptyBacklog(), sink=DiscardSink()
    )
    # vol-1: 10 GB from 1 Nov, 4 GB from 2 Nov 12:00 (sent first), 7 GB from 10 Nov (cancelled below);
    # vol-2: 2 GB from 16 to 21 Nov. By hand: 10 x 36 + 4 x 684 + 2 x 120 = 3336 GB-h; 4.633333333333 GB-months.
    events = [
        level(2, NOV_1 + timedelta(hours=36), "4", "vol-1"),
        level(1, NOV_1, "10", "vol-1"),
        level(5, NOV_1 + timedelta(days=9), "7", "vol-1"),
        level(3, NOV_1 + timedelta(days=15), "2", "vol-2"),
        level(4, NOV_1 + timedelta(days=20), "0", "vol-2"),
    ]
    services.ledger.apply([SourcedEvent(e, Position("hub", i)) for i, e in enumerate(events)])
    services.ledger.apply([SourcedEvent(e, Position("hub", 10 + i)) for i, e in enumerate(events[:3])])  # replayed
    november = services.schedule.period_at("acme", NOV_1)
    # With the 7 GB point: 10 x 36 + 4 x 180 + 7 x 504 + 240 = 4848.
    assert services.usage.for_period("acme", "storage.gb", november).total == Decimal(4848)
    assert services.cancels.cancel("acme", "e:e5").quantity == "7"
    usage = services.usage.for_period("acme", "storage.gb", november)
    assert (usage.total, usage.level, usage.average, usage.event_count) == (
        Decimal(3336),
        Decimal(4),
        Decimal("4.633333333333"),
        4,
    )
    days = services.usage.history("acme", "storage.gb", NOV_1.date(), (NOV_1 + timedelta(days=2)).date())
    assert [b.total for b in days] == [Decimal(240), Decimal(168), Decimal(96)]
    # December reads November's end level through, then from the carry the closer writes.
    assert services.usage.for_period("acme", "storage.gb", services.schedule.period_at("acme", DEC_1)).total == 2
    clock.now = DEC_1 + timedelta(hours=2)
    services.closer.run()
    hours = services.usage.history("acme", "storage.gb", DEC_1.date(), DEC_1.date(), Granularity.HOUR)
    assert [b.total for b in hours[:3]] == [Decimal(4), Decimal(4), Decimal(0)]
    december = services.usage.for_period("acme", "storage.gb", services.schedule.period_at("acme", DEC_1))
    assert (december.total, december.level) == (Decimal(8), Decimal(4))
