"""What every command against the service shares: where it is and with which key, output formats, and
problem details printed as messages with exit status 1 instead of tracebacks.

The command line starts at once because nothing heavy is imported before a command runs: the client (httpx),
the dev host and the Azure SDKs are imported inside the commands that use them. Keep it so (a test holds it):
a module of this package imports at its top only typer, rich and the light parts of the project."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from metering.api.contract import DEV_HOST_URL

if TYPE_CHECKING:
    from metering.client import MeteringClient
    from metering.core.events import FieldError

out = Console()
err = Console(stderr=True, soft_wrap=True)  # messages stay one line each, for grep


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


Url = Annotated[str, typer.Option("--url", envvar="METERING_URL", help="Base URL of the service's API")]
Key = Annotated[str | None, typer.Option("--key", envvar="METERING_KEY", help="Function key (metering dev prints it)")]
AdminKey = Annotated[str | None, typer.Option("--admin-key", envvar="METERING_ADMIN_KEY", help="Admin (master) key")]
Format = Annotated[OutputFormat, typer.Option("--format", help="table or json")]


DEFAULT_URL = DEV_HOST_URL


def connect(url: str, key: str | None, *, admin: bool = False, **options: Any) -> MeteringClient:
    from metering.client import MeteringClient  # noqa: PLC0415 (httpx: only for commands that call the service)

    if not key:
        variable, option = ("METERING_ADMIN_KEY", "--admin-key") if admin else ("METERING_KEY", "--key")
        err.print(f"[red]no key: pass {option} or set {variable} (metering dev prints the keys)[/red]")
        raise typer.Exit(2)
    return MeteringClient(url, key, admin_key=key if admin else None, **options)


@contextmanager
def service_errors(url: str) -> Iterator[None]:
    """The service's problem details as a message and exit status 1, instead of a traceback."""
    from metering.client import ConnectionFailed, InvalidEvent, ProblemError  # noqa: PLC0415

    try:
        yield
    except ConnectionFailed:
        err.print(f"[red]cannot reach {url}: is the service (or `metering dev`) running?[/red]")
        raise typer.Exit(1) from None
    except InvalidEvent as error:
        print_field_errors("invalid event", error.errors)
        raise typer.Exit(1) from None
    except ProblemError as error:
        print_field_errors(f"{error.status} {error.title}: {error.detail}", error.errors)
        raise typer.Exit(1) from None


def print_field_errors(headline: str, problems: list[FieldError]) -> None:
    err.print(f"[red]{headline}[/red]", highlight=False)
    for problem in problems:
        err.print(f"  {problem.field}: {problem.message}", highlight=False)


def day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=option) from None


def fields_table(model: BaseModel, skip: tuple[str, ...] = ()) -> Table:
    table = Table("field", "value", show_header=False)
    for name, value in model.model_dump(mode="json").items():
        if name not in skip:
            table.add_row(name, "" if value is None else str(value))
    return table


def echo_json(model: BaseModel) -> None:
    typer.echo(model.model_dump_json(indent=2))
