"""Quota decisions: may a tenant use `requested` more of a meter in its current period?

Pure: the caller supplies the current aggregate and the tenant's limits (plans and overrides come with tenant
settings; a tenant without limits for a meter is unlimited).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from metering.core import decimals
from metering.core.decimals import DecimalText
from metering.core.limits import Decision, Limits
from metering.core.meters import Meter


class QuotaDecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    decision: Decision
    current: DecimalText
    requested: DecimalText
    projected: DecimalText
    soft_limit: DecimalText | None
    hard_limit: DecimalText | None
    remaining: DecimalText | None
    period_end: datetime


def decide(meter: Meter, current: Decimal, requested: Decimal, limits: Limits, period_end: datetime) -> QuotaDecision:
    """A level (max, min, latest) is projected as the larger of now and the request, an increment (sum,
    count, unique_count) as their sum. A soft-only limit warns and never denies."""
    projected = max(current, requested) if meter.aggregation.is_level else decimals.add(current, requested)
    if limits.soft is None and limits.hard is None:
        decision = Decision.UNLIMITED
    elif limits.hard is not None and projected > limits.hard:
        decision = Decision.DENIED
    elif limits.soft is not None and projected > limits.soft:
        decision = Decision.WARNING
    else:
        decision = Decision.ALLOWED
    remaining = None if limits.hard is None else max(decimals.subtract(limits.hard, projected), decimals.ZERO)
    return QuotaDecision(
        decision=decision,
        current=current,
        requested=requested,
        projected=projected,
        soft_limit=limits.soft,
        hard_limit=limits.hard,
        remaining=remaining,
        period_end=period_end,
    )
