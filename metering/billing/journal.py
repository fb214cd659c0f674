"""The journal: every change to the totals that does not travel through the hub, written before it is acknowledged.

Cancels, late events carried into a later period and (later) operator actions change totals without a hub
message, so the raw archive alone cannot prove them: `metering rebuild` replays the archive and this journal
together. One row per change, partitioned by tenant, its key ordered by time:

    <tenant> | <time, microseconds>|<kind>|<digest of the subject>

The key is a pure function of the change (its time is the one the change itself records: a cancel's
`cancelled_at`, a late event's `detected`), so writing an entry again writes the same row: a retry heals a
crash between the change and its entry, and never makes a second one.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from metering.core.clock import format_timestamp
from metering.ledger.keys import digest
from metering.stores import MAX_TRANSACTION_OPS, CommitConflict, Create, RowTable


class JournalKind(StrEnum):
    CANCEL = "cancel"  # a counted event subtracted (billing/cancels.py)
    LATE_CARRY = "late.carry"  # a late event counted in a later period under policy `adjust` (billing/late.py)
    # Operator actions from the console: each with its actor and the totals before and after.
    LATE_APPLY = "late.apply"
    LATE_DISCARD = "late.discard"
    DEAD_LETTER_REDRIVE = "deadletter.redrive"
    WEBHOOK_REDRIVE = "webhook.redrive"


# Changes that move totals: what a rebuild must replay. The others are recorded for the audit trail only.
CHANGES_TOTALS = frozenset(
    {
        JournalKind.CANCEL,
        JournalKind.LATE_CARRY,
        JournalKind.LATE_APPLY,
        JournalKind.DEAD_LETTER_REDRIVE,
    }
)


class JournalEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: str = Field(description="A JournalKind; kept as text so entries of kinds added later still read")
    tenant_id: str
    time: datetime = Field(description="When the change took effect")
    subject: str = Field(description="What it changed: a dedupe key, a late event's or a dead letter's id")
    actor: str | None = Field(None, description="Who asked for it (operator actions); None for the pipeline")
    details: dict[str, Any] = Field(default_factory=dict, description="What a replay needs, and what was done")
    before: dict[str, str] | None = Field(None, description="Totals per meter before the change, when known")
    after: dict[str, str] | None = Field(None, description="Totals per meter after the change, when known")

    @property
    def key(self) -> str:
        return f"{format_timestamp(self.time)}|{self.kind}|{digest(self.subject)}"


class Journal:
    def __init__(self, table: RowTable) -> None:
        self.table = table

    def record(self, entry: JournalEntry) -> bool:
        """Write an entry; False when it was written before (the first one stays)."""
        try:
            self.table.commit(entry.tenant_id, [Create(entry.key, entry.model_dump(mode="json"))])
        except CommitConflict:
            return False
        return True

    def record_all(self, entries: Iterable[JournalEntry]) -> int:
        """Write entries, a transaction per tenant and hundred (one entry by one where some were written
        before); returns how many are new."""
        by_tenant: dict[str, dict[str, JournalEntry]] = {}
        for entry in entries:
            by_tenant.setdefault(entry.tenant_id, {})[entry.key] = entry  # each row once per transaction
        written = 0
        for tenant, keyed in by_tenant.items():
            items = list(keyed.values())
            for i in range(0, len(items), MAX_TRANSACTION_OPS):
                group = items[i : i + MAX_TRANSACTION_OPS]
                try:
                    self.table.commit(tenant, [Create(e.key, e.model_dump(mode="json")) for e in group])
                except CommitConflict:
                    written += sum(self.record(entry) for entry in group)
                    continue
                written += len(group)
        return written

    def list(
        self, tenant_id: str, *, since: datetime | None = None, until: datetime | None = None, limit: int | None = None
    ) -> list[JournalEntry]:
        """A tenant's entries with since <= time < until, oldest first."""
        start = format_timestamp(since) if since is not None else ""
        stop = format_timestamp(until) if until is not None else "~"
        return [JournalEntry.model_validate(row.data) for row in self.table.range(tenant_id, start, stop, limit)]
