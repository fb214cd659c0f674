"""`metering tenants set/get`, `metering periods close` and `metering health`: the operator routes, with the
admin key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
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
    echo_json,
    fields_table,
    out,
    service_errors,
)

if TYPE_CHECKING:
    from metering.client import MetricLimits, TenantSettings
    from metering.client.manage import HealthReport

tenants = typer.Typer(help="Tenant settings: plan, limits, billing schedule (admin key).", no_args_is_help=True)


def _limits(items: list[str]) -> dict[str, MetricLimits]:
    from metering.client import MetricLimits  # noqa: PLC0415

    limits: dict[str, MetricLimits] = {}
    for item in items:
        metric, sep, values = item.partition("=")
        soft, colon, hard = values.partition(":")
        if not sep or not metric or not colon or not (soft or hard):
            raise typer.BadParameter(
                f"{item!r} is not metric=soft:hard (either may be empty, e.g. api.requests=:1000)", param_hint="--limit"
            )
        try:
            limits[metric] = MetricLimits(soft=soft or None, hard=hard or None)
        except ValueError:
            raise typer.BadParameter(f"{item!r}: limits must be decimal numbers", param_hint="--limit") from None
    return limits


def _print_tenant(settings: TenantSettings, output: OutputFormat) -> None:
    if output is not OutputFormat.TABLE:
        echo_json(settings)
        return
    out.print(fields_table(settings, skip=("limits",)))
    if settings.limits:
        table = Table("metric", "soft limit", "hard limit")
        for metric, limit in sorted(settings.limits.items()):
            table.add_row(
                metric, "" if limit.soft is None else str(limit.soft), "" if limit.hard is None else str(limit.hard)
            )
        out.print(table)


@tenants.command("set")
def set_tenant(
    tenant: Annotated[str, typer.Argument(help="Tenant id")],
    plan: Annotated[str | None, typer.Option(help="Plan name")] = None,
    plan_from: Annotated[
        datetime | None,
        typer.Option(
            "--plan-from",
            formats=["%Y-%m-%dT%H:%M:%S%z"],
            help="When --plan takes effect (e.g. 2026-11-01T00:00:00+00:00): now if omitted, or backdated into a "
            "period not closed yet",
        ),
    ] = None,
    limit: Annotated[
        list[str] | None,
        typer.Option("--limit", help="metric=soft:hard per period, repeatable (e.g. api.requests=800:1000)"),
    ] = None,
    anchor_day: Annotated[
        int | None, typer.Option("--anchor-day", min=1, max=31, help="Day of the month billing periods start")
    ] = None,
    timezone: Annotated[
        str | None, typer.Option(help="IANA time zone of the tenant's periods, e.g. Europe/Paris")
    ] = None,
    stripe_customer: Annotated[
        str | None, typer.Option("--stripe-customer", help='Stripe customer usage is exported to ("" unlinks)')
    ] = None,
    marketplace_resource: Annotated[
        str | None,
        typer.Option("--marketplace-resource", help='Azure Marketplace SaaS subscription (resource) id ("" unlinks)'),
    ] = None,
    marketplace_plan: Annotated[
        str | None, typer.Option("--marketplace-plan", help='Azure Marketplace plan id ("" unlinks)')
    ] = None,
    output: Format = OutputFormat.TABLE,
    url: Url = DEFAULT_URL,
    admin_key: AdminKey = None,
) -> None:
    """Change a tenant's settings; what is not given keeps its value."""
    limits = _limits(limit) if limit else None
    given = {
        "stripe_customer_id": stripe_customer,
        "marketplace_resource_id": marketplace_resource,
        "marketplace_plan_id": marketplace_plan,
    }
    links = {name: value for name, value in given.items() if value is not None}
    with connect(url, admin_key, admin=True) as client, service_errors(url):
        settings = client.set_tenant(
            tenant,
            plan=plan,
            limits=limits,
            billing_anchor_day=anchor_day,
            timezone=timezone,
            plan_effective_from=plan_from,
            links=links or None,
        )
    _print_tenant(settings, output)


@tenants.command("get")
def get_tenant(
    tenant: Annotated[str, typer.Argument(help="Tenant id")],
    output: Format = OutputFormat.TABLE,
    url: Url = DEFAULT_URL,
    admin_key: AdminKey = None,
) -> None:
    """Show a tenant's settings."""
    with connect(url, admin_key, admin=True) as client, service_errors(url):
        settings = client.get_tenant(tenant)
    _print_tenant(settings, output)


periods = typer.Typer(help="Billing periods (admin key).", no_args_is_help=True)


@periods.command("close")
def close_periods(
    output: Format = OutputFormat.TABLE,
    url: Url = DEFAULT_URL,
    admin_key: AdminKey = None,
) -> None:
    """Close every billing period that is due now (what the timer does), and list those closed."""
    with connect(url, admin_key, admin=True) as client, service_errors(url):
        result = client.close_periods()
    if output is not OutputFormat.TABLE:
        echo_json(result)
        return
    if not result.closed:
        out.print("no period was due for closing")
        return
    table = Table("tenant", "period start", "period end", title=f"{len(result.closed)} periods closed")
    for closed in result.closed:
        item = closed.model_dump(mode="json")
        table.add_row(item["tenant_id"], item["period_start"], item["period_end"])
    out.print(table)


def health(
    output: Format = OutputFormat.TABLE,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON (same as --format json)")] = False,
    url: Url = DEFAULT_URL,
    admin_key: AdminKey = None,
) -> None:
    """Hub partitions with their applied positions and lag, and the records waiting for an operator."""
    with connect(url, admin_key, admin=True) as client, service_errors(url):
        report = client.health()
    if as_json or output is not OutputFormat.TABLE:
        echo_json(report)
        return
    out.print(partitions_table(report, datetime.now(UTC)))
    waiting = Table("waiting for an operator", "count", show_header=False)
    for label, count in (
        ("dead letters", report.dead_letters),
        ("late events", report.late_events),
        ("conflicts", report.conflicts),
        ("webhooks failed", report.webhooks_failed),
    ):
        waiting.add_row(label, f"[yellow]{count}[/yellow]" if count else "0")
    out.print(waiting)


def partitions_table(report: HealthReport, now: datetime) -> Table:
    """The hub partitions, each name whole however narrow the terminal (it is copied into other commands and
    queries): the other columns give way."""
    table = Table(title="hub partitions")
    widest = max((len(partition.partition) for partition in report.partitions), default=0)
    table.add_column("partition", no_wrap=True, min_width=widest)
    for column in ("sequence", "applied", "lag (s)"):
        table.add_column(column, no_wrap=True)
    for partition in report.partitions:
        lag = f"{partition.lag_seconds:g}"
        table.add_row(
            partition.partition,
            "" if partition.applied_sequence is None else str(partition.applied_sequence),
            "never" if partition.applied_at is None else _ago(now - partition.applied_at),
            f"[yellow]{lag}[/yellow]" if partition.lag_seconds else lag,
        )
    return table


def _ago(age: timedelta) -> str:
    seconds = max(int(age.total_seconds()), 0)
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"
