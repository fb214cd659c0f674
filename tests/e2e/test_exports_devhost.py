"""Exports end to end: `metering dev` (a process of its own, since a process builds its services from its settings
once) with Stripe and the Marketplace on, pointed at local servers that behave as they do (tests/targets.py), the
Marketplace's token obtained by the real managed identity credential from an identity endpoint served as App
Service serves it. Usage posted to the API reaches the targets through `POST /api/manage/exports/run`, and `GET
/api/manage/exports/{tenant_id}` shows it reconciled, to the last digit; a second run sends nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from typer.testing import CliRunner

from metering.cli import app
from metering.core.clock import utc_now
from tests.e2e.conftest import eventually
from tests.targets import STRIPE_KEY, IdentityEndpoint, MarketplaceServer, StripeServer

KEY = "exports-function-key"
ADMIN = "exports-admin-key"


@pytest.fixture(scope="module")
def stripe() -> Iterator[StripeServer]:
    server = StripeServer(utc_now).meter("api_requests", "active_users", "storage_gb", "compute_seconds").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def marketplace() -> Iterator[MarketplaceServer]:
    server = MarketplaceServer(utc_now).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def identity() -> Iterator[IdentityEndpoint]:
    endpoint = IdentityEndpoint()
    yield endpoint
    endpoint.stop()


@pytest.fixture(scope="module")
def exports_devhost(
    tmp_path_factory: pytest.TempPathFactory,
    stripe: StripeServer,
    marketplace: MarketplaceServer,
    identity: IdentityEndpoint,
) -> Iterator[str]:
    env = {
        **os.environ,
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "METERING_STORE": "table",
        "METERING_FUNCTION_KEY": KEY,
        "METERING_ADMIN_KEY": ADMIN,
        "METERING_STRIPE_API_KEY": STRIPE_KEY,
        "METERING_STRIPE_API_BASE": stripe.url,
        "METERING_MARKETPLACE_ENABLED": "true",
        "METERING_MARKETPLACE_API_BASE": marketplace.url,
        # Where App Service and Functions tell an app's managed identity credential to get its tokens.
        "IDENTITY_ENDPOINT": identity.url,
        "IDENTITY_HEADER": "e2e-identity-header",
        # Hours are exported once the hub has applied past their end: no settle delay on top here.
        "EXPORT_SETTLE_MINUTES": "0",
        # Runs only when the test asks, never behind its back.
        "EXPORT_SCHEDULE": "0 0 0 1 1 *",
        "CLOSE_PERIODS_SCHEDULE": "0 0 0 1 1 *",
    }
    data = tmp_path_factory.mktemp("exports-devhost")
    process = subprocess.Popen(
        [sys.executable, "-m", "metering", "dev", "--port", "0", "--data", str(data)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    try:
        assert process.stdout is not None
        url = None
        for line in process.stdout:
            output.append(line)
            if "Functions running at" in line:
                url = line.split("Functions running at", 1)[1].split()[0]
                break
        assert url, "the dev host did not start:\n" + "".join(output)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.communicate(timeout=30)


def test_usage_reaches_stripe_once_and_reconciles_through_the_routes(exports_devhost, stripe):
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    # Two hours ago, at least: settled once the hub (the local queue) has applied it. (Early on the first of a
    # month, the previous period: the reconciliation is then asked for that one.)
    at = (datetime.now(UTC) - timedelta(hours=2)).replace(minute=5, second=0, microsecond=0)
    with httpx.Client(base_url=exports_devhost, timeout=30) as client:
        admin = {"x-functions-key": ADMIN}
        linked = client.put(f"/manage/tenants/{tenant}", headers=admin, json={"stripe_customer_id": "cus_e2e"})
        assert linked.status_code == 200, linked.text
        assert linked.json()["stripe_customer_id"] == "cus_e2e"
        events = [
            {"event_id": f"{tenant}-1", "tenant_id": tenant, "metric": "api.requests", "quantity": "1200",
             "timestamp": at.isoformat(), "source": "e2e"},
            {"event_id": f"{tenant}-2", "tenant_id": tenant, "metric": "api.requests", "quantity": "34",
             "timestamp": (at + timedelta(minutes=20)).isoformat(), "source": "e2e"},
            {"event_id": f"{tenant}-3", "tenant_id": tenant, "metric": "users.active", "quantity": 1,
             "timestamp": at.isoformat(), "source": "e2e", "user_id": "ada"},
        ]  # fmt: skip
        posted = client.post("/events", headers={"x-functions-key": KEY}, json=events)
        assert posted.status_code == 202, posted.text
        # The tenant is on calendar months in UTC: the events' period is this month's, or, in a month's first
        # hours, the previous one's.
        params = {"period": at.date().replace(day=1).isoformat()}

        def counted() -> bool:
            found = client.get(f"/manage/exports/{tenant}", headers=admin, params=params).json()
            metrics = found["targets"][0]["metrics"]
            return {m["metric"]: m["ours"] for m in metrics}.get("api.requests") == "1234"

        eventually(counted)
        run = client.post("/manage/exports/run", headers=admin)
        assert run.status_code == 200, run.text
        assert run.json()["sent"] == 2  # an hour of calls, and the distinct users so far
        assert run.json()["pending"] == 0
        reconciled = client.get(f"/manage/exports/{tenant}", headers=admin, params=params)
        assert reconciled.status_code == 200
        stripe_view, marketplace_view = reconciled.json()["targets"]
        assert (stripe_view["target"], marketplace_view["target"]) == ("stripe", "marketplace")
        assert not marketplace_view["linked"]  # linked to Stripe only: nothing went to the Marketplace
        views = {m["metric"]: m for m in stripe_view["metrics"]}
        assert (views["api.requests"]["acknowledged"], views["api.requests"]["difference"]) == ("1234", "0")
        assert (views["users.active"]["acknowledged"], views["users.active"]["difference"]) == ("1", "0")
        assert stripe.total("cus_e2e", "api_requests") == Decimal(1234)
        again = client.post("/manage/exports/run", headers=admin).json()
        assert again == {"sent": 0, "failed": 0, "pending": 0}
        assert stripe.total("cus_e2e", "api_requests") == Decimal(1234)
        # Operator routes take the admin key only.
        assert client.post("/manage/exports/run", headers={"x-functions-key": KEY}).status_code == 401
        assert client.get("/manage/exports/bad tenant", headers=admin).status_code == 400


def test_the_command_line_runs_exports_and_checks_the_reconciliation(exports_devhost, stripe):
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    at = (datetime.now(UTC) - timedelta(hours=2)).replace(minute=10, second=0, microsecond=0)
    period = at.date().replace(day=1).isoformat()
    runner = CliRunner(env={"METERING_URL": exports_devhost, "METERING_ADMIN_KEY": ADMIN})
    with httpx.Client(base_url=exports_devhost, timeout=30) as client:
        admin = {"x-functions-key": ADMIN}
        assert client.put(f"/manage/tenants/{tenant}", headers=admin, json={"stripe_customer_id": "cus_cli"}).is_success
        event = {"event_id": f"{tenant}-1", "tenant_id": tenant, "metric": "api.requests", "quantity": "7",
                 "timestamp": at.isoformat(), "source": "e2e"}  # fmt: skip
        assert client.post("/events", headers={"x-functions-key": KEY}, json=event).status_code == 202

        def counted() -> bool:
            shown = runner.invoke(app, ["exports", "show", tenant, "--period", period, "--format", "json"])
            metrics = json.loads(shown.stdout)["targets"][0]["metrics"]
            return {m["metric"]: m["ours"] for m in metrics}.get("api.requests") == "7"

        eventually(counted)
    # Counted and not sent yet: --check says so with its exit status, and the table gives the reason.
    differs = runner.invoke(app, ["exports", "show", tenant, "--period", period, "--check"])
    assert differs.exit_code == 3, differs.output
    assert "not sent yet" in differs.stdout
    ran = runner.invoke(app, ["exports", "run", "--format", "json"])
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.stdout)["sent"] >= 1
    assert stripe.total("cus_cli", "api_requests") == Decimal(7)
    same = runner.invoke(app, ["exports", "show", tenant, "--period", period, "--check"])
    assert same.exit_code == 0, same.output
    assert "cus_cli" in same.stdout or "stripe" in same.stdout
    assert runner.invoke(app, ["exports", "run"]).stdout.strip() == "sent 0, failed 0, pending 0"
    bad = runner.invoke(app, ["exports", "show", tenant, "--period", "2026-13-01"])
    assert bad.exit_code == 2


def test_usage_above_the_plan_reaches_the_marketplace_with_the_identitys_token(exports_devhost, marketplace, identity):
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    resource = str(uuid.uuid4())
    at = (datetime.now(UTC) - timedelta(hours=2)).replace(minute=15, second=0, microsecond=0)
    params = {"period": at.date().replace(day=1).isoformat()}
    with httpx.Client(base_url=exports_devhost, timeout=30) as client:
        admin = {"x-functions-key": ADMIN}
        link = {"plan": "pro", "marketplace_resource_id": resource, "marketplace_plan_id": "gold"}
        assert client.put(f"/manage/tenants/{tenant}", headers=admin, json=link).is_success
        event = {"event_id": f"{tenant}-1", "tenant_id": tenant, "metric": "api.requests", "quantity": "100050",
                 "timestamp": at.isoformat(), "source": "e2e"}  # fmt: skip
        assert client.post("/events", headers={"x-functions-key": KEY}, json=event).status_code == 202

        def views() -> dict[str, dict[str, str]]:
            found = client.get(f"/manage/exports/{tenant}", headers=admin, params=params).json()
            [target] = [t for t in found["targets"] if t["target"] == "marketplace"]
            return {m["metric"]: m for m in target["metrics"]}

        eventually(lambda: views()["api.requests"]["ours"] == "50")  # above the 100,000 pro includes
        assert client.post("/manage/exports/run", headers=admin).json()["sent"] == 1
        view = views()["api.requests"]
        assert (view["acknowledged"], view["difference"], view["reasons"]) == ("50", "0", [])
    assert marketplace.total(resource, "api_requests") == Decimal(50)
    # The token the Marketplace took came from the identity endpoint, for the metering service's resource.
    assert identity.requests
    query, header = identity.requests[-1]
    assert header == "e2e-identity-header"
    assert query["resource"] == ["20e940b3-4c77-4b0b-9a53-9e16a1b010a7"]


def test_tenants_set_links_and_unlinks_a_tenant_at_the_targets(exports_devhost):
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    runner = CliRunner(env={"METERING_URL": exports_devhost, "METERING_ADMIN_KEY": ADMIN})
    linked = runner.invoke(
        app,
        ["tenants", "set", tenant, "--stripe-customer", "cus_Link1", "--marketplace-resource", "res-1",
         "--marketplace-plan", "gold", "--format", "json"],
    )  # fmt: skip
    assert linked.exit_code == 0, linked.output
    body = json.loads(linked.stdout)
    assert (body["stripe_customer_id"], body["marketplace_resource_id"], body["marketplace_plan_id"]) == (
        "cus_Link1",
        "res-1",
        "gold",
    )
    # What is not given keeps its value; an empty one removes the link.
    unlinked = runner.invoke(app, ["tenants", "set", tenant, "--stripe-customer", "", "--format", "json"])
    assert unlinked.exit_code == 0, unlinked.output
    body = json.loads(unlinked.stdout)
    assert (body["stripe_customer_id"], body["marketplace_plan_id"]) == (None, "gold")
    shown = runner.invoke(app, ["exports", "show", tenant, "--format", "json"])
    assert [t["linked"] for t in json.loads(shown.stdout)["targets"]] == [False, True]
    # A link the target could not take is refused, naming the field.
    bad = runner.invoke(app, ["tenants", "set", tenant, "--stripe-customer", "cus no spaces"])
    assert bad.exit_code == 1
    assert "stripe_customer_id" in bad.output


def test_the_console_shows_a_tenants_exports_reconciled_and_runs_them(exports_devhost, stripe, browser):
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    at = (datetime.now(UTC) - timedelta(hours=2)).replace(minute=25, second=0, microsecond=0)
    if at.date().replace(day=1) != datetime.now(UTC).date().replace(day=1):
        at = datetime.now(UTC).replace(day=1, hour=0, minute=25, second=0, microsecond=0)  # the console shows now's
    with httpx.Client(base_url=exports_devhost, timeout=30) as client:
        admin = {"x-functions-key": ADMIN}
        assert client.put(f"/manage/tenants/{tenant}", headers=admin, json={"stripe_customer_id": "cus_ui"}).is_success
        event = {"event_id": f"{tenant}-1", "tenant_id": tenant, "metric": "api.requests", "quantity": "42",
                 "timestamp": at.isoformat(), "source": "e2e"}  # fmt: skip
        assert client.post("/events", headers={"x-functions-key": KEY}, json=event).status_code == 202
        eventually(lambda: client.get(f"/usage/{tenant}/api.requests", headers=admin).json()["total"] == "42")
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, locale="en-US")
    try:
        page = context.new_page()
        page.goto(exports_devhost + "/console")
        page.fill("#key", ADMIN)
        page.click("#login button")
        page.wait_for_selector("body[data-loaded]", timeout=20_000)
        page.fill("#exports-tenant", tenant)
        page.press("#exports-tenant", "Enter")
        row = page.locator("tr[data-export='stripe:api.requests']")
        row.wait_for(timeout=20_000)
        cells = row.locator("td")
        # Ours, acknowledged, pending, difference: counted, not sent yet.
        assert [cells.nth(i).inner_text() for i in (2, 3, 5)] == ["42", "0", "42"]
        assert "not sent yet" in cells.nth(6).inner_text()
        assert page.locator("tr[data-export='marketplace']").inner_text().endswith("not linked")
        page.click("#exports-run")
        page.locator("#notice", has_text="Exports run:").wait_for(timeout=20_000)
        eventually(lambda: row.locator("td").nth(3).inner_text() == "42")
        assert row.locator("td").nth(5).inner_text() == "0"
        if os.environ.get("METERING_SCREENSHOTS"):
            page.locator("#exports").screenshot(
                path=os.path.join(os.environ["METERING_SCREENSHOTS"], "console-exports.png")
            )
    finally:
        context.close()
    assert stripe.total("cus_ui", "api_requests") == Decimal(42)
