"""The `metering` command line (`python -m metering ...`)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from metering.devhost.azurite import PROJECT_ROOT, Azurite, AzuriteError
from metering.meters import CatalogError, load_catalog

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Exactly-once usage metering on Azure.")
console = Console()


@app.command()
def dev(
    data: Annotated[Path, typer.Option(help="Azurite's data folder")] = PROJECT_ROOT / ".azurite",
) -> None:
    """Run the pipeline's local storage (Azurite) and print how to connect to it. Ctrl-C stops it."""
    try:
        azurite = Azurite(data).start()
    except AzuriteError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    console.print(f"[green]Azurite is running[/green] (data in {data})")
    console.print("Point the app and the tools at it with:")
    console.print(f"  export AzureWebJobsStorage='{azurite.connection_string}'", soft_wrap=True)
    console.print("Press Ctrl-C to stop.")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5) and azurite.process is not None and azurite.process.poll() is None:
            pass
    except KeyboardInterrupt:
        pass
    finally:
        azurite.stop()
        console.print("stopped")


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
