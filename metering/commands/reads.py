"""`metering usage`, `history` and `quota`: reading usage back, as tables, JSON or CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table

from metering.commands.common import (
    DEFAULT_URL,
    Format,
    Key,
    OutputFormat,
    Url,
    connect,
    day,
    echo_json,
    fields_table,
    out,
    service_errors,
)
from metering.core.meters import GroupKind
from metering.core.periods import Granularity


def usage(
    tenant: Annotated[str, typer.Argument(help="Tenant id")],
    metric: Annotated[str, typer.Argument(help="Meter name")],
    period: Annotated[str | None, typer.Option(help="Start date of another period (YYYY-MM-DD)")] = None,
    group_by: Annotated[str | None, typer.Option(help="A dimension to break the total down by")] = None,
    output: Format = OutputFormat.TABLE,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """A tenant's usage of a meter in the current billing period (or another one)."""
    with connect(url, key) as client, service_errors(url):
        result = client.current_usage(tenant, metric, period=day(period, "--period"), group_by=group_by)
    if output is not OutputFormat.TABLE:
        echo_json(result)
        return
    out.print(fields_table(result, skip=("groups",)))
    if result.groups is not None:
        groups = Table(group_by or "group", "total", "events")
        labels = {GroupKind.ABSENT: f"(without {group_by})", GroupKind.OVERFLOW: "(other values)"}
        for group in result.groups:
            label = labels.get(group.kind, group.key or "")
            groups.add_row(label, str(group.total), str(group.event_count))
        out.print(groups)


def history(
    tenant: Annotated[str, typer.Argument(help="Tenant id")],
    metric: Annotated[str, typer.Argument(help="Meter name")],
    start: Annotated[str | None, typer.Option(help="First day, YYYY-MM-DD (default: 6 days before end)")] = None,
    end: Annotated[str | None, typer.Option(help="Last day, YYYY-MM-DD (default: today, UTC)")] = None,
    granularity: Annotated[Granularity, typer.Option(help="hour, day or period")] = Granularity.DAY,
    output: Annotated[OutputFormat, typer.Option("--format", help="table, json or csv")] = OutputFormat.TABLE,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Usage in hour, day or period buckets between two dates (inclusive, in the tenant's time zone)."""
    last = day(end, "--end") or datetime.now(UTC).date()
    first = day(start, "--start") or last - timedelta(days=6)
    with connect(url, key) as client, service_errors(url):
        buckets = client.usage_history(tenant, metric, first, last, granularity)
    if output is OutputFormat.JSON:
        from metering.api.contract import HistoryResponse  # noqa: PLC0415

        echo_json(HistoryResponse(items=buckets))
    elif output is OutputFormat.CSV:
        text = io.StringIO()
        rows = csv.writer(text, lineterminator="\n")
        rows.writerow(["start", "end", "total", "event_count"])
        for bucket in buckets:
            item = bucket.model_dump(mode="json")
            rows.writerow([item["start"], item["end"], item["total"], item["event_count"]])
        typer.echo(text.getvalue(), nl=False)
    else:
        table = Table("start", "end", "total", "events", title=f"{tenant} {metric} by {granularity}")
        for bucket in buckets:
            item = bucket.model_dump(mode="json")
            table.add_row(item["start"], item["end"], item["total"], str(item["event_count"]))
        out.print(table)


def quota(
    tenant: Annotated[str, typer.Argument(help="Tenant id")],
    metric: Annotated[str, typer.Argument(help="Meter name")],
    requested: Annotated[str, typer.Option(help="How much more the tenant wants to use")] = "0",
    output: Format = OutputFormat.TABLE,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """May the tenant use `requested` more of the meter in its current period?"""
    with connect(url, key) as client, service_errors(url):
        decision = client.check_quota(tenant, metric, requested)
    if output is not OutputFormat.TABLE:
        echo_json(decision)
        return
    out.print(fields_table(decision))
