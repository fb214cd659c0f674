"""GET /api/usage/..., /history and /api/quota/...: reading usage back over HTTP."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from decimal import Decimal

from pydantic import BaseModel

from metering.api.http import Response, bad_request, bad_tenant, ok, problem
from metering.core import decimals
from metering.core.limits import Limits
from metering.core.periods import Granularity
from metering.ledger.reader import GroupTotal, RangeError, UnknownMeter, UsageAggregate, UsageBucket, UsageReader
from metering.quotas.decisions import decide


class UsageResponse(UsageAggregate):
    groups: list[GroupTotal] | None = None


class HistoryResponse(BaseModel):
    items: list[UsageBucket]


LimitsFor = Callable[[str, str], Limits]


def unlimited(tenant_id: str, metric: str) -> Limits:
    return Limits()


class Reads:
    def __init__(self, reader: UsageReader, limits_for: LimitsFor = unlimited) -> None:
        self.reader = reader
        self.limits_for = limits_for

    def usage(self, tenant_id: str, metric: str, params: Mapping[str, str]) -> Response:
        checked = self._check(tenant_id, metric)
        if checked is not None:
            return checked
        schedule = self.reader.schedule
        period = schedule.period_at(tenant_id, self.reader.clock())
        if "period" in params:
            start = _date(params["period"])
            if start is None:
                return bad_request("period", "must be a date, YYYY-MM-DD")
            found = schedule.period_starting(tenant_id, start)
            if found is None:
                return bad_request("period", f"{start} is not the first day of a billing period of {tenant_id}")
            period = found
        aggregate = self.reader.for_period(tenant_id, metric, period)
        groups = None
        if "group_by" in params:
            try:
                groups = self.reader.groups(tenant_id, metric, params["group_by"], period)
            except RangeError as error:
                return bad_request("group_by", str(error))
        if groups is None:
            return ok(aggregate)
        return ok(UsageResponse(**aggregate.model_dump(), groups=groups))

    def history(self, tenant_id: str, metric: str, params: Mapping[str, str]) -> Response:
        checked = self._check(tenant_id, metric)
        if checked is not None:
            return checked
        bounds = {}
        for name in ("start", "end"):
            value = _date(params.get(name, ""))
            if value is None:
                return bad_request(name, "is required: a date, YYYY-MM-DD (in the tenant's time zone)")
            bounds[name] = value
        try:
            granularity = Granularity(params.get("granularity", "day"))
        except ValueError:
            return bad_request("granularity", "must be hour, day or period")
        try:
            items = self.reader.history(tenant_id, metric, bounds["start"], bounds["end"], granularity)
        except RangeError as error:
            return bad_request("start", str(error))
        return ok(HistoryResponse(items=items))

    def quota(self, tenant_id: str, metric: str, params: Mapping[str, str]) -> Response:
        checked = self._check(tenant_id, metric)
        if checked is not None:
            return checked
        requested = Decimal(0)
        if "requested" in params:
            try:
                requested = decimals.check_bounds(decimals.from_str(params["requested"]))
            except decimals.QuantityError as error:
                return bad_request("requested", str(error))
            if requested < 0:
                return bad_request("requested", "must not be negative")
        aggregate = self.reader.current(tenant_id, metric)
        meter = self.reader.meter(metric)
        decision = decide(meter, aggregate.total, requested, self.limits_for(tenant_id, metric), aggregate.period_end)
        return ok(decision)

    def _check(self, tenant_id: str, metric: str) -> Response | None:
        if (refused := bad_tenant(tenant_id)) is not None:
            return refused
        try:
            self.reader.meter(metric)
        except UnknownMeter:
            return problem(404, "Unknown meter", f"{metric!r} is not a meter of the catalog")
        return None


def _date(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        return None
