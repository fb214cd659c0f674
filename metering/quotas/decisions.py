"""Quota decisions: may a tenant use `requested` more of a meter in its current period?

Pure: the caller supplies the current figure and the tenant's limits (plans and overrides come with tenant
settings; a tenant without limits for a meter is unlimited).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from metering.core import decimals
from metering.core.limits import Decision, Limits
from metering.core.meters import Meter


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: Decision
    projected: Decimal
    remaining: Decimal | None  # what is left under the hard limit after the request; None without one


def decide(meter: Meter, current: Decimal, requested: Decimal, limits: Limits) -> Verdict:
    """A level (max, min, latest) is projected as the larger of now and the request, an increment (sum,
    count, unique_count) as their sum; a time_weighted meter's `current` is its level, and the request adds to
    it (more of the resource held). A soft-only limit warns and never denies."""
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
    return Verdict(decision, projected, remaining)
