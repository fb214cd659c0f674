"""`metering send`: one event from options, or NDJSON from a file or stdin through a buffered writer."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer

from metering.commands.common import DEFAULT_URL, Key, Url, connect, err, out, service_errors

if TYPE_CHECKING:
    from metering.client import MeteringClient, RejectedEvent


def send(
    tenant: Annotated[str | None, typer.Option(help="Tenant id (one event from options)")] = None,
    metric: Annotated[str | None, typer.Option(help="Meter name")] = None,
    quantity: Annotated[str | None, typer.Option(help="Decimal quantity, e.g. 1 or 2.5")] = None,
    source: Annotated[str, typer.Option(help="Source of the events (for those without one)")] = "metering-cli",
    unit: Annotated[str | None, typer.Option()] = None,
    user: Annotated[str | None, typer.Option(help="user_id")] = None,
    resource: Annotated[str | None, typer.Option(help="resource_id")] = None,
    dimension: Annotated[list[str] | None, typer.Option("--dimension", "-d", help="name=value, repeatable")] = None,
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    event_id: Annotated[str | None, typer.Option(help="Event id; a random one if not given")] = None,
    timestamp: Annotated[str | None, typer.Option(help="RFC 3339 with an offset; now if not given")] = None,
    file: Annotated[
        str | None, typer.Option("--file", "-i", help="NDJSON file of events, one per line; - for stdin")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=1000, help="Events per request")] = 500,
    timeout: Annotated[float, typer.Option(help="Seconds to keep retrying before giving up")] = 120.0,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Send one event from options, or many from an NDJSON file or stdin (batched, retried, with progress)."""
    if file is not None:
        if tenant or metric or quantity:
            raise typer.BadParameter("give either --file or --tenant/--metric/--quantity, not both")
        with connect(url, key, source=source) as client:
            _send_file(client, file, batch_size, timeout)
        return
    if not (tenant and metric and quantity):
        given = (("--tenant", tenant), ("--metric", metric), ("--quantity", quantity))
        missing = ", ".join(name for name, value in given if not value)
        raise typer.BadParameter(f"{missing} required (or --file for NDJSON)")
    dimensions = {}
    for item in dimension or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{item!r} is not name=value", param_hint="--dimension")
        dimensions[name] = value
    with connect(url, key, source=source) as client, service_errors(url):
        accepted = client.record(
            tenant,
            metric,
            quantity,
            unit=unit,
            user_id=user,
            resource_id=resource,
            dimensions=dimensions,
            idempotency_key=idempotency_key,
            event_id=event_id,
            timestamp=timestamp,
        )
    out.print(f"accepted {accepted.event_ids[0]}", highlight=False)


def _send_file(client: MeteringClient, file: str, batch_size: int, timeout: float) -> None:
    """Stream the events to a buffered writer: a bad line is reported and skipped, the rest is sent."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    from metering.client import BufferedUsageWriter, BufferFull, InvalidEvent  # noqa: PLC0415
    from metering.core.events import BodyError, FieldError, decode_json  # noqa: PLC0415

    total = None if file == "-" else _count_lines(Path(file))
    refused: list[RejectedEvent] = []
    invalid = 0
    line_of: dict[str, int] = {}
    writer = BufferedUsageWriter(client, batch_size, 0.5, max(4 * batch_size, 1000), on_rejected=refused.extend)
    columns = (TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with _open_input(file) as stream, Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("send", total=total)
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                fields = decode_json(line)
                if not isinstance(fields, dict):
                    raise InvalidEvent([FieldError(0, "(event)", "must be a JSON object")])
                # Waits while the buffer is full; gives up when the service has taken nothing for `timeout`.
                event = writer.record_event(fields, timeout=timeout)
            except BodyError as error:
                invalid += 1
                err.print(f"line {number}: {str(error).removeprefix('body is ')}", highlight=False)
                continue
            except InvalidEvent as error:
                invalid += 1
                err.print(
                    f"line {number}: " + "; ".join(f"{p.field} {p.message}" for p in error.errors), highlight=False
                )
                continue
            except BufferFull:
                err.print(f"[red]stopped reading at line {number}: nothing was accepted for {timeout:g} s[/red]")
                break
            line_of[event.event_id or ""] = number
            progress.update(task, completed=writer.stats.sent)
        deadline = time.monotonic() + timeout
        while not writer.flush(timeout=0.2) and time.monotonic() < deadline:
            progress.update(task, completed=writer.stats.sent)
        report = writer.close(timeout=0)
        progress.update(task, completed=report.sent)
    for rejection in refused:
        number = line_of.get(rejection.event.event_id or "", 0)
        err.print(f"line {number}: refused ({rejection.status}): " + "; ".join(rejection.reasons), highlight=False)
    stats = writer.stats
    out.print(
        f"sent {report.sent} events in {stats.requests} requests; {len(refused)} refused; "
        f"{invalid} invalid lines; {len(report.unsent)} not sent",
        highlight=False,
    )
    if report.unsent:
        err.print(f"[red]gave up: {stats.last_error}[/red]", highlight=False)
    if refused or invalid or report.unsent:
        raise typer.Exit(1)


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as stream:
            return sum(1 for line in stream if line.strip())
    except OSError as error:
        raise typer.BadParameter(f"cannot read {path}: {error.strerror}", param_hint="--file") from None


@contextmanager
def _open_input(file: str) -> Iterator[IO[str]]:
    if file == "-":
        yield sys.stdin
        return
    with open(file, encoding="utf-8") as stream:
        yield stream
