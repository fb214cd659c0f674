"""Operator routes of webhook deliveries (admin key): list them by status, redrive the failed ones."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime

from pydantic import BaseModel, Field

from metering.api.http import Response, bad_request, ok, problem
from metering.billing.journal import Journal, JournalEntry, JournalKind
from metering.core.clock import utc_now
from metering.notifications.webhooks.backoff import RetrySchedule
from metering.notifications.webhooks.rows import (
    Delivery,
    DeliveryStatus,
    FailureReason,
    RedriveResult,
    WebhookDeliveries,
)

DEFAULT_PAGE = 100
MAX_PAGE = 1000
# Notification ids are built from restricted parts (kinds, tenant ids, meter names, dates, decimals).
_ID = re.compile(r"[A-Za-z0-9._:-]{1,512}")
_WINDOW_HOURS = RetrySchedule().window.total_seconds() / 3600


class WebhookDeliveryView(BaseModel):
    id: str = Field(description="The notification's id: the webhook-id header of every attempt")
    type: str
    tenant_id: str | None
    status: DeliveryStatus
    attempts: int = Field(description="Attempts since the delivery (or its last redrive) began")
    created: datetime = Field(
        description=f"When the delivery (or its last redrive) began: retries go on for {_WINDOW_HOURS:g} h from it"
    )
    next_attempt: datetime | None = Field(description="Pending: when the next attempt is due; null when failed")
    last_attempt: datetime | None
    last_status: int | None = Field(description="The receiver's status at the last attempt; null if none answered")
    last_error: str | None
    reason: FailureReason | None = Field(description="Failed: gone (410) or expired (retried for the whole window)")

    @classmethod
    def of(cls, delivery: Delivery) -> WebhookDeliveryView:
        pending = delivery.status is DeliveryStatus.PENDING
        return cls(
            id=delivery.id,
            type=delivery.type,
            tenant_id=delivery.tenant_id,
            status=delivery.status,
            attempts=delivery.attempts,
            created=delivery.created,
            next_attempt=delivery.next_attempt if pending else None,
            last_attempt=delivery.last_attempt,
            last_status=delivery.last_status,
            last_error=delivery.last_error,
            reason=delivery.reason,
        )


class WebhookDeliveryList(BaseModel):
    items: list[WebhookDeliveryView]
    next: str | None = Field(description="Pass as `after` for the next page; null on the last page")


class WebhookRedrive(BaseModel):
    id: str
    status: DeliveryStatus
    redriven: bool = Field(description="True if this call moved a failed delivery back to pending")
    detail: str


# The journal is kept per tenant; a delivery of no tenant (none today) is journaled here.
OPERATOR_PARTITION = "_operator"


class Webhooks:
    def __init__(
        self,
        deliveries: WebhookDeliveries,
        after_redrive: Callable[[], None] | None = None,
        *,
        journal: Journal | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.deliveries = deliveries
        self.after_redrive = after_redrive
        self.journal = journal
        self.clock = clock

    def list(self, params: Mapping[str, str]) -> Response:
        status_text = params.get("status", DeliveryStatus.FAILED.value)
        try:
            status = DeliveryStatus(status_text)
        except ValueError:
            return bad_request("status", "must be failed or pending")
        limit_text = params.get("limit", str(DEFAULT_PAGE))
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
            return bad_request("limit", f"must be a whole number from 1 to {MAX_PAGE}")
        after = params.get("after")
        if after is not None and not _ID.fullmatch(after):
            return bad_request("after", "must be the id of a delivery (the `next` of the previous page)")
        page = self.deliveries.page(status, after, int(limit_text))
        return ok(WebhookDeliveryList(items=[WebhookDeliveryView.of(d) for d in page.items], next=page.next))

    def redrive(self, message_id: str, actor: str = "admin key") -> Response:
        if not _ID.fullmatch(message_id):
            return bad_request("id", "must be the id of a webhook delivery, 1 to 512 of A-Z a-z 0-9 . _ : -")
        result, delivery = self.deliveries.redrive(message_id)
        if result is RedriveResult.UNKNOWN:
            return problem(
                404,
                "Unknown webhook delivery",
                f"no webhook delivery has id {message_id!r}: it was delivered (acknowledged deliveries are not "
                "kept), or no such notification was sent",
            )
        if result is RedriveResult.ALREADY_PENDING:
            assert delivery is not None
            detail = (
                f"already pending ({delivery.attempts} attempts so far), next attempt at "
                f"{delivery.next_attempt.isoformat()}: nothing changed"
            )
            return ok(WebhookRedrive(id=message_id, status=DeliveryStatus.PENDING, redriven=False, detail=detail))
        if self.journal is not None and delivery is not None:
            # After the change (it moves no total), before the answer: a crash between leaves the delivery
            # pending again, which a second redrive reports as such.
            self.journal.record(
                JournalEntry(
                    kind=JournalKind.WEBHOOK_REDRIVE,
                    tenant_id=delivery.tenant_id or OPERATOR_PARTITION,
                    time=self.clock(),
                    subject=message_id,
                    actor=actor,
                    details={"type": delivery.type},
                )
            )
        if self.after_redrive is not None:
            self.after_redrive()
        return ok(
            WebhookRedrive(
                id=message_id,
                status=DeliveryStatus.PENDING,
                redriven=True,
                detail=f"pending again, due now, with its attempts reset and {_WINDOW_HOURS:g} hours of retries ahead",
            )
        )
