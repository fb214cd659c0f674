"""Per-tenant settings, read through a cache and written under ETags: plan, limit overrides, and the history of
billing terms (anchor day and time zone). What a record holds and the rules a change keeps are records.py's.

One row per tenant in the tenants table. The period schedule and the quota checks read it through a short cache,
so the aggregator's hot path costs a dictionary lookup. That cache is why a change of terms takes effect at the
first period boundary at least `SETTLE` after the change: by then every instance has read the new history, so
no instance files an event by terms that are no longer in force; a change of shards waits for the same reason.
Plan and limit changes apply at once: an operator raising a blocked customer's limit expects the next quota
check to see it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from metering.core.clock import format_timestamp
from metering.core.limits import Limits
from metering.core.meters import MeterCatalog
from metering.core.periods import BillingPeriod, History
from metering.core.shards import ShardHistory
from metering.quotas.plans import Plan, PlanCatalog, resolve_limits
from metering.quotas.ratelimit import RateLimit
from metering.stores import CommitConflict, Create, Replace, RowTable
from metering.tenants.plan_history import plan_before
from metering.tenants.records import (
    DEFAULT_RECORD,
    SETTINGS_ROW,
    ConcurrentUpdate,
    TenantRecord,
    TenantSettings,
    TenantUpdate,
    apply_change,
    settings_view,
)

SETTLE = timedelta(minutes=10)
CACHE_SECONDS = 60.0


class TenantDirectory:
    def __init__(
        self,
        table: RowTable,
        plans: PlanCatalog,
        catalog: MeterCatalog,
        *,
        clock: Callable[[], datetime],
        cache_seconds: float = CACHE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        closed: Callable[[str, BillingPeriod], bool] | None = None,
    ) -> None:
        # Whether a tenant's period is closed, so no plan change is backdated into it. Without a way to know,
        # every period that has ended may be.
        self.closed = closed or (lambda _tenant, period: period.end <= self.clock())
        self.table = table
        self.plans = plans
        self.catalog = catalog
        self.clock = clock
        self.cache_seconds = cache_seconds
        self.monotonic = monotonic
        self._cache: dict[str, tuple[float, TenantRecord]] = {}

    # -- reads (cached) -----------------------------------------------------------------------------------

    def record(self, tenant_id: str) -> TenantRecord:
        now = self.monotonic()
        cached = self._cache.get(tenant_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        row = self.table.read(tenant_id, [SETTINGS_ROW]).get(SETTINGS_ROW)
        record = DEFAULT_RECORD if row is None else TenantRecord.from_row(row)
        if cached is not None and cached[1].history == record.history:
            # Keep the very same history object: the schedule recognises it by identity on its fast path.
            record = dataclasses.replace(record, history=cached[1].history)
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[tenant_id] = (now + self.cache_seconds, record)
        return record

    def history(self, tenant_id: str) -> History:
        return self.record(tenant_id).history

    def shard_history(self, tenant_id: str) -> ShardHistory:
        return self.record(tenant_id).shards

    def plan_of(self, tenant_id: str) -> Plan:
        name = self.record(tenant_id).plan
        plan = self.plans.get(name) if name is not None else None
        # A plan removed from the catalog falls back to the default rather than failing every request.
        return plan if plan is not None else self.plans.default

    def plan_for_period(self, tenant_id: str, end: datetime) -> Plan:
        """The plan a period ending at `end` is rated with: the one in force at its end, read from the store
        (not the cache), so a change made just before the end is seen."""
        row = self.table.read(tenant_id, [SETTINGS_ROW]).get(SETTINGS_ROW)
        record = DEFAULT_RECORD if row is None else TenantRecord.from_row(row)
        name = plan_before(record.plans, end)
        plan = self.plans.get(name) if name is not None else None
        return plan if plan is not None else self.plans.default

    def tokens_not_before(self, tenant_id: str) -> datetime | None:
        """The tenant's revocation instant for portal tokens, read from the store (not the cache): a revoked
        token stops working on every instance at once."""
        row = self.table.read(tenant_id, [SETTINGS_ROW]).get(SETTINGS_ROW)
        return None if row is None else TenantRecord.from_row(row).tokens_not_before

    def limits(self, tenant_id: str, metric: str) -> Limits:
        return resolve_limits(self.plan_of(tenant_id), self.record(tenant_id).limits, metric)

    def rate(self, tenant_id: str) -> RateLimit | None:
        return self.plan_of(tenant_id).rate

    def settings(self, tenant_id: str, record: TenantRecord | None = None) -> TenantSettings:
        return settings_view(tenant_id, record or self.record(tenant_id), self.plans.default.name, self.clock())

    # -- writes -------------------------------------------------------------------------------------------

    def update(self, tenant_id: str, change: TenantUpdate) -> TenantSettings:
        """Apply a change under the row's ETag; raises TenantError for a change that breaks a rule."""
        for _attempt in range(5):
            row = self.table.read(tenant_id, [SETTINGS_ROW]).get(SETTINGS_ROW)
            current = DEFAULT_RECORD if row is None else TenantRecord.from_row(row)
            moment = self.clock()
            updated = apply_change(
                current,
                change,
                plans=self.plans,
                catalog=self.catalog,
                now=moment,
                not_before=moment + SETTLE,
                closed=lambda period: self.closed(tenant_id, period),
            )
            now = self.clock()
            operation = (
                Create(SETTINGS_ROW, updated.to_json(format_timestamp(now)))
                if row is None
                else Replace(SETTINGS_ROW, updated.to_json(format_timestamp(now)), row.etag)
            )
            try:
                self.table.commit(tenant_id, [operation])
            except CommitConflict:
                continue
            self._cache.pop(tenant_id, None)
            return self.settings(tenant_id, updated)
        raise ConcurrentUpdate(f"settings of {tenant_id} kept changing under this update")
