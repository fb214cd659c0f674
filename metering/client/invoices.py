"""Statements and invoice previews as the client reads them (`/api/statements/...`, `/api/invoices/...`).

Lenient on purpose: fields the service adds later are kept, not refused, so an older client keeps working.
Amounts keep the places of their currency ("49.00"); a statement written before prices has no amounts.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from metering.core.decimals import DecimalText
from metering.core.money import AmountText


class TierApplied(BaseModel):
    """The part of a line's billable quantity in one tier of its price, and what it costs."""

    model_config = ConfigDict(extra="allow")

    up_to: DecimalText | None = None
    quantity: DecimalText
    unit_price: DecimalText
    flat_fee: DecimalText
    amount: DecimalText


class InvoiceLine(BaseModel):
    """`usage` or `adjustment` of a metric, or the plan's base `fee` (no metric)."""

    model_config = ConfigDict(extra="allow")

    metric: str | None = None
    kind: str
    unit: str | None = None
    aggregation: str | None = None
    quantity: DecimalText
    event_count: int
    amount: AmountText | None = None
    tiers: list[TierApplied] | None = None


class Statement(BaseModel):
    """A closed period's statement; `subtotal` None: written before prices (unrated)."""

    model_config = ConfigDict(extra="allow")

    tenant_id: str
    period_start: datetime
    period_end: datetime
    closed_at: datetime
    catalog_version: str
    currency: str | None = None
    plan: str | None = None
    plan_version: str | None = None
    lines: list[InvoiceLine]
    subtotal: AmountText | None = None


class Statements(BaseModel):
    model_config = ConfigDict(extra="allow")

    items: list[Statement]


class InvoiceForecast(BaseModel):
    model_config = ConfigDict(extra="allow")

    lines: list[InvoiceLine]
    subtotal: AmountText


class InvoicePreview(BaseModel):
    """`GET /api/invoices/{tenant_id}/preview`: the open period rated as if it closed at `as_of`, and the forecast
    to its end (None in its first 24 hours)."""

    model_config = ConfigDict(extra="allow")

    tenant_id: str
    period_start: datetime
    period_end: datetime
    as_of: datetime | None = None
    currency: str
    plan: str
    plan_version: str | None = None
    lines: list[InvoiceLine]
    subtotal: AmountText
    forecast: InvoiceForecast | None = None
