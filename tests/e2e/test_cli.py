"""The `metering` command line through typer's test runner against the dev host (real HTTP)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from metering.cli import app
from tests.e2e.conftest import FUNCTION_KEY, eventually
from tests.e2e.test_client import closed_port


@pytest.fixture
def run(devhost):
    runner = CliRunner(env={"METERING_URL": devhost.base_url, "METERING_KEY": FUNCTION_KEY})

    def invoke(*args: str, stdin: str | None = None) -> Result:
        return runner.invoke(app, list(args), input=stdin)

    return invoke


def usage_json(run, tenant: str) -> dict:
    result = run("usage", tenant, "api.requests", "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def settle(run, tenant: str, total: str, count: int) -> dict:
    def check() -> dict:
        usage = usage_json(run, tenant)
        assert (usage["total"], usage["event_count"]) == (total, count)
        return usage

    return eventually(check)


def ndjson_line(tenant: str, quantity: str = "0.5", **fields) -> str:
    return json.dumps(
        {"tenant_id": tenant, "metric": "api.requests", "quantity": quantity, "source": "cli-test", **fields}
    )


def test_send_one_event_from_options_then_read_it_back(run, tenant):
    result = run(
        "send", "--tenant", tenant, "--metric", "api.requests", "--quantity", "2.5",
        "-d", "region=eu", "--event-id", "cli-1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "accepted cli-1"
    usage = settle(run, tenant, "2.5", 1)
    assert usage["unit"] == "count"
    table = run("usage", tenant, "api.requests", "--group-by", "region")
    assert table.exit_code == 0, table.output
    assert "2.5" in table.stdout
    assert "eu" in table.stdout
    assert "event_count" in table.stdout


def test_send_refused_prints_the_problem_and_fails(run, tenant):
    result = run("send", "--tenant", tenant, "--metric", "no.such.meter", "--quantity", "1")
    assert result.exit_code == 1
    assert "422 Invalid events" in result.stderr
    assert "metric: is not a meter of the catalog" in result.stderr
    malformed = run("send", "--tenant", tenant, "--metric", "api.requests", "--quantity", "lots")
    assert malformed.exit_code == 1
    assert "quantity:" in malformed.stderr


def test_send_ndjson_file_in_batches_reporting_bad_lines(run, tenant, tmp_path: Path):
    lines = [ndjson_line(tenant) for _ in range(1200)]
    lines.insert(2, "{not json")
    lines.insert(6, ndjson_line(tenant, metric="no.such.meter"))
    lines.insert(9, "")
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run("send", "--file", str(path), "--batch-size", "500")
    assert result.exit_code == 1, result.output  # not everything was sent
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("sent 1200 events in ")
    assert summary.endswith("1 refused; 1 invalid lines; 0 not sent")
    assert "line 3: not valid JSON" in result.stderr
    assert "line 7: refused (422): metric: is not a meter of the catalog" in result.stderr
    settle(run, tenant, "600", 1200)


def test_send_ndjson_from_stdin(run, tenant):
    stdin = "\n".join([ndjson_line(tenant, "1", event_id="s-1"), ndjson_line(tenant, "2", event_id="s-2")]) + "\n"
    result = run("send", "--file", "-", stdin=stdin)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().startswith("sent 2 events in 1 requests; 0 refused")
    settle(run, tenant, "3", 2)
    # The same lines again: they carry their ids, so nothing is counted twice.
    assert run("send", "--file", "-", stdin=stdin).exit_code == 0
    assert run("send", "--tenant", tenant, "--metric", "api.requests", "--quantity", "4").exit_code == 0
    settle(run, tenant, "7", 3)


def test_history_as_table_json_and_csv(run, tenant):
    assert run("send", "--tenant", tenant, "--metric", "api.requests", "--quantity", "1.25").exit_code == 0
    settle(run, tenant, "1.25", 1)
    today = datetime.now(UTC).date().isoformat()
    as_csv = run("history", tenant, "api.requests", "--end", today, "--format", "csv")
    assert as_csv.exit_code == 0, as_csv.output
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == 7  # the default: the week up to --end
    assert [(row["total"], row["event_count"]) for row in rows[-1:]] == [("1.25", "1")]
    assert all((row["total"], row["event_count"]) == ("0", "0") for row in rows[:-1])
    as_json = run(
        "history", tenant, "api.requests", "--start", today, "--end", today, "--granularity", "hour", "--format", "json"
    )
    assert as_json.exit_code == 0, as_json.output
    items = json.loads(as_json.stdout)["items"]
    assert len(items) == 24
    assert sum(float(item["total"]) for item in items) == 1.25
    table = run("history", tenant, "api.requests", "--start", today, "--end", today)
    assert table.exit_code == 0, table.output
    assert f"{tenant} api.requests by day" in table.stdout
    assert "1.25" in table.stdout
    bad = run("history", tenant, "api.requests", "--start", "yesterday")
    assert bad.exit_code == 2
    assert "is not a date" in bad.output


def test_quota(run, tenant):
    assert run("send", "--tenant", tenant, "--metric", "api.requests", "--quantity", "5").exit_code == 0
    settle(run, tenant, "5", 1)
    result = run("quota", tenant, "api.requests", "--requested", "2", "--format", "json")
    assert result.exit_code == 0, result.output
    decision = json.loads(result.stdout)
    assert (decision["decision"], decision["current"], decision["projected"], decision["remaining"]) == (
        "unlimited",
        "5",
        "7",
        None,
    )
    table = run("quota", tenant, "api.requests", "--requested", "2")
    assert "unlimited" in table.stdout
    assert "projected" in table.stdout


def test_meters_list_and_validate(run, tmp_path: Path):
    listed = run("meters", "list")
    assert listed.exit_code == 0, listed.output
    assert "api.requests" in listed.stdout
    assert "users.active" in listed.stdout
    as_json = json.loads(run("meters", "list", "--format", "json").stdout)
    assert as_json["meters"]["credits.balance"]["allow_negative"] is True
    assert run("meters", "validate").exit_code == 0
    broken = tmp_path / "meters.toml"
    broken.write_text('version = "1"\n[meters.x]\nunit = "count"\naggregation = "median"\n', encoding="utf-8")
    result = run("meters", "list", "--file", str(broken))
    assert result.exit_code == 1
    assert "aggregation" in result.stderr


def test_keys_and_connection_problems_are_messages_not_tracebacks(devhost, tenant):
    bare = CliRunner(env={"METERING_URL": devhost.base_url, "METERING_KEY": None})
    no_key = bare.invoke(app, ["usage", tenant, "api.requests"])
    assert no_key.exit_code == 2
    assert "no key: pass --key or set METERING_KEY" in no_key.stderr
    wrong = bare.invoke(app, ["usage", tenant, "api.requests", "--key", "wrong"])
    assert wrong.exit_code == 1
    assert "401 Unauthorized" in wrong.stderr
    # Options win over the environment.
    with_options = bare.invoke(app, ["usage", tenant, "api.requests", "--key", FUNCTION_KEY, "--format", "json"])
    assert with_options.exit_code == 0, with_options.output
    assert json.loads(with_options.stdout)["tenant_id"] == tenant
    sock = closed_port()
    try:
        down = bare.invoke(
            app,
            ["quota", tenant, "api.requests", "--url", f"http://127.0.0.1:{sock.getsockname()[1]}/api", "--key", "k"],
        )
    finally:
        sock.close()
    assert down.exit_code == 1
    assert "cannot reach" in down.stderr
