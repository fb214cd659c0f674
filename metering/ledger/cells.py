"""Cells: an aggregate over some events (a value, an event count and, for `latest`, what orders it; for a sampled
meter, the variance of its estimate), and how cells of one meter merge by its aggregation (pure).

Cells are stored as JSON arrays, `[value text, count]`, `[value text, count, timestamp, event id]` (latest) or
`[value text, count, variance text]` (a sampled meter's: only sum and count meters are sampled, so the two
longer forms never meet), so a total is never a float anywhere between the event and the invoice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from metering.core import decimals
from metering.core.meters import Aggregation


@dataclass(slots=True)
class Cell:
    """An aggregate over some events. `at` orders `latest` values: (timestamp, event id), never arrival.
    `variance` is the Horvitz-Thompson variance of a sampled meter's estimate, exact (None: nothing sampled)."""

    value: Decimal
    count: int
    at: tuple[str, str] | None = None
    variance: Decimal | None = None

    def to_json(self) -> list[Any]:
        encoded: list[Any] = [decimals.to_str(self.value), self.count]
        if self.at is not None:
            encoded.extend(self.at)
        elif self.variance is not None:
            encoded.append(decimals.to_str(self.variance))
        return encoded

    @classmethod
    def from_json(cls, data: Sequence[Any]) -> Cell:
        if len(data) == 3:
            return cls(Decimal(data[0]), int(data[1]), variance=Decimal(data[2]))
        at = (data[2], data[3]) if len(data) > 2 else None
        return cls(Decimal(data[0]), int(data[1]), at)


def cell_of(data: Any) -> Cell | None:
    return None if data is None else Cell.from_json(data)


def merge(kind: Aggregation, into: Cell | None, delta: Cell) -> Cell:
    """Combine two cells of one meter. Additive kinds add; levels keep their extreme or their latest."""
    if into is None:
        return Cell(delta.value, delta.count, delta.at, delta.variance)
    count = into.count + delta.count
    if kind is Aggregation.MAX:
        return Cell(max(into.value, delta.value), count)
    if kind is Aggregation.MIN:
        return Cell(min(into.value, delta.value), count)
    if kind is Aggregation.LATEST:
        newer = delta if (delta.at or ("", "")) > (into.at or ("", "")) else into
        return Cell(newer.value, count, newer.at)
    return Cell(decimals.add(into.value, delta.value), count, variance=add_variances(into.variance, delta.variance))


def add_variances(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    """Variances of independent samples add; a cell without one sampled nothing (a variance of 0)."""
    if a is None:
        return b
    return a if b is None else decimals.add(a, b)


def absorb(kind: Aggregation, cells: dict[str, Cell], key: str, delta: Cell) -> None:
    """Merge `delta` into cells[key] in place: pre-aggregation owns the cells it creates, so it need not
    allocate a new one per event."""
    cell = cells.get(key)
    if cell is None:
        cells[key] = Cell(delta.value, delta.count, delta.at, delta.variance)
    else:
        absorb_into(kind, cell, delta)


_ADDED = frozenset({Aggregation.SUM, Aggregation.COUNT, Aggregation.UNIQUE_COUNT, Aggregation.TIME_WEIGHTED})


def absorb_into(kind: Aggregation, cell: Cell, delta: Cell) -> None:
    cell.count += delta.count
    if kind in _ADDED:
        cell.value = decimals.add(cell.value, delta.value)
        if delta.variance is not None:
            cell.variance = add_variances(cell.variance, delta.variance)
    elif kind is Aggregation.MAX:
        cell.value = max(cell.value, delta.value)
    elif kind is Aggregation.MIN:
        cell.value = min(cell.value, delta.value)
    elif (delta.at or ("", "")) > (cell.at or ("", "")):
        cell.value, cell.at = delta.value, delta.at


def merge_json(kind: Aggregation, stored: Sequence[Any] | None, delta: Cell) -> list[Any]:
    return merge(kind, None if stored is None else Cell.from_json(stored), delta).to_json()


def combine(kind: Aggregation, cells: Sequence[Cell | None]) -> Cell | None:
    """Combine cells of one meter across shards or buckets of the same span."""
    result: Cell | None = None
    for cell in cells:
        if cell is not None:
            result = merge(kind, result, cell)
    return result
