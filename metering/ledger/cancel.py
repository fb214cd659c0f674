"""The arithmetic of a cancel (pure): what subtracting one counted event's contribution writes.

The event's marker holds its contribution (quantity, day, hour, groups), so a cancel subtracts exactly that
from the period total, the day, the hour and the groups (the value's cell, the overflow cell or the cell of the
events without the dimension: wherever it was counted), in one transaction with the cancel's own row, which
makes a repeat a no-op answered the same way. The state row is rewritten under its ETag like every aggregator
commit, so a cancel is ordered against them and against the period closer. Only additive contributions (sum,
count) can be subtracted, and a time_weighted meter's point removed (its integral's change is the inverse of the
point's insertion between the neighbours left: ledger/levels.py `unplace`).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from metering.core import decimals
from metering.core.meters import Aggregation, Meter
from metering.ledger import rows
from metering.ledger.batch import ChunkDeltas, DayDelta, weighted
from metering.ledger.cells import Cell
from metering.ledger.keys import STATE_ROW, day_row_key
from metering.ledger.rows import DayBlock, Marker, StateRow
from metering.stores import Create, Operation, Replace, Row


class PeriodClosed(RuntimeError):
    pass


class NotCancellable(ValueError):
    pass


def cancelled_value(marker: Marker, meter: Meter | None) -> Decimal:
    """What cancelling the marker's event subtracts from its meter's total; raises NotCancellable for a
    contribution that cannot be subtracted (a level or a distinct count, or a meter no longer in the catalog)."""
    if meter is not None and meter.aggregation is Aggregation.TIME_WEIGHTED:
        return marker.quantity  # the level its point set, which the cancel removes (levels.unplace)
    return cancelled_cell(marker, meter).value


def cancelled_cell(marker: Marker, meter: Meter | None) -> Cell:
    """The marker's event's contribution, as it was added: its count and sample weight included, so the total,
    the event count and a sampled estimate's variance lose exactly what they gained."""
    if meter is not None and meter.aggregation is Aggregation.TIME_WEIGHTED:
        return Cell(decimals.ZERO, marker.count)  # its event count: the integral changes by its point's removal
    if meter is None or not meter.aggregation.is_additive:
        kind = meter.aggregation.value if meter else "unknown"
        raise NotCancellable(f"{marker.metric} is a {kind} meter: only sum and count contributions can be subtracted")
    figure = Decimal(marker.count) if meter.aggregation is Aggregation.COUNT else marker.quantity
    return weighted(figure, marker.count, marker.weight)


def negated(cell: Cell) -> Cell:
    variance = None if cell.variance is None else decimals.negate(cell.variance)
    return Cell(decimals.negate(cell.value), -cell.count, variance=variance)


def ensure_open(state: Row | None, period_key: str) -> Row:
    """The state row of a period a cancel may still change; raises PeriodClosed once it is closed."""
    if state is None or StateRow(state.data).is_closed:
        raise PeriodClosed(f"the billing period starting {period_key} is closed")
    return state


def day_row_to_read(marker: Marker, state: Row | None) -> str | None:
    """The day row a cancel must read besides the state row: its event's day, unless that is the latest day
    (whose block is inside the state row)."""
    today = StateRow(state.data).today if state is not None else None
    return None if today is not None and today.day == marker.day else day_row_key(marker.day)


def subtraction(
    *,
    marker: Marker,
    meter: Meter,
    period_key: str,
    state: Row | None,
    day_row: Row | None,
    cancel: Create,
    meters: Mapping[str, Meter],
    now: str,
) -> list[Operation]:
    """The commit that cancels the marker's event: `cancel` (the cancel's row), the day row's and the state
    row's replacements under their ETags. Raises PeriodClosed once the period is closed."""
    state = ensure_open(state, period_key)
    view = StateRow(state.data)
    minus = negated(cancelled_cell(marker, meter))
    today = view.today
    in_state = today is not None and today.day == marker.day
    stored: Mapping[str, Any] | None = today.data if in_state and today is not None else None
    if not in_state:
        assert day_row is not None, "a counted day that is not the latest has its day row"
        stored = day_row.data
    delta = DayDelta(meter.aggregation, minus, {marker.hour: minus})
    cells = DayBlock(stored).meter(meter.name) if stored is not None else None
    for dim, value in marker.groups.items():
        group = cells.group(dim) if cells is not None else None
        if value is None:  # counted in the cell of events without the dimension
            delta.absent[dim] = minus
        elif group is not None and group.has(value):
            delta.groups.setdefault(dim, {})[value] = minus
        else:  # it was counted in the dimension's overflow cell
            delta.overflow[dim] = minus
    block = rows.add_to_block(stored, day=marker.day, per_meter={meter.name: delta}, meters=meters)
    deltas = ChunkDeltas(totals={meter.name: minus}, meters={meter.name: meter})
    if marker.adjustment:
        deltas.adjustments[meter.name] = minus
    new_state = rows.apply_to_state(
        state.data,
        deltas=deltas,
        new_distinct={},
        coverage={},
        now=now,
        today=block if in_state else state.data.get("today"),
        hours={marker.hour},
    )
    operations: list[Operation] = [cancel]
    if not in_state:
        assert day_row is not None
        operations.append(Replace(day_row.key, rows.day_row(block, now), day_row.etag))
    operations.append(Replace(STATE_ROW, new_state, state.etag))
    return operations
