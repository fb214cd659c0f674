"""GET /api/manage/health, `metering health` and the client's `health()`, against the dev host."""

from __future__ import annotations

import json
import os

import httpx
import pytest
from typer.testing import CliRunner

from metering.bootstrap import services
from metering.cli import app
from metering.client import HealthReport, MeteringClient
from metering.transport.queue import queue_client
from tests.e2e.conftest import ADMIN_KEY, FUNCTION_KEY, eventually, feed_of
from tests.e2e.test_api import settle, usage_event


@pytest.fixture
def admin(devhost):
    with httpx.Client(base_url=devhost.base_url, headers={"x-functions-key": ADMIN_KEY}, timeout=30) as client:
        yield client


def health(admin: httpx.Client) -> dict:
    response = admin.get("/manage/health")
    assert response.status_code == 200, response.text
    return response.json()


def test_health_is_for_the_admin_key_only(api, devhost):
    assert api.get("/manage/health").status_code == 401
    assert httpx.get(f"{devhost.base_url}/manage/health").status_code == 401


def test_the_feeds_partition_is_applied_and_waits_for_nothing_once_events_are_counted(api, admin, devhost, tenant):
    assert api.post("/events", json=[usage_event(tenant, "h-1"), usage_event(tenant, "h-2")]).status_code == 202
    settle(api, tenant, ("2", 2))
    feed = feed_of(devhost, tenant)

    def caught_up() -> bool:
        partitions = {p["partition"]: p for p in health(admin)["partitions"]}
        assert feed.partition in partitions
        assert partitions[feed.partition]["applied_sequence"] is not None
        assert partitions[feed.partition]["applied_sequence"] >= feed.sequence - 1
        assert partitions[feed.partition]["applied_at"] is not None
        assert partitions[feed.partition]["lag_seconds"] == 0
        return True

    eventually(caught_up)
    assert feed.partition.startswith("devstoreaccount1|usage|local-")


def test_dead_letters_and_conflicts_are_counted(api, admin, tenant):
    before = health(admin)
    # A direct producer's message that is not JSON, straight onto the hub (the local queue).
    settings = services().settings
    queue_client(os.environ["AzureWebJobsStorage"], settings.local_queues[0]).send_message(b"{not json")
    # The same event id with another quantity: the first wins, the second is a conflict.
    assert api.post("/events", json=[usage_event(tenant, "c-1", "1")]).status_code == 202
    settle(api, tenant, ("1", 1))
    assert api.post("/events", json=[usage_event(tenant, "c-1", "5")]).status_code == 202

    def counted() -> bool:
        after = health(admin)
        assert after["dead_letters"] == before["dead_letters"] + 1
        assert after["conflicts"] == before["conflicts"] + 1
        assert (after["late_events"], after["webhooks_failed"]) == (before["late_events"], 0)
        return True

    eventually(counted)


def test_the_command_line_and_the_client_show_the_same_report(admin, devhost):
    runner = CliRunner(env={"METERING_URL": devhost.base_url, "METERING_ADMIN_KEY": ADMIN_KEY})
    as_json = runner.invoke(app, ["health", "--json"])
    assert as_json.exit_code == 0, as_json.output
    shown = json.loads(as_json.stdout)
    assert set(shown) == {"partitions", "dead_letters", "late_events", "conflicts", "webhooks_failed"}
    assert {p["partition"] for p in shown["partitions"]} == {p["partition"] for p in health(admin)["partitions"]}
    table = runner.invoke(app, ["health"])
    assert table.exit_code == 0, table.output
    assert "hub partitions" in table.stdout
    assert "dead letters" in table.stdout
    assert any(feed.partition in table.stdout for feed in devhost.feeds)
    with MeteringClient(devhost.base_url, FUNCTION_KEY, admin_key=ADMIN_KEY) as client:
        report = client.health()
    assert isinstance(report, HealthReport)
    assert {p.partition for p in report.partitions} == {p["partition"] for p in shown["partitions"]}
    denied = runner.invoke(app, ["health", "--admin-key", FUNCTION_KEY])
    assert denied.exit_code == 1
    assert "401" in denied.output
