"""Webhook deliveries: one row per notification, in the outbox's partition of the control table.

    outbox | w|<message id>    a delivery waiting: its attempts, when the next is due, the last status and error
    outbox | f|<message id>    a delivery given up on (410 Gone, or retried for the whole window), for operators

A pending row is written by the same write as the notification's outbox row (outbox.py): in the same
transaction for the notifications recorded once (alerts), else as an upsert keyed by the id, which the
notification's producer repeats until it is done. So a notification that reaches the queue has its delivery
row, and the other way round.

A delivery moves between the two prefixes by a write and a delete. A crash between them leaves both rows; the
pending row then says so (`failed_copy`), and its acknowledgement deletes the failed one too. A delivered
notification leaves no row: its receiver acknowledged it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ValidationError

from metering.core.clock import Clock
from metering.notifications.outbox import OUTBOX
from metering.stores import CommitConflict, Create, Replace, Row, RowTable

log = logging.getLogger(__name__)

PENDING = "w|"
FAILED = "f|"
_END = "~"  # after every key character a message id may hold (outbox ids are restricted text)


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    FAILED = "failed"


class FailureReason(StrEnum):
    GONE = "gone"  # the receiver answered 410 Gone: it wants no more
    EXPIRED = "expired"  # every attempt of the retry window failed


class Delivery(BaseModel):
    """A delivery row's data."""

    id: str
    type: str
    tenant_id: str | None = None
    status: DeliveryStatus = DeliveryStatus.PENDING
    # When the delivery (or its redrive) began: the retry window starts here.
    created: datetime
    attempts: int = 0
    next_attempt: datetime
    last_attempt: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    reason: FailureReason | None = None
    # A failed row of this id may exist too (a crash between the write and the delete of a move).
    failed_copy: bool = False
    message: dict[str, Any]

    def data(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


@dataclass(frozen=True, slots=True)
class Due:
    """A pending delivery as read, with the ETag its claim is guarded by."""

    etag: str
    delivery: Delivery


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Delivery]
    next: str | None  # the id to pass as `after` for the next page; None on the last one


class RedriveResult(StrEnum):
    REDRIVEN = "redriven"  # was failed; pending again, its attempts reset
    ALREADY_PENDING = "already_pending"
    UNKNOWN = "unknown"  # delivered already, or never a notification


def _readable(rows: Iterable[Row]) -> list[tuple[Row, Delivery]]:
    """The rows with their deliveries; a row that does not read as one is logged and passed over, so that it
    holds back no other delivery."""
    found = []
    for row in rows:
        try:
            found.append((row, Delivery.model_validate(row.data)))
        except ValidationError as error:
            log.error("webhooks: the delivery row %s cannot be read, passed over: %s", row.key, error)
    return found


def _pending_key(message_id: str) -> str:
    return PENDING + message_id


def _failed_key(message_id: str) -> str:
    return FAILED + message_id


class WebhookDeliveries:
    def __init__(self, control: RowTable, clock: Clock) -> None:
        self.control = control
        self.clock = clock

    # -- written with the outbox ---------------------------------------------------------------------------

    def new(self, message_id: str, message: dict[str, Any]) -> Delivery:
        now = self.clock()
        tenant = message.get("tenant_id")
        return Delivery(
            id=message_id,
            type=str(message.get("type", "")),
            tenant_id=tenant if isinstance(tenant, str) else None,
            created=now,
            next_attempt=now,
            message=message,
        )

    def create(self, message_id: str, message: dict[str, Any]) -> Create:
        """The operation that creates the pending row, for the outbox's own transaction."""
        return Create(_pending_key(message_id), self.new(message_id, message).data())

    def upsert(self, message_id: str, message: dict[str, Any]) -> None:
        self.control.upsert(OUTBOX, _pending_key(message_id), self.new(message_id, message).data())

    # -- the dispatcher's side ------------------------------------------------------------------------------

    def due(self, now: datetime, limit: int) -> list[Due]:
        """Pending deliveries whose next attempt is due, the longest waiting first."""
        rows = self.control.range(OUTBOX, PENDING, PENDING + _END)
        found = [Due(row.etag, delivery) for row, delivery in _readable(rows)]
        waiting = sorted((d for d in found if d.delivery.next_attempt <= now), key=lambda d: d.delivery.next_attempt)
        return waiting[:limit]

    def claim(self, due: Due, until: datetime) -> str | None:
        """Take a due delivery for one attempt: its next attempt moves to `until`, so no other dispatcher takes
        it meanwhile (and it is due again should this one die). Returns the ETag to record the outcome under,
        or None when another dispatcher (or a redrive) changed it first."""
        claimed = due.delivery.model_copy(update={"next_attempt": until})
        return self._replace(due.delivery.id, claimed, due.etag)

    def delivered(self, delivery: Delivery) -> None:
        keys = [_pending_key(delivery.id)]
        if delivery.failed_copy:
            keys.append(_failed_key(delivery.id))
        self.control.delete(OUTBOX, keys)

    def retry_later(self, delivery: Delivery, etag: str) -> bool:
        """Record a failed attempt (`delivery` carries its outcome and next attempt); False when the row
        changed since the claim (a redrive, or the producer writing it again): that write wins."""
        return self._replace(delivery.id, delivery, etag) is not None

    def give_up(self, delivery: Delivery, etag: str) -> None:
        """Keep a delivery as failed (`delivery` carries the reason and the last outcome)."""
        marked = delivery.model_copy(update={"failed_copy": True})
        if self._replace(delivery.id, marked, etag) is None:
            return
        failed = marked.model_copy(update={"status": DeliveryStatus.FAILED, "failed_copy": False})
        self.control.upsert(OUTBOX, _failed_key(delivery.id), failed.data())
        self.control.delete(OUTBOX, [_pending_key(delivery.id)])

    def _replace(self, message_id: str, delivery: Delivery, etag: str) -> str | None:
        try:
            (new_etag,) = self.control.commit(OUTBOX, [Replace(_pending_key(message_id), delivery.data(), etag)])
        except CommitConflict:
            return None
        return new_etag

    # -- operators ------------------------------------------------------------------------------------------

    def page(self, status: DeliveryStatus, after: str | None, limit: int) -> Page:
        """Deliveries of one status in id order, `limit` at a time, starting after the id `after`."""
        prefix = PENDING if status is DeliveryStatus.PENDING else FAILED
        start = prefix + after if after is not None else prefix
        # The range starts at `after` itself (inclusive): one more row, dropped here.
        rows = self.control.range(OUTBOX, start, prefix + _END, limit=limit + 2)
        if after is not None and rows and rows[0].key == start:
            rows = rows[1:]
        more = len(rows) > limit
        rows = rows[:limit]
        items = [delivery for _, delivery in _readable(rows)]
        return Page(items=items, next=rows[-1].key.removeprefix(prefix) if more else None)

    def redrive(self, message_id: str) -> tuple[RedriveResult, Delivery | None]:
        """A failed delivery becomes pending again, due now, with its attempts reset and a new retry window.
        Idempotent: a pending one is left as it is, and a repeat finds it pending."""
        rows = self.control.read(OUTBOX, [_pending_key(message_id), _failed_key(message_id)])
        failed: Row | None = rows.get(_failed_key(message_id))
        if failed is None:
            pending = rows.get(_pending_key(message_id))
            if pending is None:
                return RedriveResult.UNKNOWN, None
            return RedriveResult.ALREADY_PENDING, Delivery.model_validate(pending.data)
        now = self.clock()
        again = Delivery.model_validate(failed.data).model_copy(
            update={
                "status": DeliveryStatus.PENDING,
                "created": now,
                "attempts": 0,
                "next_attempt": now,
                "reason": None,
                "failed_copy": True,
            }
        )
        self.control.upsert(OUTBOX, _pending_key(message_id), again.data())
        self.control.delete(OUTBOX, [_failed_key(message_id)])
        return RedriveResult.REDRIVEN, again


def failed_count(control: RowTable, limit: int) -> int:
    """How many deliveries were given up on (counted up to `limit`), for health."""
    return len(control.range(OUTBOX, FAILED, FAILED + _END, limit=limit))
