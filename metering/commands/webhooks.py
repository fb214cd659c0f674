"""`metering webhooks list` and `metering webhooks redrive`: the webhook deliveries an operator looks after."""

from __future__ import annotations

from datetime import UTC
from enum import StrEnum
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
    out,
    service_errors,
)

if TYPE_CHECKING:
    from metering.client import WebhookDelivery

webhooks = typer.Typer(help="Webhook deliveries: the failed and the pending, and redriving (admin key).")


class Status(StrEnum):
    FAILED = "failed"
    PENDING = "pending"


@webhooks.command("list")
def list_deliveries(
    status: Annotated[Status, typer.Option(help="failed (given up on) or pending (attempts go on)")] = Status.FAILED,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Deliveries per page")] = 100,
    after: Annotated[str | None, typer.Option(help="Start after this id (the `next` a page gave)")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every page, not just the first")] = False,
    output: Format = OutputFormat.TABLE,
    url: Url = DEFAULT_URL,
    admin_key: AdminKey = None,
) -> None:
    """List webhook deliveries of one status, in id order."""
    items: list[WebhookDelivery] = []
    with connect(url, admin_key, admin=True) as client, service_errors(url):
        page = client.webhook_deliveries(status.value, after=after, limit=limit)
        items.extend(page.items)
        while every and page.next is not None:
            page = client.webhook_deliveries(status.value, after=page.next, limit=limit)
            items.extend(page.items)
    if output is not OutputFormat.TABLE:
        from metering.client import WebhookDeliveries  # noqa: PLC0415 (httpx: only for commands that call the service)

        echo_json(WebhookDeliveries(items=items, next=page.next))
        return
    if not items:
        out.print(f"no {status.value} webhook deliveries")
        return
    table = Table(title=f"{len(items)} {status.value} webhook deliveries")
    table.add_column("id", no_wrap=True)  # whole, to be copied into `redrive`
    for column in ("attempts", "last attempt", "status", "error" if status is Status.PENDING else "reason: error"):
        table.add_column(column)
    if status is Status.PENDING:
        table.add_column("next attempt", no_wrap=True)
    for item in items:
        last = "" if item.last_attempt is None else item.last_attempt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        error = item.last_error or ""
        row = [item.id, str(item.attempts), last, "" if item.last_status is None else str(item.last_status)]
        if status is Status.PENDING:
            due = "" if item.next_attempt is None else item.next_attempt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
            row += [error, due]
        else:
            row.append(f"{item.reason}: {error}" if item.reason else error)
        table.add_row(*row)
    out.print(table)
    if page.next is not None and not every:
        out.print(f"more: --after {page.next} (or --all)", highlight=False)


@webhooks.command("redrive")
def redrive(
    delivery_id: Annotated[str, typer.Argument(metavar="ID", help="The delivery's id (its webhook-id)")],
    output: Format = OutputFormat.TABLE,
    url: Url = DEFAULT_URL,
    admin_key: AdminKey = None,
) -> None:
    """Deliver a failed webhook again (pending, due now, attempts reset); a pending one is left as it is."""
    with connect(url, admin_key, admin=True) as client, service_errors(url):
        result = client.redrive_webhook(delivery_id)
    if output is not OutputFormat.TABLE:
        echo_json(result)
        return
    out.print(f"{result.id}: {result.detail}", highlight=False, soft_wrap=True)
