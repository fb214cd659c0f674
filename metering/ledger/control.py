"""The control table: what closing periods needs to find its work without scanning the usage table.

    open     | <end>|<tenant>|<period>      every period that has a store partition and is not closed yet,
                                           ordered by its end, so the closer reads only the due ones
    closer   | through                      every period that ended by this instant is closed
    closed   | <purge after>|<tenant>|<period>   closed periods whose dedupe markers wait for their purge
    hub      | <namespace>|<hub>|<id>       the newest position the aggregator applied, per hub partition

The aggregator adds a period to the open index before its first commit creates the period's state row, so
no state row exists that the index does not name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from metering.core.clock import format_timestamp, second_key
from metering.core.hub import NOTHING_APPLIED, Applied
from metering.core.periods import BillingPeriod
from metering.stores import CommitConflict, Create, Replace, Row, RowTable

OPEN = "open"
CLOSED = "closed"
HUB = "hub"
CLOSER = "closer"
THROUGH = "through"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IndexedPeriod:
    tenant_id: str
    period: BillingPeriod
    key: str  # the index row's key

    @classmethod
    def from_row(cls, row: Row) -> IndexedPeriod:
        data = row.data
        start, end = (datetime.fromisoformat(text) for text in data["period"])
        return cls(data["tenant"], BillingPeriod(start, end, data["key"]), row.key)


def _data(tenant_id: str, period: BillingPeriod) -> dict[str, object]:
    return {"tenant": tenant_id, "period": [period.start.isoformat(), period.end.isoformat()], "key": period.key}


def open_entry(tenant_id: str, period: BillingPeriod) -> IndexedPeriod:
    """A period's entry in the open index, ordered by its end."""
    return IndexedPeriod(tenant_id, period, f"{second_key(period.end)}|{tenant_id}|{period.key}")


def index_open(control: RowTable, tenant_id: str, period: BillingPeriod) -> None:
    control.upsert(OPEN, open_entry(tenant_id, period).key, _data(tenant_id, period))


def open_until(control: RowTable, ended_by: datetime, limit: int = 1000) -> list[IndexedPeriod]:
    """Open periods that ended at or before `ended_by`, oldest first."""
    rows = control.range(OPEN, "", second_key(ended_by) + "~", limit=limit)
    return [IndexedPeriod.from_row(row) for row in rows]


def move_to_closed(control: RowTable, entry: IndexedPeriod, purge_after: datetime) -> None:
    control.upsert(
        CLOSED, f"{second_key(purge_after)}|{entry.tenant_id}|{entry.period.key}", _data(entry.tenant_id, entry.period)
    )
    control.delete(OPEN, [entry.key])


def purgeable(control: RowTable, now: datetime, limit: int = 100) -> list[IndexedPeriod]:
    return [IndexedPeriod.from_row(row) for row in control.range(CLOSED, "", second_key(now) + "~", limit=limit)]


def indexed(control: RowTable) -> list[IndexedPeriod]:
    """Every period the index names: open ones, and closed ones until their markers' purge."""
    rows = control.range(OPEN, "", "~") + control.partition(CLOSED)
    return [IndexedPeriod.from_row(row) for row in rows]


def closed_through(control: RowTable) -> datetime | None:
    row = control.read(CLOSER, [THROUGH]).get(THROUGH)
    return None if row is None else datetime.fromisoformat(row.data["instant"])


def advance_closed_through(control: RowTable, instant: datetime) -> None:
    """Move the instant forward, never back (closers may race; an older run must not undo a newer one)."""
    for _attempt in range(5):
        row = control.read(CLOSER, [THROUGH]).get(THROUGH)
        if row is not None and datetime.fromisoformat(row.data["instant"]) >= instant:
            return
        data = {"instant": instant.isoformat()}
        try:
            control.commit(CLOSER, [Create(THROUGH, data) if row is None else Replace(THROUGH, data, row.etag)])
        except CommitConflict:
            continue
        return


class HubProgress:
    """Records, per hub partition, the newest position the aggregator has applied. One upsert per batch; the
    position only moves forward (a redelivered older batch does not move it back)."""

    def __init__(self, control: RowTable) -> None:
        self.control = control
        self._known: dict[str, Applied] = {}

    def record(self, applied: Iterable[Applied], now: datetime) -> None:
        for position in applied:
            known = self._known.get(position.partition)
            if known is None:
                stored = self.control.read(HUB, [position.partition]).get(position.partition)
                known = self._known[position.partition] = (
                    _applied(stored) if stored else Applied(position.partition, -1, NOTHING_APPLIED)
                )
            if position.sequence <= known.sequence:
                if position.enqueued > known.enqueued:
                    # In one partition a later message always has a greater sequence number: these restarted.
                    log.error(
                        "hub partition %s: sequence %d was enqueued at %s, after sequence %d (enqueued at %s) was "
                        "applied. Its sequence numbers started again (a hub recreated under the same name?): "
                        "its new events may be taken for replays of applied ones. Alert on this.",
                        position.partition,
                        position.sequence,
                        position.enqueued.isoformat(),
                        known.sequence,
                        known.enqueued.isoformat(),
                    )
                continue
            self.control.upsert(
                HUB,
                position.partition,
                {
                    "sequence": position.sequence,
                    "enqueued": position.enqueued.isoformat(),
                    "updated": format_timestamp(now),
                },
            )
            self._known[position.partition] = position

    def positions(self) -> dict[str, Applied]:
        return {row.key: _applied(row) for row in self.control.partition(HUB)}

    def recorded(self) -> dict[str, tuple[Applied, datetime]]:
        """Every partition's position with the instant the aggregator applied it."""
        return {
            row.key: (_applied(row), datetime.fromisoformat(row.data["updated"])) for row in self.control.partition(HUB)
        }


def _applied(row: Row) -> Applied:
    return Applied(row.key, row.data["sequence"], datetime.fromisoformat(row.data["enqueued"]))
