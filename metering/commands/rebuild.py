"""`metering rebuild`: replay the archive and the journal of a window into scratch tables and diff the totals.

An operator tool with storage access: it reads the app's settings (environment, else local.settings.json) and
the stores directly, never the HTTP API. Exit status 0 when every compared total matches, 1 when one differs,
2 when the rebuild could not run.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from metering.commands.common import err, out
from metering.core import decimals

if TYPE_CHECKING:
    from metering.rebuild import RebuildReport
    from metering.settings import Settings


def _instant(value: str, option: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise typer.BadParameter(
            f"{value!r} is not an RFC 3339 instant with its offset (e.g. 2026-11-01T00:00:00Z)", param_hint=option
        )
    return parsed


def app_settings() -> Settings:
    """The app's settings: the environment, then the project's app settings file, as the dev host reads them."""
    from pydantic import ValidationError  # noqa: PLC0415

    from metering.devhost.host import LOCAL_STORAGE, load_app_settings  # noqa: PLC0415
    from metering.settings import Settings  # noqa: PLC0415

    # The file's local storage default must not shadow an identity-based connection given for a deployed stack.
    identity_based = "AzureWebJobsStorage" not in os.environ and "AzureWebJobsStorage__tableServiceUri" in os.environ
    load_app_settings()
    if identity_based:
        os.environ.pop("AzureWebJobsStorage", None)
    try:
        settings = Settings()  # type: ignore[call-arg]
    except ValidationError as error:
        err.print(f"[red]settings: {error}[/red]", highlight=False)
        raise typer.Exit(2) from None
    if settings.storage_connection == LOCAL_STORAGE:
        err.print(
            "[red]AzureWebJobsStorage is UseDevelopmentStorage=true: set it to the connection string "
            "`metering dev` prints (its Azurite listens on ports of its own)[/red]"
        )
        raise typer.Exit(2)
    return settings


def rebuild_command(
    start: Annotated[str, typer.Option("--from", help="RFC 3339: replay what the hub enqueued from this instant")],
    end: Annotated[str, typer.Option("--to", help="RFC 3339: ... up to this instant (excluded)")],
    tenant: Annotated[list[str] | None, typer.Option("--tenant", help="Only this tenant (repeatable)")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the scratch tables to look into them")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON, for machines")] = False,
    differences_only: Annotated[bool, typer.Option("--differences-only", help="List only totals that differ")] = False,
    scratch_store: Annotated[
        str | None,
        # Checked against StoreKind when the command runs: the settings' imports are not the command line's.
        typer.Option("--scratch-store", help="Where to rebuild, table or cosmos: the live store's kind by default"),
    ] = None,
) -> None:
    """Rebuild totals from the raw archive and the journal in scratch tables, and diff them with ours."""
    # The stores, the archive and the Azure SDKs: imported when a rebuild runs, not when the command line starts.
    from azure.core.exceptions import AzureError  # noqa: PLC0415

    from metering.archive.reader import ArchiveNotFound  # noqa: PLC0415
    from metering.rebuild import rebuild  # noqa: PLC0415
    from metering.rebuild.scratch import ScratchError  # noqa: PLC0415
    from metering.settings import StoreKind  # noqa: PLC0415
    from metering.stores.cosmos import CosmosStoreError  # noqa: PLC0415

    begin, finish = _instant(start, "--from"), _instant(end, "--to")
    kinds = {kind.value: kind for kind in StoreKind}
    if scratch_store is not None and scratch_store not in kinds:
        raise typer.BadParameter(f"must be one of {', '.join(kinds)}", param_hint="--scratch-store")
    if finish <= begin:
        raise typer.BadParameter("must be after --from", param_hint="--to")
    settings = app_settings()
    try:
        report = rebuild(
            settings,
            begin,
            finish,
            tenants=tenant,
            keep=keep,
            scratch_kind=StoreKind(scratch_store) if scratch_store else None,
        )
    except (ArchiveNotFound, CosmosStoreError, ScratchError) as error:
        err.print(f"[red]{error}[/red]", highlight=False)
        raise typer.Exit(2) from None
    except AzureError as error:
        err.print(f"[red]storage unavailable: {type(error).__name__}: {str(error).splitlines()[0]}[/red]")
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        _print(report, differences_only=differences_only)
    raise typer.Exit(1 if report.differences else 0)


def _print(report: RebuildReport, *, differences_only: bool) -> None:
    table = Table(title=f"rebuild of {report.start.isoformat()} to {report.end.isoformat()}")
    # Identifiers fold rather than end in an ellipsis: an auditor needs them whole.
    for name in ("tenant", "meter", "period"):
        table.add_column(name, overflow="fold")
    for name in ("ours", "rebuilt", "difference", "events"):
        table.add_column(name, justify="right", overflow="fold")
    partial = False
    for line in report.totals:
        if differences_only and not line.differs:
            continue
        style = "red" if line.differs else None
        period = line.period_start.date().isoformat() + ("" if line.whole_period else "*")
        partial = partial or not line.whole_period
        table.add_row(
            line.tenant_id,
            line.metric,
            period,
            "" if line.ours is None else decimals.to_str(line.ours),
            "" if line.rebuilt is None else decimals.to_str(line.rebuilt),
            decimals.to_str(line.difference),
            f"{line.ours_events}/{line.rebuilt_events}",
            style=style,
        )
    out.print(table)
    if partial:
        out.print("* the window does not hold the whole period: a difference there is expected", highlight=False)
    out.print(
        f"replayed {report.messages} messages ({report.events} events: {report.applied} applied, "
        f"{report.duplicates} duplicates, {report.late} late, {report.dead_lettered} dead-lettered), "
        f"{report.journal_entries} journal entries, {report.closed_periods} periods closed as live closed them",
        highlight=False,
    )
    for problem in report.problems:
        out.print(f"[yellow]{problem}[/yellow]", highlight=False)
    if report.kept:
        out.print(f"scratch tables kept: prefix {report.scratch}", highlight=False)
    compared = len(report.totals)
    if report.differences:
        out.print(
            f"[red]{report.differences} of {compared} totals in {report.periods} periods differ[/red]", highlight=False
        )
    else:
        out.print(f"[green]no difference: {compared} totals in {report.periods} periods[/green]", highlight=False)
