"""`metering exports run` and `metering exports show`: usage sent to Stripe and the Azure Marketplace, on demand,
and a tenant's reconciliation with each target (admin key)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from metering.commands.common import (
    DEFAULT_URL,
    AdminKey,
    Format,
    OutputFormat,
    Url,
    connect,
    day,
    echo_json,
    out,
    service_errors,
)

if TYPE_CHECKING:
    from metering.client import ExportReconciliation

exports = typer.Typer(
    help="Billing exports to Stripe and the Azure Marketplace: a run, a reconciliation (admin key).",
    no_args_is_help=True,
)


@exports.command("run")
def run(
    output: Format = OutputFormat.TABLE,
    url: Url = DEFAULT_URL,
    admin_key: AdminKey = None,
) -> None:
    """Export what is settled and not sent yet (what the timer does); say what was sent and what is open."""
    with connect(url, admin_key, admin=True) as client, service_errors(url):
        result = client.run_exports()
    if output is not OutputFormat.TABLE:
        echo_json(result)
        return
    out.print(f"sent {result.sent}, failed {result.failed}, pending {result.pending}", highlight=False)


@exports.command("show")
def show(
    tenant: Annotated[str, typer.Argument(help="Tenant id")],
    period: Annotated[
        str | None, typer.Option(help="First day of the billing period (YYYY-MM-DD); default: the current one")
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Exit with status 3 when a target the tenant is linked to differs from ours"),
    ] = False,
    output: Format = OutputFormat.TABLE,
    url: Url = DEFAULT_URL,
    admin_key: AdminKey = None,
) -> None:
    """A tenant's period at each target: our figure, what was sent and acknowledged, the difference and why."""
    start = day(period, "--period")
    with connect(url, admin_key, admin=True) as client, service_errors(url):
        result = client.exports(tenant, start)
    if output is not OutputFormat.TABLE:
        echo_json(result)
    else:
        _print(result)
    if check and any(
        metric.difference
        for target in result.targets
        # A target the tenant is not linked to, and never was, is not expected to hold anything.
        if target.linked or any(metric.sent or metric.acknowledged for metric in target.metrics)
        for metric in target.metrics
    ):
        raise typer.Exit(3)


def _print(result: ExportReconciliation) -> None:
    span = f"{result.period_start:%Y-%m-%d} to {result.period_end:%Y-%m-%d}"
    if not result.targets:
        out.print(f"{result.tenant_id} {span}: no billing target is configured", highlight=False)
        return
    for target in result.targets:
        if not target.linked:
            out.print(f"{result.tenant_id} {span}, {target.target}: not linked", highlight=False)
        table = Table(title=f"{result.tenant_id} {span}, {target.target}")
        for column in ("metric", "as", "ours", "sent", "acknowledged", "pending", "difference"):
            table.add_column(column)
        for metric in target.metrics:
            values = (metric.ours, metric.sent, metric.acknowledged, metric.pending, metric.difference)
            table.add_row(metric.metric, metric.target_metric, *(str(value) for value in values))
        out.print(table)
        # Reasons are sentences: under the table, whole, rather than folded into a column.
        for metric in target.metrics:
            for reason in metric.reasons:
                out.print(f"  {metric.metric}: {reason}", highlight=False, soft_wrap=True)
