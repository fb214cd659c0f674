"""A tenant's plan over time: every change with the instant it took effect (pure).

Limits and ingest rates follow the plan in force now; a period is rated with the plan in force at its end, the
last one chosen before that instant, so a change during a period prices the whole period (as an upgrade in
the middle of a month does), and a change after the period ended prices only the next one. A change may be
backdated (an upgrade "from the start of this period"), never into a period that is closed: its statement is
final. A backdated change replaces the changes after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Plenty for any tenant; the oldest changes only ever priced periods that closed long ago.
MAX_CHANGES = 100


@dataclass(frozen=True, slots=True)
class PlanChange:
    """`plan` in force from `effective_from` (None: since the tenant was first seen) until the next change."""

    plan: str
    effective_from: datetime | None


PlanHistory = tuple[PlanChange, ...]


def plan_before(history: PlanHistory, end: datetime) -> str | None:
    """The plan chosen last before `end` (the plan a period ending at `end` is rated with); None: the tenant
    was never assigned one then, and is on the catalog's default plan."""
    found: str | None = None
    for change in history:
        if change.effective_from is None or change.effective_from < end:
            found = change.plan
    return found


def change_plan(history: PlanHistory, plan: str, effective_from: datetime) -> PlanHistory:
    """The history with `plan` in force from `effective_from`, replacing any change from then on; unchanged
    when that plan is already in force there."""
    kept = tuple(c for c in history if c.effective_from is None or c.effective_from < effective_from)
    if kept and kept[-1].plan == plan:
        return kept
    changed = (*kept, PlanChange(plan, effective_from))
    if len(changed) > MAX_CHANGES:
        oldest = changed[-MAX_CHANGES]
        changed = (PlanChange(oldest.plan, None), *changed[-MAX_CHANGES + 1 :])
    return changed


def history_json(history: PlanHistory) -> list[dict[str, Any]]:
    return [
        {"plan": c.plan, "from": None if c.effective_from is None else c.effective_from.isoformat()} for c in history
    ]


def history_from_json(stored: Sequence[dict[str, Any]] | None, plan: str | None) -> PlanHistory:
    """The stored history; settings written before plan changes were recorded have only the current plan,
    which is then taken as in force since always."""
    if stored is None:
        return () if plan is None else (PlanChange(plan, None),)
    return tuple(
        PlanChange(item["plan"], None if item["from"] is None else datetime.fromisoformat(item["from"]))
        for item in stored
    )
