"""Operator routes under /api/manage/ (admin key): tenant settings, closing periods on demand (health has its
own module)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel, ValidationError

from metering.api.http import Response, bad_tenant, json_object, ok, problem
from metering.billing.closing import PeriodCloser
from metering.core.events import FieldError
from metering.tenants.directory import TenantDirectory
from metering.tenants.records import TenantError, TenantUpdate


class ClosedView(BaseModel):
    tenant_id: str
    period_start: datetime
    period_end: datetime


class CloseResponse(BaseModel):
    closed: list[ClosedView]
    waiting: int
    sent: int


class Manage:
    def __init__(self, directory: TenantDirectory, closer: PeriodCloser, clock: Callable[[], datetime]) -> None:
        self.directory = directory
        self.closer = closer
        self.clock = clock

    def get_tenant(self, tenant_id: str) -> Response:
        if (refused := bad_tenant(tenant_id)) is not None:
            return refused
        return ok(self.directory.settings(tenant_id))

    def put_tenant(self, tenant_id: str, body: bytes) -> Response:
        if (refused := bad_tenant(tenant_id)) is not None:
            return refused
        decoded = json_object(body, "a JSON object of tenant settings")
        if isinstance(decoded, Response):
            return decoded
        try:
            change = TenantUpdate.model_validate(decoded)
        except ValidationError as error:
            errors = [
                FieldError(0, ".".join(str(p) for p in e["loc"]) or "body", str(e["msg"]).removeprefix("Value error, "))
                for e in error.errors()
            ]
            return problem(
                422, "Invalid tenant settings", f"{len(errors)} rule(s) broken; nothing changed", errors=errors
            )
        try:
            settings = self.directory.update(tenant_id, change)
        except TenantError as error:
            return problem(
                422,
                "Invalid tenant settings",
                f"{len(error.errors)} rule(s) broken; nothing changed",
                errors=error.errors,
            )
        return ok(settings)

    def close_periods(self) -> Response:
        report = self.closer.run(self.clock())
        return ok(
            CloseResponse(
                closed=[
                    ClosedView(tenant_id=c.tenant_id, period_start=c.period.start, period_end=c.period.end)
                    for c in report.closed
                ],
                waiting=report.waiting,
                sent=report.sent,
            )
        )
