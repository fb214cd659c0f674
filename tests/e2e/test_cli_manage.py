"""`metering tenants set/get` and `metering periods close`, and the client's operator calls, against the operator
routes of the dev host (`/api/manage/...`, admin key only)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from typer.testing import CliRunner, Result

from metering.cli import app
from metering.client import MeteringClient, MetricLimits, TenantSettings, Unauthorized
from tests.e2e.conftest import ADMIN_KEY, FUNCTION_KEY


@pytest.fixture
def run(devhost):
    runner = CliRunner(env={"METERING_URL": devhost.base_url, "METERING_ADMIN_KEY": ADMIN_KEY})

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args))

    return invoke


def test_tenants_set_then_get(run, tenant):
    result = run(
        "tenants", "set", tenant, "--plan", "pro", "--limit", "api.requests=80:100", "--limit", "storage.gb=:50",
        "--anchor-day", "15", "--timezone", "Europe/Paris", "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = {
        "tenant_id": tenant,
        "plan": "pro",
        "limits": {"api.requests": {"soft": "80", "hard": "100"}, "storage.gb": {"soft": None, "hard": "50"}},
        "billing_anchor_day": 15,
        "timezone": "Europe/Paris",
    }
    assert {key: json.loads(result.stdout)[key] for key in expected} == expected
    shown = run("tenants", "get", tenant, "--format", "json")
    assert shown.exit_code == 0, shown.output
    assert {key: json.loads(shown.stdout)[key] for key in expected} == expected
    # What is not given keeps its value.
    assert run("tenants", "set", tenant, "--plan", "enterprise").exit_code == 0
    table = run("tenants", "get", tenant)
    assert table.exit_code == 0, table.output
    assert "enterprise" in table.stdout
    assert "Europe/Paris" in table.stdout
    assert "100" in table.stdout


def test_a_bad_limit_is_refused_before_sending(run, tenant):
    result = run("tenants", "set", tenant, "--limit", "api.requests=lots")
    assert result.exit_code == 2
    assert "metric=soft:hard" in result.output


def test_periods_close(run, previous_period):
    result = run("periods", "close", "--format", "json")
    assert result.exit_code == 0, result.output
    closed = json.loads(result.stdout)["closed"]
    assert all({"tenant_id", "period_start", "period_end"} <= set(item) for item in closed)
    table = run("periods", "close")
    assert table.exit_code == 0, table.output
    assert "no period was due for closing" in table.stdout or "periods closed" in table.stdout


def test_operator_routes_refuse_the_function_key(run, tenant):
    result = run("tenants", "get", tenant, "--admin-key", FUNCTION_KEY)
    assert result.exit_code == 1
    assert "401" in result.stderr
    assert run("periods", "close", "--admin-key", FUNCTION_KEY).exit_code == 1


def test_the_client_operator_calls(devhost, tenant, previous_period):
    with MeteringClient(devhost.base_url, FUNCTION_KEY, admin_key=ADMIN_KEY) as client:
        settings = client.set_tenant(tenant, plan="pro", limits={"api.requests": MetricLimits(soft="8", hard="10.5")})
        assert isinstance(settings, TenantSettings)
        assert settings.limits["api.requests"] == MetricLimits(soft=Decimal(8), hard=Decimal("10.5"))
        assert client.get_tenant(tenant).plan == "pro"
        assert isinstance(client.close_periods().closed, list)
    with MeteringClient(devhost.base_url, FUNCTION_KEY) as user, pytest.raises(Unauthorized):
        user.get_tenant(tenant)


def test_the_operators_commands_reach_their_routes(run, tenant):
    journal = run("journal", "list", tenant)
    assert journal.exit_code == 0, journal.output
    assert "no journal entries" in journal.stdout
    letters = run("dead-letters", "list", "--status", "waiting", "--format", "json")
    assert letters.exit_code == 0, letters.output
    assert {"items", "total", "next_offset"} <= set(json.loads(letters.stdout))
    late = run("late", "list", "--tenant", tenant, "--format", "json")
    assert json.loads(late.stdout)["items"] == []
    unknown = run("late", "apply", tenant, "0" * 32)
    assert unknown.exit_code == 1
    assert "404" in unknown.stderr
    assert f"{tenant} has no late event" in unknown.stderr
    refused = run("late", "discard", tenant, "0" * 32, "--reason", "")
    assert refused.exit_code == 1
    assert "reason must be 1 to 500 printable characters" in refused.stderr
    assert run("dead-letters", "redrive", "AAAA").exit_code == 1
