"""GET /api/invoices/{tenant_id}/preview: the open period rated as if it closed now, with a forecast."""

from __future__ import annotations

from metering.api.http import Response, bad_tenant, ok
from metering.api.invoice_csv import preview_csv
from metering.billing.invoices import Invoices

CSV = "text/csv"


class InvoicesApi:
    def __init__(self, invoices: Invoices) -> None:
        self.invoices = invoices

    def preview(self, tenant_id: str, accept: str | None) -> Response:
        if (refused := bad_tenant(tenant_id)) is not None:
            return refused
        preview = self.invoices.preview(tenant_id)
        return preview_csv(preview) if CSV in (accept or "").lower() else ok(preview)
