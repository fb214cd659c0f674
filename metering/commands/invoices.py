"""`metering invoice`: what a tenant owes so far in its open period (with the forecast to its end), or the
statement of a closed period, as a table, JSON or CSV."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from metering.commands.common import DEFAULT_URL, Key, OutputFormat, Url, connect, day, echo_json, out, service_errors
from metering.core.decimals import to_str
from metering.core.money import amount_text

if TYPE_CHECKING:
    from metering.client import InvoiceLine


def invoice(
    tenant: Annotated[str, typer.Argument(help="Tenant id")],
    period: Annotated[
        str | None, typer.Option(help="Start date of a closed period (YYYY-MM-DD): its statement instead")
    ] = None,
    output: Annotated[OutputFormat, typer.Option("--format", help="table, json or csv")] = OutputFormat.TABLE,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """The tenant's invoice preview for its open period, or the statement of a closed one, with amounts."""
    start = day(period, "--period")
    with connect(url, key) as client, service_errors(url):
        if output is OutputFormat.CSV:
            typer.echo(client.invoice_csv(tenant, start), nl=False)
            return
        document = client.invoice_preview(tenant) if start is None else client.statement(tenant, start)
    if output is OutputFormat.JSON:
        echo_json(document)
        return
    heading = f"{tenant} {document.period_start:%Y-%m-%d} to {document.period_end:%Y-%m-%d}"
    if document.plan is None:
        out.print(f"{heading}: closed before prices, unrated", highlight=False)
    else:
        out.print(f"{heading}, plan {document.plan} ({document.plan_version}), {document.currency}", highlight=False)
    title = "so far" if start is None else "statement"
    out.print(_lines(document.lines, title, document.subtotal))
    forecast = getattr(document, "forecast", None)
    if forecast is not None:
        out.print(_lines(forecast.lines, "forecast to the period's end", forecast.subtotal))
    elif start is None:
        out.print("no forecast in the period's first 24 hours", highlight=False)


def _lines(lines: list[InvoiceLine], title: str, subtotal: object) -> Table:
    table = Table("metric", "kind", "quantity", "unit", "amount", title=title)
    for line in lines:
        amount = "" if line.amount is None else amount_text(line.amount)
        table.add_row(line.metric or "(base fee)", line.kind, to_str(line.quantity), line.unit or "", amount)
    table.add_row("subtotal", "", "", "", "" if subtotal is None else str(subtotal), end_section=True)
    return table
