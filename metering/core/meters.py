"""The meter catalog: which metrics exist, their unit, and how their events aggregate.

The catalog is a TOML file (the default ships with the package, `METERING_METERS_FILE` overrides it). It is
checked when it is loaded: a bad catalog stops the app at start with a message naming the meter and the rule.
"""

from __future__ import annotations

import re
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from metering.core.catalog_files import read_toml

METER_NAME_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$"
DIMENSION_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"

# Group breakdowns live in the tenant's day row; a bound on their values per dimension and day (and a size
# budget, see ledger/rows.py) keeps that row small. Values past it are still counted, in the overflow bucket.
DEFAULT_MAX_GROUP_VALUES = 100
MAX_GROUP_VALUES_LIMIT = 500


class Aggregation(StrEnum):
    SUM = "sum"
    COUNT = "count"
    MAX = "max"
    MIN = "min"
    LATEST = "latest"
    UNIQUE_COUNT = "unique_count"
    # Each resource's level held over time (API.md "Time-weighted meters"): the period integral in unit-hours.
    TIME_WEIGHTED = "time_weighted"

    @property
    def is_level(self) -> bool:
        """A level (max, min, latest) is a state of the world, not an increment: quotas project it differently."""
        return self in (Aggregation.MAX, Aggregation.MIN, Aggregation.LATEST)

    @property
    def is_additive(self) -> bool:
        """Contributions that can be added and subtracted: only these can be cancelled."""
        return self in (Aggregation.SUM, Aggregation.COUNT)


class GroupKind(StrEnum):
    """What a group of a breakdown by one dimension holds. The groups of a period add up to its total by the
    meter's aggregation (sum and count add, max and min take the extreme, latest the latest)."""

    VALUE = "value"  # the events with one value of the dimension
    ABSENT = "absent"  # the events without the dimension
    OVERFLOW = "overflow"  # values past the meter's `max_group_values` for a day, together


class CatalogError(ValueError):
    """The meter catalog cannot be used; the message names the meter and the problem."""


Dimension = Annotated[str, StringConstraints(pattern=DIMENSION_PATTERN)]


class Meter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, StringConstraints(pattern=METER_NAME_PATTERN, max_length=64)]
    unit: Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^\S(.*\S)?$")]
    aggregation: Aggregation
    description: str = ""
    # For unique_count: the event field whose distinct values are counted: user_id, resource_id or
    # dimensions.<name>.
    field: str | None = None
    group_by: tuple[Dimension, ...] = ()
    allow_negative: bool = False
    max_group_values: int = Field(DEFAULT_MAX_GROUP_VALUES, ge=1, le=MAX_GROUP_VALUES_LIMIT)
    # Billing exports (billing/exports/): the Stripe meter's `event_name`, and the Marketplace plan's custom
    # dimension id, this meter's usage is sent as. Unset: not exported to that target.
    stripe_event_name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")] | None = None
    marketplace_dimension: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")] | None = None
    # Events may carry a sample_weight (one kept in k): figures are estimates with an error bound, so such a
    # meter is for analytics, never for limits or invoices.
    sampling: bool = False

    @property
    def is_sampled(self) -> bool:
        """Whether the meter's figures are estimates from sampled events: plans may neither limit nor price it."""
        return self.sampling

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.aggregation is Aggregation.UNIQUE_COUNT:
            if self.field is None:
                raise ValueError("a unique_count meter needs `field` (user_id, resource_id or dimensions.<name>)")
            if self.field not in ("user_id", "resource_id") and not (
                self.field.startswith("dimensions.") and _is_dimension(self.field.removeprefix("dimensions."))
            ):
                raise ValueError(f"`field` must be user_id, resource_id or dimensions.<name>, not {self.field!r}")
            if self.group_by:
                raise ValueError("a unique_count meter cannot have group_by (distinct values are not additive)")
        elif self.field is not None:
            raise ValueError("`field` only applies to unique_count meters")
        if self.allow_negative and self.aggregation in (Aggregation.COUNT, Aggregation.UNIQUE_COUNT):
            raise ValueError(f"allow_negative has no meaning for a {self.aggregation} meter")
        if len(set(self.group_by)) != len(self.group_by):
            raise ValueError("group_by lists a dimension twice")
        if self.aggregation is Aggregation.TIME_WEIGHTED and self.group_by:
            raise ValueError("a time_weighted meter cannot have group_by (a level is held per resource, not per event)")
        if self.aggregation in (Aggregation.MIN, Aggregation.LATEST) and (
            self.stripe_event_name is not None or self.marketplace_dimension is not None
        ):
            raise ValueError(
                f"a {self.aggregation} meter cannot be exported (stripe_event_name, marketplace_dimension): a target "
                "adds what it is sent, and a lowest or latest level is not a sum of changes"
            )
        if self.aggregation is Aggregation.TIME_WEIGHTED and (
            self.stripe_event_name is not None or self.marketplace_dimension is not None
        ):
            raise ValueError(
                "a time_weighted meter is not exported yet (stripe_event_name, marketplace_dimension): its hours' "
                "unit-hours are not sent to a target"
            )
        if self.sampling and (self.stripe_event_name is not None or self.marketplace_dimension is not None):
            raise ValueError("a sampled meter cannot be exported: its figures are estimates, not billable usage")
        if self.sampling and not self.aggregation.is_additive:
            raise ValueError(
                f"sampling applies to sum and count meters only: a sampled {self.aggregation} cannot be estimated"
            )
        return self


def _is_dimension(name: str) -> bool:
    return re.fullmatch(DIMENSION_PATTERN, name) is not None


class MeterCatalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    meters: dict[str, Meter]

    def get(self, name: str) -> Meter | None:
        return self.meters.get(name)

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self.meters))


def parse_catalog(document: dict[str, Any], source: str = "catalog") -> MeterCatalog:
    """Build a catalog from its TOML document, with errors that name the meter and the rule."""
    version = document.get("version")
    meters_doc = document.get("meters")
    unknown = set(document) - {"version", "meters"}
    if unknown:
        raise CatalogError(f"{source}: unknown top-level keys {sorted(unknown)} (expected version and [meters.*])")
    if not isinstance(version, str) or not version:
        raise CatalogError(f"{source}: `version` must be a non-empty string (statements record it)")
    if not isinstance(meters_doc, dict) or not meters_doc:
        raise CatalogError(f'{source}: no meters defined (expected [meters."<name>"] tables)')
    meters: dict[str, Meter] = {}
    for name, body in meters_doc.items():
        if not isinstance(body, dict):
            raise CatalogError(f"{source}: meter {name!r}: expected a table of settings")
        try:
            meters[name] = Meter.model_validate({"name": name, **body})
        except ValidationError as error:
            problems = "; ".join(_describe(e) for e in error.errors())
            raise CatalogError(f"{source}: meter {name!r}: {problems}") from None
    return MeterCatalog(version=version, meters=meters)


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def load_catalog(path: str | Path | None = None) -> MeterCatalog:
    """Load the catalog from `path`, or the default one shipped with the package."""
    document, source = read_toml(
        path, packaged="meters.toml", package=__package__, label="meter catalog", error=CatalogError
    )
    return parse_catalog(document, source)
