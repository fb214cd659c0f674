"""What the Event Hub trigger does with a batch: decode, apply exactly once, dead-letter what cannot count.

Messages hold one event (a JSON object) or several (an array). An event without an event id or idempotency
key gets an id from its hub position, so a redelivery carries the same id and is not counted twice. Every
event ends applied, a duplicate, a recorded conflict, a late event (its period is closed) or a dead letter
with its reason; a store failure raises instead, so the trigger's retry policy delivers the batch again
rather than checkpoint past it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from metering.billing.late import LateEvents
from metering.core.clock import Clock
from metering.core.events import BodyError, parse_event
from metering.core.hub import Applied, Position, contiguous_ranges
from metering.ingest.deadletters import DeadLetter, DeadLetters
from metering.ledger.batch import PlannedEvent, SourcedEvent
from metering.ledger.control import HubProgress
from metering.ledger.keys import STATE_ROW, partition_keys
from metering.ledger.ledger import ApplyResult, Ledger
from metering.ledger.rows import StateRow
from metering.ledger.shards import period_state
from metering.notifications.outbox import Outbox
from metering.quotas.alerts import AlertWatch
from metering.transport import decode_message

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HubMessage:
    body: bytes
    partition: str | None = None
    sequence: int | None = None
    enqueued: datetime | None = None


@dataclass(frozen=True, slots=True)
class BatchReport:
    messages: int
    events: int
    applied: int
    duplicates: int
    conflicts: int
    dead_lettered: int
    late: int
    carried: int
    lag_seconds: float | None


@dataclass(frozen=True, slots=True)
class AfterApply:
    """What follows applying a batch: late events recorded (and carried), threshold alerts, hub progress."""

    late: LateEvents
    alerts: AlertWatch
    outbox: Outbox
    progress: HubProgress


def consume(
    messages: Sequence[HubMessage],
    ledger: Ledger,
    dead_letters: DeadLetters,
    clock: Clock,
    after: AfterApply,
) -> BatchReport:
    sourced: list[SourcedEvent] = []
    letters: list[DeadLetter] = []
    # Where each event sat in its message, to key a dead letter found later by the same place every time.
    indexes: dict[tuple[Position | None, str], int] = {}
    for message in messages:
        position = (
            Position(message.partition, message.sequence)
            if message.partition is not None and message.sequence is not None
            else None
        )
        text = message.body.decode("utf-8", errors="replace")
        try:
            items = decode_message(message.body)
        except BodyError as error:
            letters.append(_letter(message, str(error), text))
            continue
        for index, item in enumerate(items):
            event, errors = parse_event(item, index)
            if event is None:
                reason = "; ".join(f"{e.field} {e.message}" for e in errors)
                letters.append(_letter(message, reason, _text(item), index))
                continue
            if event.event_id is None and event.idempotency_key is None:
                if position is None:
                    letters.append(
                        _letter(message, "event has no event_id and no hub position to derive one", _text(item), index)
                    )
                    continue
                derived = hub_event_id(position.partition, position.sequence, index)
                event = event.model_copy(update={"event_id": derived})
            indexes.setdefault((position, event.dedupe_key), index)
            sourced.append(SourcedEvent(event, position))
    for letter in letters:
        dead_letters.record(letter)
    # Every message of the batch is accounted for above, so the batch's hub ranges are complete.
    ranges = contiguous_ranges(
        Position(m.partition, m.sequence) for m in messages if m.partition is not None and m.sequence is not None
    )
    result = ledger.apply(sourced, ranges)
    late = after.late.handle(result.late)
    unapplied = [(r.item.event, r.item.position, r.reason) for r in [*result.rejected, *late.rejected]]
    alerts = _check_thresholds(result, ledger, after.alerts)
    if alerts:
        after.outbox.dispatch()
    enqueued = {(m.partition, m.sequence): m.enqueued for m in messages}
    for event, position, reason in unapplied:
        dead_letters.record(
            DeadLetter(
                reason=reason,
                body=event.model_dump_json(exclude_none=True),
                partition=position.partition if position else None,
                sequence=position.sequence if position else None,
                index=indexes.get((position, event.dedupe_key)),
                enqueued=enqueued.get((position.partition, position.sequence)) if position else None,
            )
        )
    now = clock()
    after.progress.record(_newest(messages), now)
    times = [m.enqueued for m in messages if m.enqueued is not None]
    report = BatchReport(
        messages=len(messages),
        events=len(sourced) + sum(1 for letter in letters if letter.index is not None),
        applied=result.applied,
        duplicates=result.duplicates,
        conflicts=len(result.conflicts),
        dead_lettered=len(letters) + len(unapplied),
        late=len(result.late),
        carried=late.carried,
        lag_seconds=(now - min(times)).total_seconds() if times else None,
    )
    log.info(
        "batch: %d messages, %d events, %d applied, %d duplicates dropped, %d conflicts, %d dead-lettered, "
        "%d late (%d carried), lag %s s",
        report.messages,
        report.events,
        report.applied,
        report.duplicates,
        report.conflicts,
        report.dead_lettered,
        report.late,
        report.carried,
        f"{report.lag_seconds:.1f}" if report.lag_seconds is not None else "n/a",
    )
    return report


def _check_thresholds(result: ApplyResult, ledger: Ledger, alerts: AlertWatch) -> int:
    """Threshold alerts for the totals of every period the batch touched. A period of several shards is checked
    against all of them combined by kind: the shards this batch wrote are known, the others are read (only when
    a metric of the tenant has a hard limit, since no other total raises an alert)."""
    touched: dict[tuple[str, str], tuple[PlannedEvent, dict[str, StateRow | None]]] = {}
    for partition, (first, state) in result.states.items():
        touched.setdefault((first.event.tenant_id, first.period.key), (first, {}))[1][partition] = state
    new = 0
    for (tenant, _), (first, known) in touched.items():
        period = first.period
        shards = ledger.schedule.shards(tenant, period)
        states: list[StateRow | None] = list(known.values())
        if shards > 1:
            metrics = {metric for state in states if state is not None for metric in state.metrics}
            if not alerts.limited(tenant, metrics):
                continue
            states = [
                known[partition] if partition in known else _state_of(ledger, partition)
                for partition in partition_keys(tenant, period, shards)
            ]
        present = [state for state in states if state is not None]
        if not present or any(state.is_closed for state in present):
            continue  # a period being closed raises no new alert
        combined = period_state(states, ledger.catalog)
        if combined is not None:
            new += alerts.check(tenant, period, combined.limit_figures())
    return new


def _state_of(ledger: Ledger, partition: str) -> StateRow | None:
    row = ledger.store.usage.read(partition, [STATE_ROW]).get(STATE_ROW)
    return None if row is None else StateRow(row.data)


def hub_event_id(partition: str, sequence: int, index: int) -> str:
    """The id of an event sent without one: from where it sat on the hub, so every redelivery (and a re-drive of
    its dead letter) gives it the same id."""
    return f"eh:{partition}:{sequence}:{index}"


def _newest(messages: Sequence[HubMessage]) -> list[Applied]:
    """Per hub partition, the newest message of the batch: every event of the batch is settled by now."""
    newest: dict[str, HubMessage] = {}
    for message in messages:
        if message.partition is None or message.sequence is None or message.enqueued is None:
            continue
        seen = newest.get(message.partition)
        if seen is None or (seen.sequence or 0) < message.sequence:
            newest[message.partition] = message
    return [Applied(p, m.sequence or 0, m.enqueued) for p, m in newest.items() if m.enqueued is not None]


def _letter(message: HubMessage, reason: str, body: str, index: int | None = None) -> DeadLetter:
    return DeadLetter(reason, body, message.partition, message.sequence, index, message.enqueued)


def _text(item: object) -> str:
    return json.dumps(item, default=str)
