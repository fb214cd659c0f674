"""Re-driving a dead letter once its cause is fixed (a meter added to the catalog, a store limit raised).

The letter's events go through the same decoding, validation and ledger as the aggregator's, without a hub
position (the hub moved past them long ago): each is counted once under its own dedupe key, filed as late when
its period has closed, or refused again with the reason, in which case nothing is written. A redrive is
journaled with the totals before and after, then marked on the letter, so a second click answers what the first
one did and a rebuild replays it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from metering.billing.journal import Journal, JournalEntry, JournalKind
from metering.billing.late import LateEvents
from metering.core.clock import format_timestamp
from metering.core.events import BodyError, UsageEvent, parse_event
from metering.ingest.consumer import hub_event_id
from metering.ingest.deadletters import DeadLetters, StoredLetter
from metering.ledger.batch import SourcedEvent
from metering.ledger.ledger import ApplyResult, Ledger
from metering.ledger.reader import UsageReader
from metering.stores import CommitConflict, Replace
from metering.transport import decode_message


class RedriveRefused(Exception):
    """The letter cannot be counted yet (HTTP 409): the reason says why; nothing was written."""


class DeadLetterNotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class RedriveOutcome:
    id: str
    outcome: str  # counted, duplicate (counted before), late (its period is closed: filed as a late event)
    events: int
    at: str
    by: str
    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)
    repeated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "outcome": self.outcome,
            "events": self.events,
            "redriven_at": self.at,
            "redriven_by": self.by,
            "before": self.before,
            "after": self.after,
            "repeated": self.repeated,
        }


def letter_events(letter: StoredLetter, body: str) -> list[UsageEvent]:
    """The events a letter holds, decoded and given ids exactly as the consumer does; RedriveRefused if any
    still cannot count."""
    try:
        items = decode_message(body.encode())
    except BodyError as error:
        raise RedriveRefused(f"the body still cannot be decoded: {error}") from None
    partition, sequence, index = letter.data.get("partition"), letter.data.get("sequence"), letter.data.get("index")
    events = []
    for offset, item in enumerate(items):
        event, errors = parse_event(item, offset)
        if event is None:
            reason = "; ".join(f"{e.field} {e.message}" for e in errors)
            raise RedriveRefused(f"the event is still not valid: {reason}")
        if event.event_id is None and event.idempotency_key is None:
            if partition is None or sequence is None:
                raise RedriveRefused("the event has no event_id and no hub position to derive one")
            at = index if index is not None and len(items) == 1 else offset
            event = event.model_copy(update={"event_id": hub_event_id(str(partition), int(sequence), at)})
        events.append(event)
    return events


class Redrive:
    def __init__(
        self,
        dead_letters: DeadLetters,
        *,
        ledger: Ledger,
        late: LateEvents,
        reader: UsageReader,
        journal: Journal,
        clock: Callable[[], datetime],
        after_apply: Callable[[ApplyResult], None] | None = None,
    ) -> None:
        self.after_apply = after_apply  # threshold alerts, as after the aggregator's own applies
        self.dead_letters = dead_letters
        self.ledger = ledger
        self.late = late
        self.reader = reader
        self.journal = journal
        self.clock = clock

    def redrive(self, letter_id: str, actor: str) -> RedriveOutcome:
        letter = self.dead_letters.get(letter_id)
        if letter is None:
            raise DeadLetterNotFound(f"no dead letter {letter_id}")
        if (done := letter.redriven) is not None:
            return RedriveOutcome(
                letter_id,
                str(done["outcome"]),
                int(done["events"]),
                str(done["redriven_at"]),
                str(done["redriven_by"]),
                dict(done.get("before") or {}),
                dict(done.get("after") or {}),
                repeated=True,
            )
        events = letter_events(letter, self.dead_letters.body(letter))
        plan = self.ledger.plan([SourcedEvent(event) for event in events])
        planned = [p for items in plan.partitions.values() for p in items]
        if len(planned) != len(events):
            raise RedriveRefused("an event's meter is not in the catalog")
        figures = {(p.event.tenant_id, p.meter.name, p.period.key): p for p in planned}
        before = self._totals(figures)
        now = self.clock()
        result = self.ledger.apply(plan_items(events), {})
        if result.rejected:
            raise RedriveRefused(f"the store still refuses it: {result.rejected[0].reason}")
        if result.conflicts:
            raise RedriveRefused(
                "its dedupe key was counted before with another payload: recorded as a conflict, not counted"
            )
        if self.after_apply is not None:
            self.after_apply(result)
        late = self.late.handle(result.late) if result.late else None
        if late is not None and late.rejected:
            raise RedriveRefused(f"the store refused its late-event carry: {late.rejected[0].reason}")
        after = self._totals(figures)
        outcome = "late" if result.late else "counted" if result.applied else "duplicate"
        redriven = RedriveOutcome(letter_id, outcome, len(events), format_timestamp(now), actor, before, after)
        self.journal.record_all(
            JournalEntry(
                kind=JournalKind.DEAD_LETTER_REDRIVE,
                tenant_id=event.tenant_id,
                time=now,
                subject=event.dedupe_key,
                actor=actor,
                details={
                    "dead_letter_id": letter_id,
                    "event": event.to_json_dict(),
                    "outcome": outcome,
                    "reason": letter.data.get("reason"),
                },
                before={k.split("|", 1)[1]: v for k, v in before.items() if k.startswith(f"{event.tenant_id}|")},
                after={k.split("|", 1)[1]: v for k, v in after.items() if k.startswith(f"{event.tenant_id}|")},
            )
            for event in events
        )
        data = {**letter.data, "redriven": redriven.to_json()}
        with contextlib.suppress(CommitConflict):  # a concurrent click marked it: it did the same
            self.dead_letters.table.commit(letter.partition, [Replace(letter.key, data, letter.etag)])
        return redriven

    def _totals(self, figures: dict[tuple[str, str, str], Any]) -> dict[str, str]:
        """Each touched (tenant, meter, period)'s total, keyed `tenant|meter@period`."""
        return {
            f"{tenant}|{metric}@{period_key}": str(self.reader.for_period(tenant, metric, planned.period).total)
            for (tenant, metric, period_key), planned in figures.items()
        }


def plan_items(events: list[UsageEvent]) -> list[SourcedEvent]:
    return [SourcedEvent(event) for event in events]


def describe(letter: StoredLetter, body: str) -> dict[str, Any]:
    """A letter as the console and the CLI list it."""
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        parsed = None
    return {
        "id": letter.id,
        "partition": letter.data.get("partition"),
        "sequence": letter.data.get("sequence"),
        "index": letter.data.get("index"),
        "reason": letter.data.get("reason"),
        "recorded": letter.data.get("recorded"),
        "enqueued": letter.data.get("enqueued"),
        "tenant_id": parsed.get("tenant_id") if isinstance(parsed, dict) else None,
        "body": body,
        "redriven": letter.redriven,
    }
