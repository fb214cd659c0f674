"""The `metering` command line (`python -m metering ...`): the dev host, and every task an operator does over
HTTP (send usage, read it back, check quotas and invoices, manage tenants and periods, check health), plus the
meter catalog and the event schema. The service's URL and keys come from options or METERING_URL, METERING_KEY
and METERING_ADMIN_KEY.

Each command imports what it needs when it runs (the dev host, the client, the Azure SDKs), so a command that
needs none of them starts at once.
"""

from __future__ import annotations

import logging
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from metering.commands.common import Format, OutputFormat, err
from metering.commands.exports import exports
from metering.commands.invoices import invoice
from metering.commands.manage import health, periods, tenants
from metering.commands.operate import dead_letters, journal, late
from metering.commands.portal import portal_revoke, portal_url
from metering.commands.reads import history, quota, usage
from metering.commands.rebuild import rebuild_command
from metering.commands.send import send
from metering.commands.webhooks import webhooks
from metering.devhost.node import PROJECT_ROOT

if TYPE_CHECKING:
    from metering.core.meters import MeterCatalog

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Exactly-once usage metering on Azure.")
console = Console()


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="Port of the HTTP functions")] = 7071,
    data: Annotated[Path, typer.Option(help="Azurite's data folder")] = PROJECT_ROOT / ".azurite",
    app_module: Annotated[str, typer.Option("--app", help="Module holding the function app")] = "function_app",
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Worker processes feeding the Event Hub trigger from the local hub's partitions (default: one per "
            "partition, as Function instances scale out; 0: threads of this process)",
        ),
    ] = None,
) -> None:
    """Run the function app locally: HTTP functions, timers and the Event Hub trigger, on Azurite."""
    from metering.devhost.azurite import AzuriteError  # noqa: PLC0415 (the dev host: only for this command)
    from metering.devhost.cosmos import CosmosServerError  # noqa: PLC0415
    from metering.devhost.host import DevHost  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    # Webhook attempts log their own outcome; httpx would add a line for every request.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    host = DevHost(app_module=app_module, port=port, data=data, workers=workers)
    try:
        host.start()
    except (AzuriteError, CosmosServerError, OSError, ValueError, KeyError) as error:
        console.print(f"[red]cannot start: {error}[/red]", soft_wrap=True, highlight=False)
        host.stop()
        raise typer.Exit(1) from None
    base = host.base_url
    console.print(
        f"[green]Functions running at {base}[/green]" + (f" (Azurite data in {data})" if host.azurite else "")
    )
    console.print(f"  function key: {host.function_key}")
    console.print(f"  admin key:    {host.admin_key}")
    if host.azurite:
        # Operator tools that read storage directly (metering rebuild) need it: the ports are Azurite's own.
        console.print(f"  storage:      AzureWebJobsStorage='{host.azurite.connection_string}'", soft_wrap=True)
    for timer in host.timers:
        console.print(f"  timer {timer.name}: {timer.schedule}")
    if host.partitions:
        fed = f"{host.worker_processes} worker processes" if host.worker_processes else "threads of this process"
        console.print(f"  hub: {len(host.partitions)} local partitions, fed by {fed}")
    console.print("Try:")
    console.print(
        f"  curl -s -X POST {base}/events -H 'x-functions-key: {host.function_key}' "
        "-H 'content-type: application/json' "
        f"""-d '{{"tenant_id":"acme","metric":"api.requests","quantity":1,"timestamp":"{_now()}","source":"curl"}}'""",
        soft_wrap=True,
        highlight=False,
    )
    console.print(
        f"  curl -s {base}/usage/acme/api.requests -H 'x-functions-key: {host.function_key}'",
        soft_wrap=True,
        highlight=False,
    )
    console.print("Press Ctrl-C to stop.")
    signal.signal(signal.SIGTERM, lambda *_: host.request_stop())
    host.wait()
    host.stop()
    console.print("stopped")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


app.command()(send)
app.command()(usage)
app.command()(history)
app.command()(quota)
app.command()(health)
app.command()(invoice)
app.command("rebuild")(rebuild_command)
app.command("portal-url")(portal_url)
app.command("portal-revoke")(portal_revoke)
app.add_typer(tenants, name="tenants")
app.add_typer(periods, name="periods")
app.add_typer(webhooks, name="webhooks")
app.add_typer(late, name="late")
app.add_typer(dead_letters, name="dead-letters")
app.add_typer(journal, name="journal")
app.add_typer(exports, name="exports")

meters = typer.Typer(help="The meter catalog.")
app.add_typer(meters, name="meters")


@meters.command("validate")
def validate_meters(
    path: Annotated[Path | None, typer.Argument(help="Catalog file; the default if omitted")] = None,
) -> None:
    """Check a meter catalog and list its meters."""
    from metering.core.meters import CatalogError, load_catalog  # noqa: PLC0415

    try:
        catalog = load_catalog(path)
    except CatalogError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    console.print(f"catalog version {catalog.version}: {len(catalog.meters)} meters")
    for meter in catalog.meters.values():
        extra = f" of {meter.field}" if meter.field else ""
        groups = f" by {', '.join(meter.group_by)}" if meter.group_by else ""
        console.print(f"  {meter.name}: {meter.aggregation}{extra} in {meter.unit}{groups}")


@meters.command("list")
def list_meters(
    path: Annotated[
        Path | None,
        typer.Option("--file", envvar="METERING_METERS_FILE", help="Catalog file; the packaged one if unset"),
    ] = None,
    output: Format = OutputFormat.TABLE,
) -> None:
    """List the meters of a catalog: what each counts, in which unit, grouped by what."""
    from metering.core.meters import CatalogError, load_catalog  # noqa: PLC0415

    try:
        catalog = load_catalog(path)
    except CatalogError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    if output is OutputFormat.JSON:
        typer.echo(catalog.model_dump_json(indent=2))
        return
    console.print(_meters_table(catalog))


def _meters_table(catalog: MeterCatalog) -> Table:
    table = Table("meter", "aggregation", "unit", "group by", "negative", title=f"catalog {catalog.version}")
    for meter in sorted(catalog.meters.values(), key=lambda m: m.name):
        aggregation = f"{meter.aggregation} of {meter.field}" if meter.field else str(meter.aggregation)
        negative = "allowed" if meter.allow_negative else ""
        table.add_row(meter.name, aggregation, meter.unit, ", ".join(meter.group_by), negative)
    return table


EVENT_SCHEMA = "usage-event"


@app.command()
def schema(
    kind: Annotated[
        str,
        typer.Argument(help="usage-event, or a notification kind: period.closed, quota.threshold_crossed"),
    ] = EVENT_SCHEMA,
) -> None:
    """Print a JSON Schema: of a usage event, or of a notification's body (webhook and queue message alike);
    each is committed as schemas/<kind>.schema.json."""
    if kind == EVENT_SCHEMA:
        from metering.core.schema import schema_text  # noqa: PLC0415

        sys.stdout.write(schema_text())
        return
    # Imported here: the notification models pull in the billing and quota packages.
    from metering.api.notification_schemas import NOTIFICATIONS, notification_schema_text  # noqa: PLC0415

    if kind not in NOTIFICATIONS:
        known = ", ".join([EVENT_SCHEMA, *NOTIFICATIONS])
        raise typer.BadParameter(f"{kind!r} is not one of {known}", param_hint="KIND")
    sys.stdout.write(notification_schema_text(kind))


def main() -> None:
    app()
