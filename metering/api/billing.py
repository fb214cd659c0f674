"""Statements, late events and cancels over HTTP."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from pydantic import BaseModel

from metering.api.http import Response, bad_request, bad_tenant, json_object, ok, problem
from metering.api.invoice_csv import statements_csv
from metering.billing.cancels import Cancels, NotCancellable, NotCounted, PeriodClosed
from metering.billing.closing import Statement
from metering.billing.late import LateEvent, LateEvents
from metering.stores import RowTable

_KEY_LIMIT = 128
CSV = "text/csv"


class StatementList(BaseModel):
    items: list[Statement]


class LateEventList(BaseModel):
    items: list[LateEvent]


class Billing:
    def __init__(self, statements: RowTable, late: LateEvents, cancels: Cancels) -> None:
        self.statements = statements
        self.late = late
        self.cancels = cancels

    def statement(self, tenant_id: str, params: Mapping[str, str], accept: str | None) -> Response:
        if (refused := bad_tenant(tenant_id)) is not None:
            return refused
        wants_csv = CSV in (accept or "").lower()
        if "period" not in params:
            rows = self.statements.range(tenant_id, "", "~")
            items = [Statement.model_validate(row.data) for row in rows]
            if wants_csv:
                return statements_csv(items)
            return ok(StatementList(items=items))
        try:
            start = date.fromisoformat(params["period"]) if len(params["period"]) == 10 else None
        except ValueError:
            start = None
        if start is None:
            return bad_request("period", "must be a date, YYYY-MM-DD (the start date of a billing period)")
        row = self.statements.read(tenant_id, [start.isoformat()]).get(start.isoformat())
        if row is None:
            return problem(
                404,
                "No statement",
                f"{tenant_id} has no closed billing period starting {start}: it may be open still, or unknown",
            )
        found = Statement.model_validate(row.data)
        return statements_csv([found]) if wants_csv else ok(found)

    def late_events(self, tenant_id: str) -> Response:
        if (refused := bad_tenant(tenant_id)) is not None:
            return refused
        return ok(LateEventList(items=self.late.list(tenant_id)))

    def cancel(self, tenant_id: str, body: bytes) -> Response:
        if (refused := bad_tenant(tenant_id)) is not None:
            return refused
        decoded = json_object(body, '{"event_id": ...} or {"idempotency_key": ...}')
        if isinstance(decoded, Response):
            return decoded
        given = {name: decoded[name] for name in ("event_id", "idempotency_key") if name in decoded}
        unknown = set(decoded) - {"event_id", "idempotency_key"}
        if unknown:
            return bad_request(sorted(unknown)[0], "is not a field of a cancel (event_id or idempotency_key)")
        if len(given) != 1:
            return bad_request("event_id", "give exactly one of event_id and idempotency_key")
        ((name, value),) = given.items()
        if not isinstance(value, str) or not 1 <= len(value) <= _KEY_LIMIT or not value.isprintable():
            return bad_request(name, f"must be 1 to {_KEY_LIMIT} printable characters")
        dedupe_key = ("k:" if name == "idempotency_key" else "e:") + value
        try:
            result = self.cancels.cancel(tenant_id, dedupe_key)
        except NotCounted:
            return problem(
                404,
                "Unknown event",
                f"no counted event of {tenant_id} has {name} {value!r} in an open period. An event sent with "
                "an idempotency_key is cancelled by that key; one just accepted may still be on its way "
                "(retry once it shows in usage)",
            )
        except PeriodClosed as error:
            return problem(409, "Period closed", f"{error}: its totals are final")
        except NotCancellable as error:
            return problem(422, "Not cancellable", str(error), errors=[])
        return ok(result)
