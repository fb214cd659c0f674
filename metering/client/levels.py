"""Which level reports of a time-weighted meter must be sent, and which change nothing (pure).

A time-weighted meter integrates each resource's level over time: a report sets the level from its timestamp on,
until the resource's next report by (timestamp, event id). A report whose level (and dimensions) equal those of
the report just before it in that order changes no figure, so the writer need not send it. Reports may be
recorded out of order, so whether one is needed can change: a report recorded later that falls just before a
report left out makes that one a change, and it is sent then. Each resource keeps its recent reports in order
(sent or left out); what is forgotten was sent (a report left out is sent before it is forgotten, which is
harmless: it repeats the level before it), so a report older than what is kept is sent, and the figures the
service computes from the reports sent are exactly those of all the reports recorded.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from metering.core.events import UsageEvent

# Reports kept per resource, and resources kept: a bound on memory, never on exactness.
HISTORY = 64
RESOURCES = 10_000


@dataclass(slots=True)
class _Report:
    at: tuple[datetime, str]
    level: tuple[Decimal, tuple[tuple[str, str], ...]]
    event: UsageEvent
    sent: bool = False


@dataclass(slots=True)
class _Resource:
    reports: list[_Report] = field(default_factory=list)

    def keys(self) -> list[tuple[datetime, str]]:
        return [report.at for report in self.reports]


class LevelChanges:
    """The reports to send, per resource (any hashable key: the writer uses tenant, metric and resource id)."""

    def __init__(self, history: int = HISTORY, resources: int = RESOURCES) -> None:
        if history < 2:
            raise ValueError("history must keep at least 2 reports per resource")
        self.history = history
        self.resources = resources
        self._resources: OrderedDict[Hashable, _Resource] = OrderedDict()

    def add(self, resource: Hashable, event: UsageEvent) -> list[UsageEvent]:
        """Record a report; returns the reports to send now (it, a report it made a change, or ones forgotten)."""
        kept = self._resources.get(resource)
        if kept is None:
            kept = self._resources[resource] = _Resource()
        else:
            self._resources.move_to_end(resource)
        report = _Report(
            (event.timestamp, event.event_id or ""), (event.quantity, tuple(sorted(event.dimensions.items()))), event
        )
        reports = kept.reports
        index = bisect.bisect_left(kept.keys(), report.at)
        if index < len(reports) and reports[index].at == report.at:
            return [event]  # the same report again (a retry): the service deduplicates it
        reports.insert(index, report)
        send: list[UsageEvent] = []
        before = reports[index - 1] if index > 0 else None
        if before is None or before.level != report.level:
            report.sent = True
            send.append(event)
        after = reports[index + 1] if index + 1 < len(reports) else None
        if after is not None and not after.sent and after.level != report.level:
            after.sent = True
            send.append(after.event)
        while len(reports) > self.history:
            oldest = reports.pop(0)
            if not oldest.sent:
                send.append(oldest.event)
        while len(self._resources) > self.resources:
            _, evicted = self._resources.popitem(last=False)
            send.extend(r.event for r in evicted.reports if not r.sent)
        return send
