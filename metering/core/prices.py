"""Prices: how a plan prices a meter's period figure (API.md "Prices and invoices"), as typed, checked models.

A price is `per_unit`, `package`, `graduated` or `volume`; it is per `unit_size` units of the meter (the
billing unit: "per 1K calls" is a unit_size of 1000), after `included` units free each period. Tiered models
list their tiers in ascending order of `up_to` (in the meter's units, applied to the billable quantity); only
the last tier has no `up_to`. Every number is a decimal string or an integer, never a TOML float, and none is
negative. The plan catalog (quotas/plans.py) reads these from `plans.toml`; rating (billing/rating.py) applies
them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

from metering.core import decimals


class PriceModel(StrEnum):
    PER_UNIT = "per_unit"
    PACKAGE = "package"
    GRADUATED = "graduated"
    VOLUME = "volume"

    @property
    def is_tiered(self) -> bool:
        return self in (PriceModel.GRADUATED, PriceModel.VOLUME)


def price_number(value: Any) -> Decimal:
    """A decimal string or an integer, at least 0. Never a TOML float: 0.1 as a double is not 0.1, and a price
    decides what a customer pays."""
    if isinstance(value, bool):
        raise ValueError('must be a decimal string such as "0.25", or an integer')
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
        raise ValueError('must be a decimal string such as "0.25", or an integer')
    decimals.check_bounds(number)
    if number < 0:
        raise ValueError("must not be negative")
    return number


PriceNumber = Annotated[Decimal, BeforeValidator(price_number)]


def places(value: Decimal) -> int:
    """Digits after the point, trailing zeros not counted ("2.50" has 1)."""
    exponent = value.normalize(decimals.EXACT).as_tuple().exponent
    assert isinstance(exponent, int)
    return max(-exponent, 0)


class Tier(BaseModel):
    """Units of the billable quantity in (the tier before's `up_to`, `up_to`], priced at `unit_price` per billing
    unit; `flat_fee` once when any of them falls in it (graduated) or when the quantity does (volume)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    up_to: PriceNumber | None = None
    unit_price: PriceNumber
    flat_fee: PriceNumber = Decimal(0)


@dataclass(frozen=True, slots=True)
class Band:
    """A tier with its lower bound: it holds the units in (lower, upper]; upper None is no bound."""

    index: int
    lower: Decimal
    upper: Decimal | None
    tier: Tier


class Price(BaseModel):
    """One meter's price in a plan."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: PriceModel
    unit_size: PriceNumber = Decimal(1)
    included: PriceNumber = Decimal(0)
    unit_price: PriceNumber | None = None
    tiers: tuple[Tier, ...] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.unit_size == 0:
            raise ValueError("unit_size must be greater than 0 (prices are per unit_size units)")
        if self.model.is_tiered:
            if self.unit_price is not None:
                raise ValueError(f"a {self.model} price takes its unit prices from `tiers`, not `unit_price`")
            if not self.tiers:
                raise ValueError(f"a {self.model} price needs `tiers` (the last one without up_to)")
            _check_tiers(self.tiers)
        else:
            if self.tiers is not None:
                raise ValueError(f"a {self.model} price has no `tiers` (use graduated or volume)")
            if self.unit_price is None:
                raise ValueError(f"a {self.model} price needs `unit_price` (per unit_size units)")
        return self

    def bands(self) -> Iterator[Band]:
        lower = decimals.ZERO
        for index, tier in enumerate(self.tiers or ()):
            yield Band(index, lower, tier.up_to, tier)
            if tier.up_to is not None:
                lower = tier.up_to


def _check_tiers(tiers: tuple[Tier, ...]) -> None:
    last = len(tiers) - 1
    previous = decimals.ZERO
    for index, tier in enumerate(tiers):
        if index < last and tier.up_to is None:
            raise ValueError(f"tiers[{index}] needs up_to: only the last tier is unbounded")
        if index == last and tier.up_to is not None:
            raise ValueError(f"the last tier (tiers[{index}]) must have no up_to: it prices every unit above the rest")
        if tier.up_to is not None:
            if tier.up_to <= previous:
                bound = "0" if index == 0 else f"tiers[{index - 1}].up_to ({decimals.to_str(previous)})"
                raise ValueError(
                    f"tiers must ascend: tiers[{index}].up_to ({decimals.to_str(tier.up_to)}) is not above {bound}"
                )
            previous = tier.up_to


@dataclass(frozen=True, slots=True)
class Pricing:
    """What rating needs of a tenant's plan: its name and catalog version (statements record both), the
    currency, the base fee per period (None: none), and the prices per metric (a metric left out costs 0)."""

    plan: str
    version: str
    currency: str
    base_fee: Decimal | None = None
    prices: Mapping[str, Price] = field(default_factory=dict)


# The prices a tenant's period is rated with, by tenant and period end: those of the plan it had at the end.
PricingAt = Callable[[str, datetime], Pricing]
