"""A tenant's limits on a meter, and what a quota check decides: the vocabulary plans, tenant settings, quota
decisions, alerts, the HTTP contract and the client share."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Limits:
    """Over one billing period: above `soft` warns, above `hard` is denied; None is no such limit."""

    soft: Decimal | None = None
    hard: Decimal | None = None


class Decision(StrEnum):
    ALLOWED = "allowed"
    WARNING = "warning"
    DENIED = "denied"
    UNLIMITED = "unlimited"
