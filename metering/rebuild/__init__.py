"""`metering rebuild`: the proof that every total is exactly its events.

It replays the raw archive (what the hub accepted) and the journal (what changed totals without the hub) of a
window into scratch tables, through the same ledger, consumer, cancels, late-event carries, catalog and tenant
period schedule as live (replay.py), then compares the rebuilt period totals with the live ones (diff.py). The
scratch store is dropped at the end unless asked to keep it. Run it as an operator with storage access: it
reads the app's settings and stores directly, not the HTTP API.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel

from metering.archive.reader import ArchiveReader
from metering.bootstrap import Services
from metering.connections import build_container
from metering.core.decimals import DecimalText
from metering.rebuild.diff import PeriodTotal, compare, periods_to_compare
from metering.rebuild.replay import Replay
from metering.rebuild.scratch import create_scratch
from metering.settings import Settings, StoreKind


class TotalLine(BaseModel):
    tenant_id: str
    metric: str
    period_start: datetime
    period_end: datetime
    ours: DecimalText | None
    rebuilt: DecimalText | None
    difference: DecimalText  # ours minus rebuilt
    ours_events: int
    rebuilt_events: int
    differs: bool
    whole_period: bool  # the window holds the whole live period: a difference in a partial one is expected

    @classmethod
    def of(cls, total: PeriodTotal) -> TotalLine:
        return cls(
            tenant_id=total.tenant_id,
            metric=total.metric,
            period_start=total.period.start,
            period_end=total.period.end,
            ours=total.ours.value if total.ours else None,
            rebuilt=total.rebuilt.value if total.rebuilt else None,
            difference=total.difference,
            ours_events=total.ours.count if total.ours else 0,
            rebuilt_events=total.rebuilt.count if total.rebuilt else 0,
            differs=total.differs,
            whole_period=total.whole,
        )


class RebuildReport(BaseModel):
    start: datetime
    end: datetime
    scratch: str  # the scratch tables' prefix (or Cosmos database)
    kept: bool
    messages: int
    events: int
    applied: int
    duplicates: int
    conflicts: int
    late: int
    dead_lettered: int
    journal_entries: int
    closed_periods: int
    periods: int
    differences: int
    totals: list[TotalLine]
    problems: list[str]


def rebuild(
    settings: Settings,
    start: datetime,
    end: datetime,
    *,
    tenants: Sequence[str] | None = None,
    keep: bool = False,
    scratch_kind: StoreKind | None = None,
) -> RebuildReport:
    live = Services(settings)
    only = frozenset(tenants) if tenants else None
    scratch = create_scratch(settings, scratch_kind)
    try:
        replay = Replay(live=live, scratch=scratch, start=start, end=end, tenants=only)
        archive = ArchiveReader(build_container(settings, settings.archive_container), hub=settings.event_hub_name)
        stats = replay.run(archive.messages(start, end), tenants or ())
        periods = periods_to_compare(live.store, scratch.store, start=start, end=end, tenants=only)
        totals = [
            TotalLine.of(total)
            for total in compare(
                live.store,
                scratch.store,
                periods,
                live.catalog,
                start=start,
                end=end,
                max_future=settings.max_future,
                shards=live.schedule.shards,
            )
        ]
    finally:
        if not keep:
            scratch.drop()
        live.store.close()
    return RebuildReport(
        start=start,
        end=end,
        scratch=scratch.name,
        kept=keep,
        messages=stats.messages,
        events=stats.events,
        applied=stats.applied,
        duplicates=stats.duplicates,
        conflicts=stats.conflicts,
        late=stats.late,
        dead_lettered=stats.dead_lettered,
        journal_entries=stats.journal_entries,
        closed_periods=stats.closed_periods,
        periods=len(periods),
        differences=sum(line.differs for line in totals),
        totals=totals,
        problems=stats.problems,
    )
