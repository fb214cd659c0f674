"""Operator routes of billing exports (admin key): a run on demand, and a tenant's reconciliation with each
target."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from pydantic import BaseModel, Field

from metering.api.http import Response, bad_request, bad_tenant, ok
from metering.billing.exports.engine import Exporter
from metering.billing.exports.reconcile import Reconciler
from metering.core.clock import Clock
from metering.core.periods import PeriodSchedule
from metering.tenants.directory import TenantDirectory


class ExportRunResponse(BaseModel):
    sent: int = Field(description="Intents the targets acknowledged in this run")
    failed: int = Field(description="Sends that failed in this run: refused (reported), or to be retried")
    pending: int = Field(description="Intents still waiting for an answer, a retry or another exporter's lease")


class Exports:
    def __init__(
        self,
        exporter: Exporter,
        reconciler: Reconciler,
        directory: TenantDirectory,
        schedule: PeriodSchedule,
        clock: Clock,
    ) -> None:
        self.exporter = exporter
        self.reconciler = reconciler
        self.directory = directory
        self.schedule = schedule
        self.clock = clock

    def run(self) -> Response:
        report = self.exporter.run(self.clock())
        return ok(ExportRunResponse(sent=report.sent, failed=report.failed, pending=report.pending))

    def reconcile(self, tenant_id: str, params: Mapping[str, str]) -> Response:
        if (refused := bad_tenant(tenant_id)) is not None:
            return refused
        period = self.schedule.period_at(tenant_id, self.clock())
        if "period" in params:
            try:
                start = date.fromisoformat(params["period"])
            except ValueError:
                return bad_request("period", "must be a date, YYYY-MM-DD")
            found = self.schedule.period_starting(tenant_id, start)
            if found is None:
                return bad_request("period", f"{start} is not the first day of a billing period of {tenant_id}")
            period = found
        return ok(self.reconciler.reconcile(tenant_id, period, self.directory.record(tenant_id)))
