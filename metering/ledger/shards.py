"""How the shards of a period combine into the period's figures (pure, but for `shard_states`, which reads them).

Each shard's rows count the events applied there (placement.py says which). Readers, the closer, previews, alerts
and the rebuild read every shard's state row and combine them with `period_state`, each meter by its kind
(`ACROSS`); day blocks combine by the kind each cell was written with (rows.combine_blocks). A new kind plugs in
with its entry in `ACROSS`, beside its placement rule.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from metering.core import decimals
from metering.core.integrals import Integral
from metering.core.meters import Aggregation, MeterCatalog
from metering.core.periods import BillingPeriod
from metering.ledger import rows
from metering.ledger.cells import Cell, merge
from metering.ledger.keys import STATE_ROW, partition_keys
from metering.ledger.rows import StateRow
from metering.stores import Row, RowTable

log = logging.getLogger(__name__)

# How one meter's figures of several shards make the period's, by kind. Sums and counts add; extremes take the
# extreme; latest takes the value with the greatest (timestamp, event id); distinct counts add because each value
# lives in one shard. For every kind so far that is the kind's own merge (cells.merge).
Combine = Callable[[Aggregation, Cell | None, Cell], Cell]
ACROSS: dict[Aggregation, Combine] = {
    Aggregation.SUM: merge,
    Aggregation.COUNT: merge,
    Aggregation.MAX: merge,
    Aggregation.MIN: merge,
    Aggregation.LATEST: merge,
    Aggregation.UNIQUE_COUNT: merge,
    # Event counts add; the integral's parts (closed, L, M) add too, and are combined beside the cells (`levels`).
    Aggregation.TIME_WEIGHTED: merge,
}


def combine_shards(kind: Aggregation, cells: Sequence[Cell | None]) -> Cell | None:
    result: Cell | None = None
    combine = ACROSS[kind]
    for cell in cells:
        if cell is not None:
            result = combine(kind, result, cell)
    return result


def shard_states(table: RowTable, tenant_id: str, period: BillingPeriod, shards: int) -> list[Row | None]:
    """The state row of each shard of the period (None where a shard has none yet), shard 0 first."""
    found = []
    for partition in partition_keys(tenant_id, period, shards):
        found.append(table.read(partition, [STATE_ROW]).get(STATE_ROW))
    return found


def all_closed(states: Sequence[Row | StateRow | None]) -> bool:
    """Whether every shard's state row exists and is closed: the closer flips them all before its statement, so
    until then some shard may still change."""
    return all(state is not None and _view(state).is_closed for state in states)


def all_carried(states: Sequence[Row | StateRow | None]) -> bool:
    """Whether the previous period's time-weighted levels were carried into every shard (billing/carry.py)."""
    return all(state is not None and _view(state).carried for state in states)


def period_state(states: Sequence[Row | StateRow | None], catalog: MeterCatalog) -> StateRow | None:
    """The shards' state rows as one, for readers: totals and carried adjustments combined by each meter's kind,
    closed once every shard is, updated and closed when the last shard was. None when no shard has a row."""
    views = [_view(state) for state in states if state is not None]
    if not views:
        return None
    if len(views) == 1 and len(states) == 1:
        return views[0]
    first = views[0].data
    closed = len(views) == len(states) and all(view.is_closed for view in views)
    kinds: dict[str, str] = {}
    for view in views:
        kinds.update(view.data.get("kinds", {}))
    totals = _combined([view.data["totals"] for view in views], kinds, catalog)
    adjustments = _combined([view.data.get("adj", {}) for view in views], kinds, catalog)
    updated = [text for view in views if (text := view.data["updated"])]
    data: dict[str, Any] = {
        "v": rows.ROW_VERSION,
        "tenant": first["tenant"],
        "period": first["period"],
        "status": rows.CLOSED if closed else rows.OPEN,
        "totals": totals,
        "wm": {},
        "updated": max(updated) if updated else None,
        "kinds": kinds,
    }
    if adjustments:
        data["adj"] = adjustments
    data.update(_combined_levels(views))
    if closed:
        data["closed_at"] = max(view.data["closed_at"] for view in views)
        data["catalog"] = first.get("catalog")
    return StateRow(data)


def kind_of(metric: str, kinds: Mapping[str, str], catalog: MeterCatalog) -> Aggregation | None:
    """The kind a metric was counted with: as its state rows record it, else as the catalog says."""
    if metric in kinds:
        return Aggregation(kinds[metric])
    meter = catalog.get(metric)
    return meter.aggregation if meter is not None else None


def _combined(
    stored: Sequence[Mapping[str, Any]], kinds: Mapping[str, str], catalog: MeterCatalog
) -> dict[str, list[Any]]:
    metrics = sorted({metric for cells in stored for metric in cells})
    combined: dict[str, list[Any]] = {}
    for metric in metrics:
        cells = [Cell.from_json(cells[metric]) for cells in stored if metric in cells]
        kind = kind_of(metric, kinds, catalog)
        if kind is None and len(cells) > 1:
            # Rows written before they recorded kinds have one shard; a metric of several is always recorded.
            log.warning("%s: no kind recorded or in the catalog; its shards' figures are added", metric)
            kind = Aggregation.SUM
        cell = cells[0] if kind is None else combine_shards(kind, cells)
        assert cell is not None
        combined[metric] = cell.to_json()
    return combined


def _combined_levels(views: Sequence[StateRow]) -> dict[str, Any]:
    """Time-weighted integrals of several shards: each resource is in one shard, so closed parts, Ls and Ms add;
    the latest point is the latest of any."""
    figures: dict[str, Integral] = {}
    instants: dict[str, int] = {}
    for view in views:
        for metric in view.data.get("tw", {}):
            figures[metric] = figures.get(metric, Integral()).plus(view.levels(metric))
        for metric, at in view.data.get("twt", {}).items():
            instants[metric] = max(instants.get(metric, int(at)), int(at))
    if not figures and not any(view.carried for view in views):
        return {}
    combined: dict[str, Any] = {"tw": {metric: figure.to_json() for metric, figure in figures.items()}, "twt": instants}
    for part in ("twu", "twc"):
        sums: dict[str, Decimal] = {}
        for view in views:
            for metric, text in view.data.get(part, {}).items():
                sums[metric] = decimals.add(sums.get(metric, decimals.ZERO), Decimal(text))
        if sums:
            combined[part] = {metric: decimals.to_str(value) for metric, value in sums.items()}
    combined["twk"] = all(view.carried for view in views)
    return combined


def _view(state: Row | StateRow) -> StateRow:
    return state if isinstance(state, StateRow) else StateRow(state.data)
