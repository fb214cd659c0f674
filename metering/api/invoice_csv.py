"""Statements and invoice previews as CSV (Accept: text/csv): one row per line, with its amount.

The columns of a statement are the same whether it was rated or not (an unrated one, written before prices,
has empty currency, plan and amounts); the sum of a statement's `amount` column is its subtotal.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

from metering.api.http import Response
from metering.billing.invoices import InvoicePreview
from metering.billing.statements import Statement, StatementLine
from metering.core import decimals
from metering.core.money import amount_text

STATEMENT_COLUMNS = (
    "tenant_id",
    "period_start",
    "period_end",
    "metric",
    "kind",
    "quantity",
    "unit",
    "aggregation",
    "event_count",
    "catalog_version",
    "currency",
    "plan",
    "plan_version",
    "amount",
)
# A preview's rows are the lines to date, then the forecast's.
PREVIEW_COLUMNS = (*STATEMENT_COLUMNS[:9], "currency", "plan", "plan_version", "amount", "figures")


def _line(line: StatementLine) -> list[object]:
    return [
        line.metric or "",
        line.kind.value,
        decimals.to_str(line.quantity),
        line.unit or "",
        line.aggregation or "",
        line.event_count,
    ]


def _amount(line: StatementLine) -> str:
    return "" if line.amount is None else amount_text(line.amount)


def _text(rows: Iterable[Sequence[object]]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows(rows)
    return Response(200, out.getvalue().encode(), "text/csv; charset=utf-8")


def statements_csv(statements: Sequence[Statement]) -> Response:
    rows: list[Sequence[object]] = [STATEMENT_COLUMNS]
    for statement in statements:
        period = [statement.tenant_id, statement.period_start.isoformat(), statement.period_end.isoformat()]
        plan = [statement.currency or "", statement.plan or "", statement.plan_version or ""]
        for line in statement.lines:
            rows.append([*period, *_line(line), statement.catalog_version, *plan, _amount(line)])
    return _text(rows)


def preview_csv(preview: InvoicePreview) -> Response:
    rows: list[Sequence[object]] = [PREVIEW_COLUMNS]
    period = [preview.tenant_id, preview.period_start.isoformat(), preview.period_end.isoformat()]
    plan = [preview.currency, preview.plan, preview.plan_version]
    sections = [("to_date", preview.lines)]
    if preview.forecast is not None:
        sections.append(("forecast", preview.forecast.lines))
    for figures, lines in sections:
        for line in lines:
            rows.append([*period, *_line(line), *plan, _amount(line), figures])
    return _text(rows)
