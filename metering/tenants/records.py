"""A tenant's settings (pure): the models of the manage routes, the record as the tenants table keeps it, and the
rules a change must keep. directory.py reads and writes them.

    <tenant> | settings    {"plan", "limits": {<metric>: {"soft", "hard"}},
                            "terms": [{"from", "anchor", "tz"}], "plans": [{"from", "plan"}],
                            "links": {"stripe_customer_id", "marketplace_resource_id", "marketplace_plan_id"},
                            "shards": [{"from", "n"}], "updated", "tnb": <tokens_not_before, when set>}

`links` name the tenant at the billing targets its usage is exported to (billing/exports/).

Plans have a history like the billing terms (plan_history.py): a period is rated with the plan in force at its end.
Shards have one too (core/shards.py), changed at a period boundary like the terms: a period keeps the count in
force at its start.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from metering.core import decimals
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
    next_boundary,
    period_in,
)
from metering.core.shards import (
    DEFAULT_SHARDS,
    MAX_SHARDS,
    MIN_SHARDS,
    ShardHistory,
    ShardsError,
    change_shards,
)
from metering.core.shards import history_from_json as shards_from_json
from metering.core.shards import history_json as shards_json
from metering.quotas.plans import PlanCatalog, unlimitable
from metering.stores import Row
from metering.tenants.plan_history import PlanHistory, change_plan, history_from_json, history_json

SETTINGS_ROW = "settings"
# How far ahead of the server's clock a revocation instant may be: a client's clock runs a little ahead.
TOKENS_NOT_BEFORE_SKEW = timedelta(minutes=5)
# Stripe ids are ASCII letters, digits and underscores (cus_...); a Marketplace resource id is a SaaS subscription
# GUID or a managed application's resource usage id; a plan id is the offer's plan id.
STRIPE_CUSTOMER_PATTERN = r"^[A-Za-z0-9_]{1,255}$"
MARKETPLACE_RESOURCE_PATTERN = r"^[A-Za-z0-9._:/()-]{1,512}$"
MARKETPLACE_PLAN_PATTERN = r"^[A-Za-z0-9._-]{1,100}$"
LINK_FIELDS = ("stripe_customer_id", "marketplace_resource_id", "marketplace_plan_id")


def _link(pattern: str) -> Any:
    # An empty string removes the link.
    return Annotated[str, Field(pattern=f"(?:{pattern})|^$")] | None


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
    # Portal tokens issued before this instant are refused ("now": the server's clock); it only moves forward.
    tokens_not_before: AwareDatetime | Literal["now"] | None = None
    # Billing targets: the Stripe customer, and the Marketplace resource and plan, usage is exported to; an
    # empty string removes one.
    stripe_customer_id: _link(STRIPE_CUSTOMER_PATTERN) = None
    marketplace_resource_id: _link(MARKETPLACE_RESOURCE_PATTERN) = None
    marketplace_plan_id: _link(MARKETPLACE_PLAN_PATTERN) = None
    # How many store partitions (and hub partition keys) each period of the tenant is spread over, from the
    # first period boundary at least 10 minutes ahead, like new terms.
    shards: Annotated[int, Field(ge=MIN_SHARDS, le=MAX_SHARDS, strict=True)] | None = None


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


class ShardChangeView(BaseModel):
    shards: int
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
    # Portal tokens issued before it are refused (null: none revoked).
    tokens_not_before: datetime | None = None
    stripe_customer_id: str | None = None
    marketplace_resource_id: str | None = None
    marketplace_plan_id: str | None = None
    # The latest shard count, in force from `shards_effective_from` (null: since always), and every change.
    shards: int = 1
    shards_effective_from: datetime | None = None
    shard_history: list[ShardChangeView] = Field(default_factory=list)


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
    tokens_not_before: datetime | None = None
    # Billing target links by field name (LINK_FIELDS); absent: not linked.
    links: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def link(self, name: str) -> str | None:
        return self.links.get(name)

    shards: ShardHistory = DEFAULT_SHARDS

    def to_json(self, now: str) -> dict[str, Any]:
        data = {
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
            "links": dict(self.links),
            "shards": shards_json(self.shards),
            "updated": now,
        }
        if self.tokens_not_before is not None:
            data["tnb"] = self.tokens_not_before.isoformat()
        return data

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
        revoked = data.get("tnb")
        return cls(
            data["plan"],
            limits,
            history,
            row.etag,
            history_from_json(data.get("plans"), data["plan"]),
            None if revoked is None else datetime.fromisoformat(revoked),
            dict(data.get("links", {})),
            shards_from_json(data.get("shards")),
        )


DEFAULT_RECORD = TenantRecord(None, {}, DEFAULT_HISTORY)


def _text(value: Any) -> str | None:
    return None if value is None else decimals.to_str(value)


def _decimal(text: str | None) -> Any:
    return None if text is None else decimals.from_str(text)


def settings_view(tenant_id: str, record: TenantRecord, default_plan: str, now: datetime) -> TenantSettings:
    """A tenant's settings as the manage routes show them."""
    latest = record.history[-1]
    period = period_in(record.history, now)
    return TenantSettings(
        tenant_id=tenant_id,
        plan=record.plan or default_plan,
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
        tokens_not_before=record.tokens_not_before,
        **{name: record.link(name) for name in LINK_FIELDS},
        shards=record.shards[-1].shards,
        shards_effective_from=record.shards[-1].effective_from,
        shard_history=[ShardChangeView(shards=c.shards, effective_from=c.effective_from) for c in record.shards],
    )


def apply_change(
    current: TenantRecord,
    change: TenantUpdate,
    *,
    plans: PlanCatalog,
    catalog: MeterCatalog,
    now: datetime,
    not_before: datetime,
    closed: Callable[[BillingPeriod], bool],
) -> TenantRecord:
    """The record with `change` applied, or TenantError naming every rule it breaks. New terms take effect at the
    first period boundary from `not_before`; a plan now, or from `plan_effective_from` when that falls in a period
    `closed` says is not closed."""
    errors: list[FieldError] = []
    plan, plan_changes = current.plan, current.plans
    if change.plan is not None:
        if plans.get(change.plan) is None:
            errors.append(FieldError(0, "plan", f"must be a plan of the catalog ({', '.join(plans.names)})"))
        effective = _plan_start(current.history, change.plan_effective_from, now, closed, errors)
        plan, plan_changes = change.plan, change_plan(current.plans, change.plan, effective)
    elif change.plan_effective_from is not None:
        errors.append(FieldError(0, "plan_effective_from", "needs plan: the plan that takes effect then"))
    limits = dict(current.limits)
    for metric, pair in (change.limits or {}).items():
        where = f"limits.{metric}"
        meter = catalog.get(metric)
        if meter is None:
            errors.append(FieldError(0, where, "must name a meter of the catalog"))
        elif pair is None:
            limits.pop(metric, None)
        elif (refusal := unlimitable(meter)) is not None:
            errors.append(FieldError(0, where, refusal))
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
        history = change_terms(history, terms, not_before)
    links = _changed_links(current.links, change, errors)
    revoked = _tokens_not_before(current.tokens_not_before, change.tokens_not_before, now, errors)
    shards = _shards(current.shards, change.shards, history, not_before, errors)
    if errors:
        raise TenantError(errors)
    return TenantRecord(
        plan, limits, history, plans=plan_changes, tokens_not_before=revoked, links=links, shards=shards
    )


def _tokens_not_before(
    current: datetime | None, requested: datetime | str | None, now: datetime, errors: list[FieldError]
) -> datetime | None:
    """The revocation instant after a change: it moves forward only, so a revoked token stays revoked."""
    if requested is None:
        return current
    instant = now if requested == "now" else requested
    assert isinstance(instant, datetime)
    if instant > now + TOKENS_NOT_BEFORE_SKEW:
        errors.append(FieldError(0, "tokens_not_before", 'must not be in the future ("now" revokes every token)'))
    elif current is not None and instant < current:
        errors.append(
            FieldError(
                0,
                "tokens_not_before",
                f"must not be before the current one ({current.isoformat()}): a revocation cannot be undone",
            )
        )
    else:
        # An instant a little ahead (a client's clock) is now: every token issued so far is revoked either way.
        return min(instant, now)
    return current


def _changed_links(current: Mapping[str, str], change: TenantUpdate, errors: list[FieldError]) -> dict[str, str]:
    links = dict(current)
    for name in LINK_FIELDS:
        value = getattr(change, name)
        if value == "":
            links.pop(name, None)
        elif value is not None:
            links[name] = value
    if ("marketplace_resource_id" in links) != ("marketplace_plan_id" in links):
        missing = "marketplace_plan_id" if "marketplace_resource_id" in links else "marketplace_resource_id"
        errors.append(
            FieldError(0, missing, "is needed too: a Marketplace usage event names both the resource and its plan")
        )
    return links


def _shards(
    current: ShardHistory, requested: int | None, history: History, not_before: datetime, errors: list[FieldError]
) -> ShardHistory:
    """The shard history with `requested` in force from the first boundary of the terms as they will be, like new
    terms; a period keeps the count in force at its start."""
    if requested is None:
        return current
    try:
        return change_shards(current, requested, next_boundary(history, not_before), not_before)
    except ShardsError as error:
        errors.append(FieldError(0, "shards", str(error)))
        return current


def _plan_start(
    history: History,
    requested: datetime | None,
    now: datetime,
    closed: Callable[[BillingPeriod], bool],
    errors: list[FieldError],
) -> datetime:
    if requested is None:
        return now
    if requested > now:
        errors.append(FieldError(0, "plan_effective_from", "must not be in the future: a plan change applies now"))
    else:
        period = period_in(history, requested)
        if closed(period):
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
