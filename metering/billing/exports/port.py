"""The port every billing target implements: how it names tenants and meters, what it can hold, how it is sent
intents and how an intent it may or may not have got is reconciled. The engine (engine.py) does the rest."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from metering.billing.exports.rows import Intent
from metering.core.meters import Meter
from metering.core.periods import BillingPeriod
from metering.tenants.records import TenantRecord


class Answer(StrEnum):
    """What became of one intent sent (or reconciled)."""

    ACKED = "acked"  # the target holds it; `accepted` is what it holds (a duplicate's answer included)
    RETRY = "retry"  # not settled (an outage, throttling, a timeout): sent again, unchanged, later
    REFUSED = "refused"  # refused for what it is (a 4xx): reported, and sent again only once something changes
    EXPIRED = "expired"  # too old for the target: not held; its value goes in a new intent
    LOST = "lost"  # reconciled: the target never got it; its value goes in a new intent, a new identifier
    UNRESOLVED = "unresolved"  # reconciled, but the target's figure matches neither case: left for an operator


@dataclass(frozen=True, slots=True)
class Outcome:
    answer: Answer
    accepted: Decimal | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Stamp:
    """The hour and instant an intent is stamped with."""

    hour: str
    timestamp: datetime


class Target(Protocol):
    name: str  # the exports table's partition prefix, the route's "target"
    label: str  # for people
    # Intents first sent longer ago than this are reconciled against the target, never sent again blind (the
    # target may have forgotten the identifier it dedupes on).
    resend_window: timedelta
    # Whether the target takes negative values (corrections); without, a fall is reported as a difference.
    takes_decreases: bool

    def link(self, record: TenantRecord) -> dict[str, str] | None:
        """The tenant's ids at the target, or None when it is not linked."""
        ...

    def metric_name(self, meter: Meter) -> str | None:
        """The target's name of the meter, or None when it is not exported there."""
        ...

    def hourly(self, meter: Meter) -> bool:
        """Whether the meter's hour changes are sent in their hours (else its period-to-date increases are)."""
        ...

    def exact(self, value: Decimal) -> Decimal:
        """The part of `value` the target holds exactly."""
        ...

    def billable(self, figure: Decimal, included: Decimal) -> Decimal:
        """What the target is to hold of a period figure."""
        ...

    def stamp_hour(self, period: BillingPeriod, hour: str, now: datetime) -> Stamp | None:
        """The stamp of an hour's change, or None when the target no longer takes that hour."""
        ...

    def stamp_increase(self, period: BillingPeriod, used: set[str], now: datetime) -> Stamp | None:
        """The stamp of a period-to-date increase (`used`: hours the key's earlier intents were stamped with), or
        None when none can be given now (the next run tries again)."""
        ...

    def send(self, intents: Sequence[Intent]) -> list[Outcome]:
        """Send each intent as it is; one outcome per intent, in order. Never raises for the target's answers."""
        ...

    def reconcile(self, intents: Sequence[Intent], held: Sequence[Decimal]) -> list[Outcome]:
        """Find out whether the target got each intent (first sent longer ago than the resend window), given what
        it held for the intent's key before it (`held`, the acknowledged total)."""
        ...
