"""The models of the HTTP contract that clients share (docs/api.md explains the routes; `GET /api/openapi.json`,
generated from these and the handlers' other models, is the reference).

The client (`metering.client`) imports this module and `metering.core` only, so what is defined here may import
nothing but the core.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from metering.core.decimals import DecimalText
from metering.core.limits import Decision
from metering.core.meters import Aggregation, GroupKind
from metering.core.periods import PeriodStatus

# Where the dev host serves the routes (`metering dev`, port 7071): the client's and the command line's default.
DEV_HOST_URL = "http://127.0.0.1:7071/api"
# A request of events: at most this many bytes and events.
MAX_BODY_BYTES = 1024 * 1024
MAX_EVENTS = 1000


def _absent(value: object) -> bool:
    return value is None


# A sampled meter's figures are estimates: reads add these two, and other meters' reads are as they always were.
def _estimate() -> Any:
    return Field(None, exclude_if=_absent, description="true: the figure is an estimate from sampled events")


def _error_bound() -> Any:
    return Field(
        None,
        exclude_if=_absent,
        description="Sampled meters: the estimate's 95% error bound (1.96 standard errors, rounded up to 12 places)",
    )


class Accepted(BaseModel):
    """202 of POST /api/events: every event durably handed to the transport, with its id in request order."""

    accepted: int
    event_ids: list[str]


class UsageAggregate(BaseModel):
    """A tenant's usage of one meter over one billing period."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    tenant_id: str
    metric: str
    unit: str
    aggregation: Aggregation
    period_start: datetime
    period_end: datetime
    status: PeriodStatus
    total: DecimalText
    event_count: int
    last_updated: datetime | None
    estimate: bool | None = _estimate()
    error_bound: DecimalText | None = _error_bound()
    level: DecimalText | None = Field(
        None, exclude_if=_absent, description="time_weighted meters: the level now (or at the period end)"
    )
    average: DecimalText | None = Field(
        None,
        exclude_if=_absent,
        description="time_weighted meters: total / hours elapsed in the period (the whole period once ended), "
        "rounded half-even to 12 places: for a monthly period of a GB meter, the GB-months billed",
    )


class GroupTotal(BaseModel):
    """One group of a breakdown by a dimension. `kind` says which: `value` (the events with the value `key`),
    `absent` (the events without the dimension) or `overflow` (values past the meter's `max_group_values`);
    `key` is null for the last two, as it always was for the overflow bucket. The groups add up to the total."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    key: str | None
    total: DecimalText
    event_count: int
    kind: GroupKind = GroupKind.VALUE
    estimate: bool | None = _estimate()
    error_bound: DecimalText | None = _error_bound()


class UsageResponse(UsageAggregate):
    """GET /api/usage/{tenant_id}/{metric}: the aggregate, with `groups` when `group_by` was asked for."""

    groups: list[GroupTotal] | None = None


class UsageBucket(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)

    start: datetime
    end: datetime
    total: DecimalText
    event_count: int
    estimate: bool | None = _estimate()
    error_bound: DecimalText | None = _error_bound()


class HistoryResponse(BaseModel):
    items: list[UsageBucket]


class QuotaDecision(BaseModel):
    """GET /api/quota/{tenant_id}/{metric}."""

    model_config = ConfigDict(frozen=True)

    decision: Decision
    current: DecimalText
    requested: DecimalText
    projected: DecimalText
    soft_limit: DecimalText | None
    hard_limit: DecimalText | None
    remaining: DecimalText | None
    period_end: datetime
