"""Carrying time-weighted levels into the next period, once, when a period closes (DESIGN.md 5.3).

A resource keeps its level into later periods until it reports again. Until its period closes, the next period
reads each resource's opening level through from it: the first point of a resource in the new period takes the
level of its row there, and adds it from the period start. Closing writes the rest once, per shard of the new
period: every resource of the closed period whose level is not there yet gets its row (opening at its end level,
which holds from the period start), and a resource whose opening was read through before the closed period's
last points came in (its grace) is corrected to its final level, exactly as inserting a point at the period start
would change it. Each transaction carries its resources and their share of the integral together with the state
row, under its ETag; the last one marks the shard carried (`twk`), after which the aggregator adds no opening of its
own. A crash between transactions resumes: a resource row already there at its final level is done. The new period
is indexed, so a period with carried levels only still closes and bills them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from metering.core import decimals, integrals
from metering.core.clock import format_timestamp
from metering.core.integrals import Integral, Point, Step
from metering.core.meters import Aggregation, Meter, MeterCatalog
from metering.core.periods import BillingPeriod, PeriodSchedule
from metering.ledger import commit, control, levels, rows
from metering.ledger.keys import STATE_ROW, level_buckets_key, partition_keys, points_key, resources
from metering.ledger.placement import value_shard
from metering.ledger.reader import end_levels
from metering.ledger.rows import StateRow
from metering.stores import CommitConflict, Create, Operation, Replace, Row, Store

log = logging.getLogger(__name__)

# Resource rows per transaction: with the history-bucket rows their corrections touch (at most one per day of a
# month and the first day's) and the state row, well inside the 100 operations of a transaction.
RESOURCES_PER_COMMIT = 60


@dataclass(frozen=True, slots=True)
class _Carried:
    meter: Meter
    resource: str
    level: Decimal


class LevelCarry:
    def __init__(self, store: Store, catalog: MeterCatalog, schedule: PeriodSchedule) -> None:
        self.store = store
        self.catalog = catalog
        self.schedule = schedule

    def carry(self, tenant_id: str, period: BillingPeriod, now: datetime) -> int:
        """Carry the closed `period`'s levels into the next one; returns how many resources were carried."""
        meters = [m for m in self.catalog.meters.values() if m.aggregation is Aggregation.TIME_WEIGHTED]
        if not meters:
            return 0
        following = self.schedule.period_at(tenant_id, period.end)
        shards = self.schedule.shards(tenant_id, following)
        ends: dict[int, dict[str, _Carried]] = {}
        for partition in partition_keys(tenant_id, period, self.schedule.shards(tenant_id, period)):
            for meter in meters:
                found = self.store.usage.range(partition, *resources(meter.name))
                levels_at_end = end_levels(self.store.usage, partition, found)
                for row in found:
                    resource = row.data["x"]
                    shard = value_shard(meter, resource, shards) if shards > 1 else 0
                    ends.setdefault(shard, {})[row.key] = _Carried(meter, resource, levels_at_end[row.key])
        if not any(item.level for found in ends.values() for item in found.values()):
            return 0
        control.index_open(self.store.control, tenant_id, following)
        carried = 0
        for shard, partition in enumerate(partition_keys(tenant_id, following, shards)):
            carried += self._carry_shard(partition, tenant_id, following, ends.get(shard, {}), now)
        return carried

    def _carry_shard(
        self, partition: str, tenant_id: str, period: BillingPeriod, ends: Mapping[str, _Carried], now: datetime
    ) -> int:
        keys = sorted(ends)
        carried = 0
        for _attempt in range(20):
            state = self.store.usage.read(partition, [STATE_ROW]).get(STATE_ROW)
            view = StateRow(state.data) if state is not None else None
            if view is not None and view.carried:
                return carried
            if view is not None and view.is_closed:
                log.error("%s closed before the previous period's levels were carried into it", partition)
                return carried
            existing = self.store.usage.read(partition, keys) if keys else {}
            pending = [key for key in keys if _needs_carry(existing.get(key), ends[key].level)]
            batch = pending[:RESOURCES_PER_COMMIT]
            last = len(pending) <= RESOURCES_PER_COMMIT
            try:
                operations = self._operations(
                    partition,
                    tenant_id=tenant_id,
                    period=period,
                    state=state,
                    batch=batch,
                    existing=existing,
                    ends=ends,
                    now=now,
                    last=last,
                )
                self.store.usage.commit(partition, operations)
            except CommitConflict:
                continue  # an aggregator commit landed first: read again
            carried += len(batch)
            if last:
                return carried
        raise RuntimeError(f"could not carry levels into {partition}: its rows kept changing")

    def _operations(
        self,
        partition: str,
        *,
        tenant_id: str,
        period: BillingPeriod,
        state: Row | None,
        batch: list[str],
        existing: Mapping[str, Row],
        ends: Mapping[str, _Carried],
        now: datetime,
        last: bool,
    ) -> list[Operation]:
        stamp = format_timestamp(now)
        start = integrals.micros(period.start)
        ops: list[Operation] = []
        changes = levels.LevelChanges()
        locate = levels.day_locator(
            lambda instant: self.schedule.day_of(tenant_id, instant).isoformat(),
            lambda day: self.schedule.day_bounds(tenant_id, datetime.fromisoformat(day).date())[1],
        )
        steps: list[tuple[str, Step]] = []
        carry: dict[str, Decimal] = {}
        for key in batch:
            item = ends[key]
            name = item.meter.name
            row = existing.get(key)
            opened = Decimal(row.data["o"]) if row is not None else decimals.ZERO
            delta = decimals.subtract(item.level, opened)
            first = self._first_point(partition, name, item.resource, row)
            # The opening is a point at the period start before every other: changing it is an insertion there.
            change = integrals.insertion(Point(start, "", item.level), None, first, opened)
            changes.integrals[name] = changes.integrals.get(name, Integral()).plus(change)
            steps.append((name, Step(start, delta)))
            if first is not None:
                steps.append((name, Step(first.at, decimals.negate(delta))))
            carry[name] = decimals.add(carry.get(name, decimals.ZERO), delta)
            if row is None:
                data = levels.new_resource(name, item.resource, item.level)
                ops.append(Create(key, {**data, "a": stamp}))
            else:
                ops.append(Replace(key, {**row.data, "o": decimals.to_str(item.level), "a": stamp}, row.etag))
        bucket_keys = {level_buckets_key(name, locate(step.at)[0]) for name, step in steps}
        stored = self.store.usage.read(partition, sorted(bucket_keys)) if bucket_keys else {}
        buckets = {key: stored.get(key) for key in bucket_keys}
        for name, step in steps:
            levels.add_step(changes, buckets, name, step, locate)
        for key, data in changes.rows.items():
            ops.append(commit.write(key, {**data, "a": stamp}, buckets[key]))
        base = state.data if state is not None else rows.new_state(tenant_id, period)
        data: dict[str, Any] = {**base, **rows.add_levels(base, changes.integrals, {}), "updated": stamp}
        totals = dict(base.get("twc", {}))
        for name, value in carry.items():
            totals[name] = decimals.to_str(decimals.add(Decimal(totals.get(name, "0")), value))
        data["twc"] = totals
        if last:
            data["twk"] = True
        ops.append(commit.write(STATE_ROW, data, state))
        return ops

    def _first_point(self, partition: str, metric: str, resource: str, row: Row | None) -> Point | None:
        """A resource's first point in the period (its first day's row), None without one."""
        if row is None or not row.data["days"]:
            return None
        key = points_key(metric, resource, row.data["days"][0])
        found = self.store.usage.read(partition, [key]).get(key)
        if found is None:
            return None
        at, order, level = found.data["pts"][0]
        return Point(int(at), order, Decimal(level))


def _needs_carry(row: Row | None, level: Decimal) -> bool:
    """A resource not yet in the period with a level to carry, or one whose opening is not its final level."""
    if row is None:
        return bool(level)
    return Decimal(row.data["o"]) != level
