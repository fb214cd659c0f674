"""GET /api/usage/..., /history and /api/quota/...: reading usage back over HTTP."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from decimal import Decimal

from metering.api.contract import (
    GroupTotal,
    HistoryResponse,
    QuotaDecision,
    UsageAggregate,
    UsageBucket,
    UsageResponse,
)
from metering.api.http import Response, bad_request, bad_tenant, ok, problem
from metering.core import decimals
from metering.core.limits import Limits
from metering.core.periods import Granularity
from metering.ledger.reader import RangeError, UnknownMeter, UsageReader
from metering.quotas.decisions import decide

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
        usage = self.reader.for_period(tenant_id, metric, period)
        if "group_by" not in params:
            return ok(UsageAggregate.model_validate(usage))
        try:
            groups = self.reader.groups(tenant_id, metric, params["group_by"], period)
        except RangeError as error:
            return bad_request("group_by", str(error))
        body = UsageResponse.model_validate(usage).model_copy(
            update={"groups": [GroupTotal.model_validate(group) for group in groups]}
        )
        return ok(body)

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
        return ok(HistoryResponse(items=[UsageBucket.model_validate(bucket) for bucket in items]))

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
        usage = self.reader.current(tenant_id, metric)
        limits = self.limits_for(tenant_id, metric)
        verdict = decide(usage.meter, usage.limited, requested, limits)
        return ok(
            QuotaDecision(
                decision=verdict.decision,
                current=usage.limited,
                requested=requested,
                projected=verdict.projected,
                soft_limit=limits.soft,
                hard_limit=limits.hard,
                remaining=verdict.remaining,
                period_end=usage.period_end,
            )
        )

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
