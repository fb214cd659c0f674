"""The `metering` command line (`python -m metering ...`)."""

from __future__ import annotations

import logging
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from metering.devhost.azurite import PROJECT_ROOT, AzuriteError
from metering.devhost.host import DevHost
from metering.meters import CatalogError, load_catalog

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Exactly-once usage metering on Azure.")
console = Console()


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="Port of the HTTP functions")] = 7071,
    data: Annotated[Path, typer.Option(help="Azurite's data folder")] = PROJECT_ROOT / ".azurite",
    app_module: Annotated[str, typer.Option("--app", help="Module holding the function app")] = "function_app",
) -> None:
    """Run the function app locally: HTTP functions, timers and the Event Hub trigger, on Azurite."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    host = DevHost(app_module=app_module, port=port, data=data)
    try:
        host.start()
    except (AzuriteError, OSError, ValueError, KeyError) as error:
        console.print(f"[red]cannot start: {error}[/red]")
        host.stop()
        raise typer.Exit(1) from None
    base = host.base_url
    console.print(
        f"[green]Functions running at {base}[/green]" + (f" (Azurite data in {data})" if host.azurite else "")
    )
    console.print(f"  function key: {host.function_key}")
    console.print(f"  admin key:    {host.admin_key}")
    for timer in host.timers:
        console.print(f"  timer {timer.name}: {timer.schedule}")
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


meters = typer.Typer(help="The meter catalog.")
app.add_typer(meters, name="meters")


@meters.command("validate")
def validate_meters(
    path: Annotated[Path | None, typer.Argument(help="Catalog file; the default if omitted")] = None,
) -> None:
    """Check a meter catalog and list its meters."""
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


def main() -> None:
    app()
