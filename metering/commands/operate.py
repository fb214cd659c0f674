"""`metering late`, `metering dead-letters` and `metering journal`: what the pipeline set aside, the operator's
actions on it (each idempotent and journaled by the service), and the journal itself (admin key)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from metering.commands.common import (
    DEFAULT_URL,
    AdminKey,
    Format,
    OutputFormat,
    Url,
    connect,
    out,
    service_errors,
)

late = typer.Typer(help="Late events: list them, apply one to the open period, or discard one (admin key).")
dead_letters = typer.Typer(help="Dead letters: list them, re-drive one once its cause is fixed (admin key).")
journal = typer.Typer(help="The journal of changes that did not travel through the hub (admin key).")

Limit = Annotated[int, typer.Option(min=1, max=1000, help="Items per page")]
Offset = Annotated[int, typer.Option(min=0, help="Items to skip (the `next_offset` a page gave)")]


def _echo(data: dict[str, Any]) -> None:
    typer.echo(json.dumps(data, indent=2))


def _print(title: str, columns: list[str], rows: list[list[Any]], page: dict[str, Any]) -> None:
    if not rows:
        out.print(f"no {title}")
        return
    table = Table(title=f"{page['total']} {title}")
    for column in columns:
        table.add_column(column, no_wrap=column == "id")
    for row in rows:
        table.add_row(*["" if value is None else str(value) for value in row])
    out.print(table)
    if page.get("next_offset") is not None:
        out.print(f"more: --offset {page['next_offset']}", highlight=False)


@late.command("list")
def list_late(
    tenant: Annotated[str | None, typer.Option(help="One tenant's only")] = None,
    status: Annotated[str | None, typer.Option(help="waiting, carried, applied or discarded")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    output: Format = OutputFormat.TABLE,
    url: Url = DEFAULT_URL,
    admin_key: AdminKey = None,
) -> None:
    """Late events, newest first."""
    with connect(url, admin_key, admin=True) as client, service_errors(url):
        page = client.late_events(tenant, status=status, limit=limit, offset=offset)
    if output is not OutputFormat.TABLE:
        _echo(page)
        return
    rows = [
        [i["id"], i["tenant_id"], i["event"].get("metric"), i["event"].get("quantity"), i["period_start"], i["status"]]
        for i in page["items"]
    ]
    _print("late events", ["id", "tenant", "metric", "quantity", "period", "status"], rows, page)


@late.command("apply")
def apply_late(
    tenant: Annotated[str, typer.Argument(help="The tenant")],
    late_id: Annotated[str, typer.Argument(metavar="ID", help="The late event's id (from `metering late list`)")],
    output: Format = OutputFormat.TABLE,
    url: Url = DEFAULT_URL,
    admin_key: AdminKey = None,
) -> None:
    """Count a late event in the tenant's open period, as an adjustment (once, however often it is asked)."""
    with connect(url, admin_key, admin=True) as client, service_errors(url):
        result = client.apply_late_event(tenant, late_id)
    if output is not OutputFormat.TABLE:
        _echo(result)
        return
    record, entry = result["late_event"], result["journal"]
    out.print(
        f"{late_id}: applied to the period starting {record['applied_to']} by {record['resolved_by']}; "
        f"total {entry['before']} -> {entry['after']}" + (" (applied before)" if result["repeated"] else ""),
        highlight=False,
        soft_wrap=True,
    )


@late.command("discard")
def discard_late(
    tenant: Annotated[str, typer.Argument(help="The tenant")],
    late_id: Annotated[str, typer.Argument(metavar="ID", help="The late event's id (from `metering late list`)")],
    reason: Annotated[str, typer.Option(help="Why it is not counted (journaled)")],
    output: Format = OutputFormat.TABLE,
    url: Url = DEFAULT_URL,
    admin_key: AdminKey = None,
) -> None:
    """Leave a late event uncounted, with a reason."""
    with connect(url, admin_key, admin=True) as client, service_errors(url):
        result = client.discard_late_event(tenant, late_id, reason)
    if output is not OutputFormat.TABLE:
        _echo(result)
        return
    record = result["late_event"]
    out.print(f"{late_id}: discarded by {record['resolved_by']}: {record['discard_reason']}", highlight=False)


@dead_letters.command("list")
def list_dead_letters(
    status: Annotated[str | None, typer.Option(help="waiting or redriven")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    output: Format = OutputFormat.TABLE,
    url: Url = DEFAULT_URL,
    admin_key: AdminKey = None,
) -> None:
    """Dead letters, newest first, with the reason each was set aside."""
    with connect(url, admin_key, admin=True) as client, service_errors(url):
        page = client.dead_letters(status=status, limit=limit, offset=offset)
    if output is not OutputFormat.TABLE:
        _echo(page)
        return
    rows = [
        [i["id"], i["tenant_id"], i["recorded"], i["reason"], "redriven" if i["redriven"] else "waiting"]
        for i in page["items"]
    ]
    _print("dead letters", ["id", "tenant", "recorded", "reason", "status"], rows, page)


@dead_letters.command("redrive")
def redrive_dead_letter(
    letter_id: Annotated[str, typer.Argument(metavar="ID", help="The dead letter's id (from the list)")],
    output: Format = OutputFormat.TABLE,
    url: Url = DEFAULT_URL,
    admin_key: AdminKey = None,
) -> None:
    """Count a dead letter's events once its cause is fixed; refused, with the reason, if it still cannot."""
    with connect(url, admin_key, admin=True) as client, service_errors(url):
        result = client.redrive_dead_letter(letter_id)
    if output is not OutputFormat.TABLE:
        _echo(result)
        return
    out.print(
        f"{letter_id}: {result['outcome']} ({result['events']} event{'' if result['events'] == 1 else 's'}) "
        f"by {result['redriven_by']}; "
        f"totals {result['before']} -> {result['after']}" + (" (re-driven before)" if result["repeated"] else ""),
        highlight=False,
        soft_wrap=True,
    )


@journal.command("list")
def list_journal(
    tenant: Annotated[str, typer.Argument(help="The tenant")],
    limit: Limit = 100,
    offset: Offset = 0,
    output: Format = OutputFormat.TABLE,
    url: Url = DEFAULT_URL,
    admin_key: AdminKey = None,
) -> None:
    """A tenant's journal, newest first: who changed what, when, with the totals before and after."""
    with connect(url, admin_key, admin=True) as client, service_errors(url):
        page = client.journal(tenant, limit=limit, offset=offset)
    if output is not OutputFormat.TABLE:
        _echo(page)
        return
    rows = [
        [e["time"], e["kind"], e["actor"] or "pipeline", e["subject"], e["before"], e["after"]] for e in page["items"]
    ]
    _print("journal entries", ["time", "kind", "actor", "subject", "before", "after"], rows, page)
