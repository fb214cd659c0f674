"""Plans: each plan's soft and hard limits per metric and period, its ingest rate limit, and its prices.

The plans are a TOML file (the default ships with the package; a path overrides it). It is checked when it is
loaded, against the meter catalog: a bad file stops the app at start with a message naming the plan, the
metric and the rule. A tenant is on a plan (the default one unless assigned) and may have per-metric
overrides; `resolve_limits` says which limits apply. A plan's `currency`, `base_fee` and `prices` (the models
of core/prices.py) are what its tenants' periods are rated with.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from metering.core import decimals
from metering.core.catalog_files import read_toml
from metering.core.limits import Limits
from metering.core.meters import Meter, MeterCatalog, load_catalog
from metering.core.money import DEFAULT_CURRENCY, minor_digits
from metering.core.prices import Price, PriceNumber, Pricing, places
from metering.quotas.ratelimit import RateLimit

PLAN_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"


class PlanCatalogError(ValueError):
    """The plans cannot be used; the message names the plan, the metric and the problem."""


def _limit(value: Any) -> Decimal:
    """A decimal string or an integer. Never a TOML float: 0.1 or 1e20 as a double is not the number written,
    and a limit decides whether a tenant is refused."""
    if isinstance(value, bool):
        raise ValueError('must be a decimal string such as "1000" or "2.5", or an integer')
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        raise ValueError(
            f'{value!r} is a TOML float, which cannot hold every decimal exactly: write it as a string, "{value!r}"'
        )
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, str):
        number = decimals.from_str(value)
    else:
        raise ValueError('must be a decimal string such as "1000" or "2.5", or an integer')
    decimals.check_bounds(number)
    if number < 0:
        raise ValueError("must not be negative")
    return number


LimitValue = Annotated[Decimal, BeforeValidator(_limit)]


def _currency(code: str) -> str:
    minor_digits(code)  # raises, naming the rule, for a code that is not an ISO 4217 currency with a minor unit
    return code


CurrencyCode = Annotated[str, AfterValidator(_currency)]


class MetricLimits(BaseModel):
    """A plan's limits for one metric over a period: above `soft` warns, above `hard` is denied."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    soft: LimitValue | None = None
    hard: LimitValue | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.soft is None and self.hard is None:
            raise ValueError("set soft, hard or both (leave the metric out for no limit)")
        if self.soft is not None and self.hard is not None and self.soft > self.hard:
            raise ValueError(
                f"soft ({decimals.to_str(self.soft)}) must not be above hard ({decimals.to_str(self.hard)})"
            )
        return self

    def as_limits(self) -> Limits:
        return Limits(soft=self.soft, hard=self.hard)


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, StringConstraints(pattern=PLAN_NAME_PATTERN)]
    description: str = ""
    # None: no ingest rate limit.
    rate: RateLimit | None = None
    limits: dict[str, MetricLimits] = Field(default_factory=dict)
    currency: CurrencyCode = DEFAULT_CURRENCY
    # Charged once per period, as a line of kind "fee"; None: no such line.
    base_fee: PriceNumber | None = None
    prices: dict[str, Price] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _payable(self) -> Self:
        # A fee is charged as written, so it must be an amount of the currency (no fraction of a cent).
        digits = minor_digits(self.currency)
        if self.base_fee is not None and places(self.base_fee) > digits:
            raise ValueError(f"base_fee: {self.currency} amounts have {digits} digits after the point at most")
        for metric, price in self.prices.items():
            for index, tier in enumerate(price.tiers or ()):
                if places(tier.flat_fee) > digits:
                    raise ValueError(
                        f"metric {metric!r}: price: tiers[{index}].flat_fee: {self.currency} amounts have "
                        f"{digits} digits after the point at most"
                    )
        return self

    def limits_for(self, metric: str) -> Limits:
        """The plan's limits for `metric`; empty (unlimited) when the plan names none."""
        found = self.limits.get(metric)
        return Limits() if found is None else found.as_limits()


class PlanCatalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    default_plan: str
    plans: dict[str, Plan]

    @model_validator(mode="after")
    def _default_exists(self) -> Self:
        if self.default_plan not in self.plans:
            raise ValueError(f"default_plan {self.default_plan!r} is not one of the plans {sorted(self.plans)}")
        return self

    def get(self, name: str) -> Plan | None:
        return self.plans.get(name)

    @property
    def default(self) -> Plan:
        """The plan of a tenant that was not assigned one."""
        return self.plans[self.default_plan]

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self.plans))

    def pricing(self, plan: Plan) -> Pricing:
        """What rating needs of `plan`, with this catalog's version (statements record it)."""
        return Pricing(plan.name, self.version, plan.currency, plan.base_fee, plan.prices)


def resolve_limits(plan: Plan, overrides: Mapping[str, Limits], metric: str) -> Limits:
    """The limits that apply to a tenant on `plan` for `metric`.

    A tenant's override for a metric replaces the plan's pair for that metric entirely, never field by field:
    an operator who sets only a hard limit means exactly that limit, and must not inherit a soft one chosen
    for the plan's hard limit, which may now be above it or meaningless. An empty override lifts the limits.
    """
    override = overrides.get(metric)
    return plan.limits_for(metric) if override is None else override


def parse_plans(document: dict[str, Any], catalog: MeterCatalog, source: str = "plans") -> PlanCatalog:
    """Build the plans from their TOML document, with errors that name the plan, the metric and the rule."""
    unknown = set(document) - {"version", "default_plan", "plans"}
    if unknown:
        raise PlanCatalogError(
            f"{source}: unknown top-level keys {sorted(unknown)} (expected version, default_plan and [plans.*])"
        )
    version = document.get("version")
    if not isinstance(version, str) or not version or len(version) > 64:
        raise PlanCatalogError(f"{source}: `version` must be a non-empty string of at most 64 characters")
    plans_doc = document.get("plans")
    if not isinstance(plans_doc, dict) or not plans_doc:
        raise PlanCatalogError(f"{source}: no plans defined (expected [plans.<name>] tables)")
    default_plan = document.get("default_plan")
    if not isinstance(default_plan, str) or not default_plan:
        raise PlanCatalogError(f"{source}: `default_plan` must name one of the plans {sorted(plans_doc)}")
    if default_plan not in plans_doc:
        raise PlanCatalogError(f"{source}: default_plan {default_plan!r} is not one of the plans {sorted(plans_doc)}")
    plans: dict[str, Plan] = {}
    for name, body in plans_doc.items():
        if not isinstance(body, dict):
            raise PlanCatalogError(f"{source}: plan {name!r}: expected a table of settings")
        try:
            plan = Plan.model_validate({"name": name, **body})
        except ValidationError as error:
            problems = "; ".join(_describe(e) for e in error.errors())
            raise PlanCatalogError(f"{source}: plan {name!r}: {problems}") from None
        _check_metrics(plan, catalog, f"{source}: plan {name!r}")
        plans[name] = plan
    return PlanCatalog(version=version, default_plan=default_plan, plans=plans)


def _check_metrics(plan: Plan, catalog: MeterCatalog, where: str) -> None:
    """Every metric the plan limits or prices is a meter of the catalog, and every one it limits or prices can be."""
    for metric in plan.limits:
        meter = catalog.get(metric)
        problem = _not_a_meter(metric, catalog) if meter is None else unlimitable(meter)
        if problem is not None:
            raise PlanCatalogError(f"{where}: metric {metric!r}: {problem}")
    for metric in plan.prices:
        meter = catalog.get(metric)
        problem = _not_a_meter(metric, catalog) if meter is None else _unpriceable(meter)
        if problem is not None:
            raise PlanCatalogError(f"{where}: metric {metric!r}: price: {problem}")


def _not_a_meter(metric: str, catalog: MeterCatalog) -> str:
    message = f"not a meter of the meter catalog (version {catalog.version})"
    close = difflib.get_close_matches(metric, catalog.names, n=1)
    return f"{message}; did you mean {close[0]!r}?" if close else message


def _unpriceable(meter: Meter) -> str | None:
    """Why a meter's figure cannot be billed, or None. A sampled meter's figure is an estimate; every other kind
    has an exact period figure."""
    if meter.is_sampled:
        return "a sampled meter's figures are estimates, and an invoice cannot bill an estimate"
    return None


def unlimitable(meter: Meter) -> str | None:
    """Why a meter cannot have limits, or None: a sampled meter's estimate would refuse or allow a tenant by chance."""
    if meter.is_sampled:
        return "a sampled meter's figures are estimates, and a quota cannot be decided on an estimate"
    return None


def _describe(error: Any) -> str:
    """`metric 'api.requests': soft: must not be negative` rather than pydantic's `limits.api.requests.soft`,
    and `metric 'api.requests': price: tiers[1].up_to: ...` for a price."""
    loc = list(error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if loc[:1] in (["limits"], ["prices"]) and len(loc) > 1:
        where = f"metric {loc[1]!r}" + (": price" if loc[0] == "prices" else "")
        rest = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc[2:]).removeprefix(".")
        where += f": {rest}" if rest else ""
    else:
        where = ".".join(str(part) for part in loc)
    return f"{where}: {message}" if where else message


def load_plans(path: str | Path | None = None, catalog: MeterCatalog | None = None) -> PlanCatalog:
    """Load the plans from `path`, or the default ones shipped with the package, and check every metric they
    limit against `catalog` (the packaged meter catalog if None)."""
    document, source = read_toml(
        path, packaged="plans.toml", package=__package__, label="plans", error=PlanCatalogError
    )
    return parse_plans(document, load_catalog() if catalog is None else catalog, source)
