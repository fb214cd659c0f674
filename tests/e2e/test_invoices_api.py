"""The invoice preview end to end through the dev host: the route, its CSV, the client and `metering invoice`.

(Rated statements of closed periods are checked in test_billing_api.py, where the previous period is closed.)
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from metering.cli import app
from metering.client import MeteringClient, NotFound
from metering.core.decimals import to_str
from metering.core.money import shown
from metering.quotas.plans import load_plans
from tests.e2e.conftest import ADMIN_KEY, FUNCTION_KEY, eventually
from tests.e2e.test_api import problem_of


def stamp(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


@pytest.fixture
def on_pro(devhost: Any, tenant: str) -> str:
    with httpx.Client(base_url=devhost.base_url, headers={"x-functions-key": ADMIN_KEY}, timeout=30) as admin:
        assert admin.put(f"/manage/tenants/{tenant}", json={"plan": "pro"}).status_code == 200
    return tenant


def send(api: httpx.Client, tenant: str) -> None:
    now = stamp(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1))
    events = [
        {"event_id": "i1", "tenant_id": tenant, "metric": "api.requests", "quantity": "120000", "timestamp": now},
        {"event_id": "i2", "tenant_id": tenant, "metric": "compute.seconds", "quantity": "1800", "timestamp": now},
    ]
    response = api.post("/events", json=[{**e, "source": "e2e-invoices"} for e in events])
    assert response.status_code == 202, response.text


def preview_of(api: httpx.Client, tenant: str) -> dict[str, Any]:
    response = api.get(f"/invoices/{tenant}/preview")
    assert response.status_code == 200, response.text
    return response.json()


def test_the_preview_rates_the_open_period_and_forecasts_its_end(api, on_pro):
    tenant = on_pro
    empty = preview_of(api, tenant)
    assert [(line["kind"], line["amount"]) for line in empty["lines"]] == [("fee", "49.00")]
    send(api, tenant)

    def counted() -> dict[str, Any]:
        body = preview_of(api, tenant)
        assert len(body["lines"]) == 3
        return body

    preview = eventually(counted)
    assert (preview["tenant_id"], preview["currency"], preview["plan"]) == (tenant, "USD", "pro")
    assert preview["plan_version"] == load_plans().version
    assert [(line["metric"], line["quantity"], line["amount"]) for line in preview["lines"]] == [
        (None, "1", "49.00"),
        ("api.requests", "120000", "8.00"),  # 100K included, 20 thousands at 0.40
        ("compute.seconds", "1800", "0.03"),  # half an hour at 0.06
    ]
    assert preview["subtotal"] == "57.03"

    start, end, as_of = (datetime.fromisoformat(preview[name]) for name in ("period_start", "period_end", "as_of"))
    if as_of - start < timedelta(hours=24):
        assert preview["forecast"] is None
    else:
        elapsed, length = (span // timedelta(microseconds=1) for span in (as_of - start, end - start))
        [fee, calls, compute] = preview["forecast"]["lines"]
        assert calls["quantity"] == to_str(shown(Fraction(120000) * length / elapsed))
        assert compute["quantity"] == to_str(shown(Fraction(1800) * length / elapsed))
        assert fee["amount"] == "49.00"
        assert Fraction(calls["quantity"]) > 120000

    as_csv = api.get(f"/invoices/{tenant}/preview", headers={"accept": "text/csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    to_date = [(r["metric"], r["amount"], r["currency"]) for r in rows if r["figures"] == "to_date"]
    assert to_date == [("", "49.00", "USD"), ("api.requests", "8.00", "USD"), ("compute.seconds", "0.03", "USD")]
    assert len(rows) == (3 if preview["forecast"] is None else 6)


def test_bad_previews(api, devhost):
    body = problem_of(api.get("/invoices/bad%20tenant/preview"), 400)
    assert body["errors"][0]["field"] == "tenant_id"
    assert httpx.get(f"{devhost.base_url}/invoices/acme/preview").status_code == 401


def test_the_client_and_the_command_line_show_the_same_preview(devhost, api, on_pro):
    tenant = on_pro
    send(api, tenant)
    eventually(lambda: len(preview_of(api, tenant)["lines"]) == 3)
    with MeteringClient(devhost.base_url, FUNCTION_KEY) as client:
        preview = client.invoice_preview(tenant)
        assert (preview.plan, str(preview.subtotal)) == ("pro", "57.03")
        assert [str(line.amount) for line in preview.lines] == ["49.00", "8.00", "0.03"]
        assert client.invoice_csv(tenant).splitlines()[0].endswith(",amount,figures")
        assert client.statements(tenant) == []
        with pytest.raises(NotFound):
            client.statement(tenant, preview.period_start.date())

    runner = CliRunner(env={"METERING_URL": devhost.base_url, "METERING_KEY": FUNCTION_KEY})
    result = runner.invoke(app, ["invoice", tenant, "--format", "json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert (printed["subtotal"], printed["lines"][1]["amount"]) == ("57.03", "8.00")
    table = runner.invoke(app, ["invoice", tenant])
    assert table.exit_code == 0, table.output
    assert "plan pro" in table.stdout
    assert "57.03" in table.stdout
    assert "(base fee)" in table.stdout
    as_csv = runner.invoke(app, ["invoice", tenant, "--format", "csv"])
    assert as_csv.exit_code == 0, as_csv.output
    assert [r["amount"] for r in csv.DictReader(io.StringIO(as_csv.stdout)) if r["figures"] == "to_date"] == [
        "49.00",
        "8.00",
        "0.03",
    ]
    missing = runner.invoke(app, ["invoice", tenant, "--period", "2020-01-01"])
    assert missing.exit_code == 1
    assert "404" in missing.output
