"""What the billing-export routes answer (admin key): a run on demand, and a tenant's reconciliation with each
target (Stripe, the Azure Marketplace). Figures are exact decimals, as the service writes them."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict


class ExportRun(BaseModel):
    """`POST /api/manage/exports/run`: intents acknowledged, sends that failed, intents still open."""

    model_config = ConfigDict(extra="allow")

    sent: int
    failed: int
    pending: int


class MetricReconciliation(BaseModel):
    """One metric at one target: our figure as the target should hold it, and what it holds."""

    model_config = ConfigDict(extra="allow")

    metric: str
    target_metric: str
    ours: Decimal
    sent: Decimal
    acknowledged: Decimal
    pending: Decimal
    difference: Decimal
    reasons: list[str]


class TargetReconciliation(BaseModel):
    model_config = ConfigDict(extra="allow")

    target: str
    linked: bool
    link: dict[str, str] | None = None
    metrics: list[MetricReconciliation]


class ExportReconciliation(BaseModel):
    """`GET /api/manage/exports/{tenant_id}`: a tenant's period at every target configured."""

    model_config = ConfigDict(extra="allow")

    tenant_id: str
    period_start: datetime
    period_end: datetime
    targets: list[TargetReconciliation]
