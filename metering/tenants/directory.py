"""Per-tenant settings: plan, limit overrides, and the histories of billing terms (anchor day and time zone)
and of plans (plan_history.py: a period is rated with the plan in force at its end).

One row per tenant in the tenants table. The period schedule and the quota checks read it through a short cache,
so the aggregator's hot path costs a dictionary lookup. That cache is why a change of terms takes effect at the
first period boundary at least `SETTLE` after the change: by then every instance has read the new history, so
no instance files an event by terms that are no longer in force. Plan and limit changes apply at once: an
operator raising a blocked customer's limit expects the next quota check to see it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from metering.core import decimals
from metering.core.clock import format_timestamp
from metering.core.decimals import DecimalText
from metering.core.events import FieldError
from metering.core.limits import Limits
from metering.core.meters import MeterCatalog
from metering.core.periods import (
    DEFAULT_HISTORY,
    MAX_ANCHOR_DAY,
    MIN_ANCHOR_DAY,
    BillingPeriod,
    History,
    Terms,
    TermsError,
    change_terms,
    check_history,
    period_in,
)
from metering.quotas.plans import Plan, PlanCatalog, resolve_limits
from metering.quotas.ratelimit import RateLimit
from metering.stores import CommitConflict, Create, Replace, Row, RowTable
from metering.tenants.plan_history import PlanHistory, change_plan, history_from_json, history_json, plan_before

SETTINGS_ROW = "settings"
SETTLE = timedelta(minutes=10)
CACHE_SECONDS = 60.0


class LimitPair(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    soft: DecimalText | None = None
    hard: DecimalText | None = None


class TenantUpdate(BaseModel):
    """PUT /api/manage/tenants/{tenant_id}: every field optional; a limit set to null removes the override."""

    model_config = ConfigDict(extra="forbid")

    plan: str | None = None
    # When `plan` takes effect: now when omitted; earlier for a change backdated into a period not closed yet.
    plan_effective_from: AwareDatetime | None = None
    limits: dict[str, LimitPair | None] | None = None
    billing_anchor_day: Annotated[int, Field(ge=MIN_ANCHOR_DAY, le=MAX_ANCHOR_DAY, strict=True)] | None = None
    timezone: str | None = None


class PeriodView(BaseModel):
    start: datetime
    end: datetime


class TermsView(BaseModel):
    billing_anchor_day: int
    timezone: str
    effective_from: datetime | None


class PlanChangeView(BaseModel):
    plan: str
    effective_from: datetime | None


class TenantSettings(BaseModel):
    """A tenant's settings as stored: `billing_anchor_day` and `timezone` are the latest terms, in force from
    `terms_effective_from` (null: since always); `terms` is their whole history."""

    tenant_id: str
    plan: str
    limits: dict[str, LimitPair]
    billing_anchor_day: int
    timezone: str
    terms_effective_from: datetime | None
    current_period: PeriodView
    terms: list[TermsView]
    # Every plan change with when it took effect (null: since the tenant was first seen); empty for a tenant
    # never assigned a plan, which is on the default one.
    plan_history: list[PlanChangeView] = Field(default_factory=list)


class TenantError(ValueError):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field} {e.message}" for e in errors))
        self.errors = errors


class ConcurrentUpdate(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class TenantRecord:
    plan: str | None
    limits: Mapping[str, Limits]
    history: History
    etag: str | None = None
    plans: PlanHistory = ()

    def to_json(self, now: str) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "limits": {
                metric: {"soft": _text(pair.soft), "hard": _text(pair.hard)} for metric, pair in self.limits.items()
            },
            "terms": [
                {
                    "from": None if t.effective_from is None else t.effective_from.isoformat(),
                    "anchor": t.anchor_day,
                    "tz": t.timezone,
                }
                for t in self.history
            ],
            "plans": history_json(self.plans),
            "updated": now,
        }

    @classmethod
    def from_row(cls, row: Row) -> TenantRecord:
        data = row.data
        limits = {
            metric: Limits(_decimal(pair["soft"]), _decimal(pair["hard"])) for metric, pair in data["limits"].items()
        }
        history = check_history(
            [
                Terms(t["anchor"], t["tz"], None if t["from"] is None else datetime.fromisoformat(t["from"]))
                for t in data["terms"]
            ]
        )
        return cls(data["plan"], limits, history, row.etag, history_from_json(data.get("plans"), data["plan"]))


DEFAULT_RECORD = TenantRecord(None, {}, DEFAULT_HISTORY)


def _text(value: Any) -> str | None:
    return None if value is None else decimals.to_str(value)


def _decimal(text: str | None) -> Any:
    return None if text is None else decimals.from_str(text)


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

    def limits(self, tenant_id: str, metric: str) -> Limits:
        return resolve_limits(self.plan_of(tenant_id), self.record(tenant_id).limits, metric)

    def rate(self, tenant_id: str) -> RateLimit | None:
        return self.plan_of(tenant_id).rate

    def settings(self, tenant_id: str, record: TenantRecord | None = None) -> TenantSettings:
        record = record or self.record(tenant_id)
        latest = record.history[-1]
        period = period_in(record.history, self.clock())
        return TenantSettings(
            tenant_id=tenant_id,
            plan=record.plan or self.plans.default.name,
            limits={metric: LimitPair(soft=pair.soft, hard=pair.hard) for metric, pair in record.limits.items()},
            billing_anchor_day=latest.anchor_day,
            timezone=latest.timezone,
            terms_effective_from=latest.effective_from,
            current_period=PeriodView(start=period.start, end=period.end),
            terms=[
                TermsView(billing_anchor_day=t.anchor_day, timezone=t.timezone, effective_from=t.effective_from)
                for t in record.history
            ],
            plan_history=[PlanChangeView(plan=c.plan, effective_from=c.effective_from) for c in record.plans],
        )

    # -- writes -------------------------------------------------------------------------------------------

    def update(self, tenant_id: str, change: TenantUpdate) -> TenantSettings:
        """Apply a change under the row's ETag; raises TenantError for a change that breaks a rule."""
        for _attempt in range(5):
            row = self.table.read(tenant_id, [SETTINGS_ROW]).get(SETTINGS_ROW)
            current = DEFAULT_RECORD if row is None else TenantRecord.from_row(row)
            updated = self._changed(tenant_id, current, change)
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

    def _changed(self, tenant_id: str, current: TenantRecord, change: TenantUpdate) -> TenantRecord:
        errors: list[FieldError] = []
        plan, plans = current.plan, current.plans
        if change.plan is not None:
            if self.plans.get(change.plan) is None:
                errors.append(FieldError(0, "plan", f"must be a plan of the catalog ({', '.join(self.plans.names)})"))
            effective = self._plan_start(tenant_id, current.history, change.plan_effective_from, errors)
            plan, plans = change.plan, change_plan(current.plans, change.plan, effective)
        elif change.plan_effective_from is not None:
            errors.append(FieldError(0, "plan_effective_from", "needs plan: the plan that takes effect then"))
        limits = dict(current.limits)
        for metric, pair in (change.limits or {}).items():
            where = f"limits.{metric}"
            if self.catalog.get(metric) is None:
                errors.append(FieldError(0, where, "must name a meter of the catalog"))
            elif pair is None:
                limits.pop(metric, None)
            elif pair.soft is None and pair.hard is None:
                errors.append(FieldError(0, where, "needs soft, hard or both (null removes the override)"))
            else:
                errors.extend(_check_pair(where, pair))
                limits[metric] = Limits(pair.soft, pair.hard)
        history = current.history
        latest = history[-1]
        anchor = change.billing_anchor_day if change.billing_anchor_day is not None else latest.anchor_day
        timezone = change.timezone if change.timezone is not None else latest.timezone
        try:
            terms = Terms(anchor, timezone)
        except TermsError as error:
            errors.append(FieldError(0, "timezone", str(error)))
        else:
            # Pending terms are compared with what is in force: changing back before they apply cancels them.
            history = change_terms(history, terms, self.clock() + SETTLE)
        if errors:
            raise TenantError(errors)
        return TenantRecord(plan, limits, history, plans=plans)

    def _plan_start(
        self, tenant_id: str, history: History, requested: datetime | None, errors: list[FieldError]
    ) -> datetime:
        now = self.clock()
        if requested is None:
            return now
        if requested > now:
            errors.append(FieldError(0, "plan_effective_from", "must not be in the future: a plan change applies now"))
        else:
            period = period_in(history, requested)
            if self.closed(tenant_id, period):
                errors.append(
                    FieldError(
                        0,
                        "plan_effective_from",
                        f"falls in the billing period starting {period.key}, which is closed: its statement is final",
                    )
                )
        return requested


def _check_pair(where: str, pair: LimitPair) -> list[FieldError]:
    errors = []
    for name, value in (("soft", pair.soft), ("hard", pair.hard)):
        if value is None:
            continue
        try:
            decimals.check_bounds(value)
        except decimals.QuantityError as error:
            errors.append(FieldError(0, f"{where}.{name}", str(error)))
            continue
        if value < 0:
            errors.append(FieldError(0, f"{where}.{name}", "must not be negative"))
    if pair.soft is not None and pair.hard is not None and pair.soft > pair.hard:
        errors.append(FieldError(0, f"{where}.soft", "must not be greater than hard"))
    return errors
