"""The exports table: what each billing target was asked to hold and what it acknowledged, per tenant and period.

A partition is one target, tenant and billing period, `<target>|<tenant>|<period key>`:

    s                          the export state (ExportState): the usage version last looked at, the hours still
                               to look at, the intents not settled yet, and whether the period is done
    i|<meter>|<slot>|<rev>     an intent (Intent): one value sent for one key (target, tenant, meter, slot),
                               created before its first send and re-sent unchanged until the target settles it

A slot is a UTC hour (`2026-11-24T09`) for the keys whose hour changes are sent, or `p` for the keys whose
period-to-date increases are (engine.py). An intent is created in one commit with the state row, which lists it
as open: two exporters cannot both create the next revision of a key (the create, and the state row's ETag, let
one win), and an intent that leaves the open list (acknowledged, refused, expired, lost) does so in one commit
with the state row too. Claims (the lease an exporter takes before sending) touch the intent row alone.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, Field

from metering.core import decimals
from metering.core.decimals import DecimalText
from metering.core.periods import BillingPeriod
from metering.stores import CommitConflict, Create, Operation, Replace, Row, RowTable

STATE_ROW = "s"
INTENT = "i|"
PERIOD_SLOT = "p"
_END = "~"
# A state row and its intents commit together: the rest of a transaction's 100 operations.
MAX_INTENTS_PER_COMMIT = 99


class IntentStatus(StrEnum):
    PENDING = "pending"  # created, sent or not, waiting for the target's answer
    ACKED = "acked"  # the target holds it (`accepted` is what it holds)
    REFUSED = "refused"  # the target refused it for what it is (a 4xx): sent again only once something changed
    EXPIRED = "expired"  # too old for the target to take (the Marketplace's 24 hours): its value goes in a new one
    LOST = "lost"  # reconciled: the target never got it; its value goes in a new one, under a new identifier

    @property
    def is_open(self) -> bool:
        return self is IntentStatus.PENDING


class Intent(BaseModel):
    """One value sent to a target for one key, as it is sent every time."""

    target: str
    tenant_id: str
    meter: str
    period: str  # the billing period's key (its start date)
    slot: str  # a UTC hour, or "p"
    revision: int
    identifier: str  # what the target dedupes on (Stripe's identifier); derived from the key and revision
    value: DecimalText
    hour: str  # the UTC hour it is stamped with
    timestamp: datetime  # the instant it is stamped with
    # The span whose usage it belongs to: the slot's part of the period, or the whole period.
    window_start: datetime
    window_end: datetime
    name: str  # the target's name of the meter: Stripe's event_name, the Marketplace's dimension
    link: dict[str, str]  # the tenant's ids at the target when it was created
    status: IntentStatus = IntentStatus.PENDING
    created: datetime
    attempts: int = 0
    first_sent: datetime | None = None
    lease_until: datetime | None = None
    next_attempt: datetime | None = None
    last_error: str | None = None
    accepted: DecimalText | None = Field(None, description="What the target holds for it, once acknowledged")
    settled_at: datetime | None = None

    @property
    def key(self) -> str:
        return intent_key(self.meter, self.slot, self.revision)


class ExportState(BaseModel):
    tenant_id: str
    period: str
    period_start: datetime
    period_end: datetime
    # The usage token (ledger/reader.py, PeriodChanges) the hours below were computed from; None: never looked.
    seen: dict[str, int] | None = None
    # UTC hours (and "p" for the period's keys) to look at again: changed but not settled yet, waiting on an
    # intent, or refused until something changes.
    hours: list[str] = Field(default_factory=list)
    open: list[str] = Field(default_factory=list)  # row keys of the intents not settled yet
    done: bool = False  # closed, every hour looked at, nothing open: nothing will change any more

    @classmethod
    def new(cls, tenant_id: str, period: BillingPeriod) -> ExportState:
        return cls(tenant_id=tenant_id, period=period.key, period_start=period.start, period_end=period.end)


def partition_of(target: str, tenant_id: str, period: BillingPeriod) -> str:
    # Tenant ids hold none of the characters keys forbid; the target names are fixed words.
    return f"{target}|{tenant_id}|{period.key}"


def intent_key(meter: str, slot: str, revision: int) -> str:
    return f"{INTENT}{meter}|{slot}|{revision:05d}"


def slot_prefix(meter: str, slot: str) -> str:
    return f"{INTENT}{meter}|{slot}|"


@dataclass(frozen=True, slots=True)
class Stored:
    """An intent as read, with the ETag a claim or an outcome is written under."""

    etag: str
    intent: Intent


class ExportRows:
    """The exports table's reads and writes."""

    def __init__(self, table: RowTable) -> None:
        self.table = table

    def state(self, partition: str) -> tuple[str | None, ExportState | None]:
        row = self.table.read(partition, [STATE_ROW]).get(STATE_ROW)
        return (None, None) if row is None else (row.etag, ExportState.model_validate(row.data))

    def of_key(self, partition: str, meter: str, slot: str) -> list[Stored]:
        """The intents of one key, oldest revision first."""
        prefix = slot_prefix(meter, slot)
        return [_stored(row) for row in self.table.range(partition, prefix, prefix + _END)]

    def every(self, partition: str) -> list[Stored]:
        return [_stored(row) for row in self.table.range(partition, INTENT, INTENT + _END)]

    def read(self, partition: str, keys: Collection[str]) -> dict[str, Stored]:
        return {key: _stored(row) for key, row in self.table.read(partition, keys).items()}

    def write_state(self, partition: str, state: ExportState, etag: str | None, intents: Sequence[Intent] = ()) -> str:
        """Create `intents` and write the state row (which must list them as open), in one commit; returns the
        state row's new ETag. Raises CommitConflict when another exporter wrote first."""
        operations: list[Operation] = [Create(intent.key, intent.model_dump(mode="json")) for intent in intents]
        data = state.model_dump(mode="json")
        operations.append(Create(STATE_ROW, data) if etag is None else Replace(STATE_ROW, data, etag))
        return self.table.commit(partition, operations)[-1]

    def claim(self, partition: str, stored: Stored, claimed: Intent) -> str | None:
        """Write a claim (or any change that keeps the intent open) under the intent's ETag; None when another
        exporter changed it first."""
        try:
            (etag,) = self.table.commit(partition, [Replace(claimed.key, claimed.model_dump(mode="json"), stored.etag)])
        except CommitConflict:
            return None
        return etag

    def settle(self, partition: str, intent: Intent, intent_etag: str, state: ExportState, state_etag: str) -> str:
        """Write an intent that leaves the open list, with the state row that no longer lists it; returns the
        state row's new ETag. Raises CommitConflict when either changed."""
        operations: list[Operation] = [
            Replace(intent.key, intent.model_dump(mode="json"), intent_etag),
            Replace(STATE_ROW, state.model_dump(mode="json"), state_etag),
        ]
        return self.table.commit(partition, operations)[-1]


def _stored(row: Row) -> Stored:
    return Stored(row.etag, Intent.model_validate(row.data))


def acked_total(intents: Sequence[Stored]) -> Decimal:
    """What the target holds for a key: the sum of what it acknowledged."""
    total = decimals.ZERO
    for stored in intents:
        if stored.intent.status is IntentStatus.ACKED and stored.intent.accepted is not None:
            total = decimals.add(total, stored.intent.accepted)
    return total
