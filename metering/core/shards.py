"""A tenant's shard count over time (pure): how many store partitions each of its billing periods is spread over.

A hot tenant's period is split into N shards (1 to 16), each a store partition of its own, so its events are not
bound by one partition's throughput. Where an event is counted depends on N, so N must be the same for every event
of a period, whenever it is applied: like the billing terms, a change takes effect at a period boundary (the first
one at least the settle delay ahead, so every instance has read it by then), and a period has the count that was in
force at its start. A change not in force yet may be replaced or cancelled; one in force never changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any

MIN_SHARDS = 1
# Table storage takes about 2,000 entities/s per partition and 20,000 per account: more shards than an account's
# share would buy nothing (README, capacity model).
MAX_SHARDS = 16
# Changes are rare (a tenant grows); the bound keeps the settings row small. Old changes are never dropped:
# the count of a closed period must stay what it was.
MAX_CHANGES = 100


class ShardsError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ShardChange:
    """`shards` in force from `effective_from` (None: since always) until the next change."""

    shards: int
    effective_from: datetime | None

    def __post_init__(self) -> None:
        if not MIN_SHARDS <= self.shards <= MAX_SHARDS:
            raise ShardsError(f"shards must be {MIN_SHARDS} to {MAX_SHARDS}")


ShardHistory = tuple[ShardChange, ...]
DEFAULT_SHARDS: ShardHistory = (ShardChange(1, None),)


def shards_at(history: ShardHistory, instant: datetime) -> int:
    """The count in force at `instant`: for a period, call it with the period's start."""
    found = history[0].shards
    for change in history:
        if change.effective_from is None or change.effective_from <= instant:
            found = change.shards
    return found


def change_shards(history: ShardHistory, shards: int, boundary: datetime, not_before: datetime) -> ShardHistory:
    """The history with `shards` in force from `boundary` (the first period boundary at or after `not_before`).
    Changes not in force by `not_before` are replaced; asking for the count in force is no change."""
    settled = tuple(c for c in history if c.effective_from is None or c.effective_from <= not_before)
    if settled[-1].shards == shards:
        return settled
    changed = (*settled, ShardChange(shards, boundary))
    if len(changed) > MAX_CHANGES:
        raise ShardsError(f"at most {MAX_CHANGES} changes of shards are kept; this tenant has had them all")
    return changed


def check_history(history: Sequence[ShardChange]) -> ShardHistory:
    if not history or history[0].effective_from is not None:
        raise ShardsError("a shard history starts with a count in force since always")
    for before, after in pairwise(history):
        if after.effective_from is None or (before.effective_from and after.effective_from <= before.effective_from):
            raise ShardsError("shard changes must take effect in order")
    return tuple(history)


def history_json(history: ShardHistory) -> list[dict[str, Any]]:
    return [
        {"n": c.shards, "from": None if c.effective_from is None else c.effective_from.isoformat()} for c in history
    ]


def history_from_json(stored: Sequence[dict[str, Any]] | None) -> ShardHistory:
    """The stored history; settings written before shards existed have none: one shard since always."""
    if not stored:
        return DEFAULT_SHARDS
    return check_history(
        [
            ShardChange(int(item["n"]), None if item["from"] is None else datetime.fromisoformat(item["from"]))
            for item in stored
        ]
    )
