"""The operator routes' bodies (`/api/manage/...`, admin key): tenant settings, closed periods, health, webhook
deliveries, portal tokens.

Lenient on purpose: fields the service adds later are kept, not refused, so an older client keeps working.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from metering.core.decimals import DecimalText


class MetricLimits(BaseModel):
    """A tenant's limits for one meter per billing period; None means no such limit."""

    model_config = ConfigDict(extra="allow")

    soft: DecimalText | None = None
    hard: DecimalText | None = None


class TenantSettings(BaseModel):
    """`GET/PUT /api/manage/tenants/{tenant_id}`: the tenant's plan, limit overrides and billing schedule."""

    model_config = ConfigDict(extra="allow")

    tenant_id: str
    plan: str | None = None
    limits: dict[str, MetricLimits] = Field(default_factory=dict)
    billing_anchor_day: int | None = None
    timezone: str | None = None
    # Portal tokens issued before it are refused (None: none revoked).
    tokens_not_before: datetime | None = None


class ClosedPeriod(BaseModel):
    model_config = ConfigDict(extra="allow")

    tenant_id: str
    period_start: datetime
    period_end: datetime


class ClosedPeriods(BaseModel):
    """`POST /api/manage/periods/close`: the periods this call closed (none when nothing was due)."""

    model_config = ConfigDict(extra="allow")

    closed: list[ClosedPeriod]


class PartitionHealth(BaseModel):
    """A hub partition: the newest position applied, when, and the age of its oldest event not applied yet."""

    model_config = ConfigDict(extra="allow")

    partition: str
    applied_sequence: int | None = None
    applied_at: datetime | None = None
    lag_seconds: float


class HealthReport(BaseModel):
    """`GET /api/manage/health`: hub partitions, and the records waiting for an operator."""

    model_config = ConfigDict(extra="allow")

    partitions: list[PartitionHealth]
    dead_letters: int
    late_events: int
    conflicts: int
    webhooks_failed: int


class WebhookDelivery(BaseModel):
    """A webhook delivery: `pending` (attempts go on) or `failed` (given up on: `reason` gone or expired)."""

    model_config = ConfigDict(extra="allow")

    id: str
    type: str
    tenant_id: str | None = None
    status: str
    attempts: int
    created: datetime
    next_attempt: datetime | None = None
    last_attempt: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    reason: str | None = None


class WebhookDeliveries(BaseModel):
    """`GET /api/manage/webhooks`: a page of deliveries; `next` is the `after` of the following page."""

    model_config = ConfigDict(extra="allow")

    items: list[WebhookDelivery]
    next: str | None = None


class WebhookRedrive(BaseModel):
    """`POST /api/manage/webhooks/{id}/redrive`: the delivery is pending; `redriven` says if this call made it so."""

    model_config = ConfigDict(extra="allow")

    id: str
    status: str
    redriven: bool
    detail: str


class PortalLink(BaseModel):
    """`POST /api/manage/portal-tokens`: a portal token for one tenant, and its portal page's URL carrying it in
    the fragment (what an iframe loads)."""

    model_config = ConfigDict(extra="allow")

    token: str
    url: str
    expires_at: datetime
    tenant_id: str
    token_id: str


def tenant_update(
    *,
    plan: str | None = None,
    limits: dict[str, MetricLimits] | None = None,
    billing_anchor_day: int | None = None,
    timezone: str | None = None,
    plan_effective_from: datetime | None = None,
    tokens_not_before: datetime | Literal["now"] | None = None,
    links: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The PUT body: only the fields given, so the others keep their values. `links` are billing-target links
    (`stripe_customer_id`, `marketplace_resource_id`, `marketplace_plan_id`; "" removes one)."""
    body: dict[str, Any] = dict(links or {})
    if tokens_not_before is not None:
        body["tokens_not_before"] = (
            tokens_not_before if isinstance(tokens_not_before, str) else tokens_not_before.isoformat()
        )
    if plan is not None:
        body["plan"] = plan
    if plan_effective_from is not None:
        body["plan_effective_from"] = plan_effective_from.isoformat()
    if limits is not None:
        body["limits"] = {metric: limit.model_dump(mode="json", exclude_none=True) for metric, limit in limits.items()}
    if billing_anchor_day is not None:
        body["billing_anchor_day"] = billing_anchor_day
    if timezone is not None:
        body["timezone"] = timezone
    return body
