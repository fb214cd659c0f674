"""Webhooks end to end: `metering dev` (a process of its own, since a process builds its services from its
settings once) with METERING_WEBHOOK_URL pointing at a receiver this test runs. Usage crossing a threshold and a
period closed on demand reach the receiver signed, as the queue gets them; a receiver answering 410 leaves a
failed delivery that `metering webhooks list` shows and `metering webhooks redrive` delivers again."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from typer.testing import CliRunner, Result

from metering.cli import app
from metering.quotas.alerts import ThresholdCrossedNotification
from tests.e2e.conftest import eventually
from tests.receiver import Answer, Receiver, receiving, verified

KEY = "webhooks-function-key"
ADMIN = "webhooks-admin-key"
SECRET = "whsec_" + base64.b64encode(b"metering e2e webhook secret!").decode()
NOW = datetime.now(UTC).replace(microsecond=0)
THIS_START = NOW.replace(day=1, hour=0, minute=0, second=0)
PREV_START = (THIS_START - timedelta(days=1)).replace(day=1)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    yield from receiving()


@pytest.fixture(scope="module")
def webhook_devhost(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[str]:
    env = {
        **os.environ,
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "METERING_STORE": "table",
        "METERING_FUNCTION_KEY": KEY,
        "METERING_ADMIN_KEY": ADMIN,
        "METERING_WEBHOOK_URL": receiver.url,
        "METERING_WEBHOOK_SECRET": SECRET,
        "METERING_WEBHOOK_TIMEOUT_SECONDS": "2",
        # The previous month closes on demand, never behind the test's back.
        "METERING_GRACE_HOURS": "0",
        "CLOSE_PERIODS_SCHEDULE": "0 0 0 1 1 *",
    }
    data = tmp_path_factory.mktemp("webhooks-devhost")
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


@pytest.fixture
def api(webhook_devhost: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=webhook_devhost, headers={"x-functions-key": KEY}, timeout=30) as client:
        yield client


@pytest.fixture
def admin(webhook_devhost: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=webhook_devhost, headers={"x-functions-key": ADMIN}, timeout=30) as client:
        yield client


def events(tenant: str, count: int, at: datetime = NOW) -> list[dict[str, object]]:
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return [
        {"event_id": f"{tenant}-{at:%m%d}-{i}", "tenant_id": tenant, "metric": "api.requests", "quantity": 1,
         "timestamp": stamp, "source": "test"}
        for i in range(count)
    ]  # fmt: skip


def test_alerts_and_closed_periods_reach_the_receiver_signed(api, admin, receiver):
    tenant = f"w-{uuid.uuid4().hex[:10]}"
    assert admin.put(f"/manage/tenants/{tenant}", json={"limits": {"api.requests": {"hard": "10"}}}).status_code == 200
    assert api.post("/events", json=events(tenant, 8)).status_code == 202
    alert_id = f"quota.threshold_crossed:{tenant}:api.requests:{THIS_START.date()}:80"
    [alert] = eventually(lambda: receiver.of(alert_id))
    body = verified(SECRET, alert)
    assert ThresholdCrossedNotification.model_validate(body).usage == 8

    assert api.post("/events", json=events(tenant, 2, THIS_START - timedelta(hours=1))).status_code == 202
    eventually(lambda: api.get(f"/usage/{tenant}/api.requests", params={"period": PREV_START.date().isoformat()})
               .json()["event_count"] == 2)  # fmt: skip
    assert admin.post("/manage/periods/close").status_code == 200
    closed_id = f"period.closed:{tenant}:{PREV_START.date()}"
    [closed] = eventually(lambda: receiver.of(closed_id))
    statement = verified(SECRET, closed)["statement"]  # type: ignore[index]
    assert [(line["metric"], line["quantity"]) for line in statement["lines"]] == [("api.requests", "2")]
    assert closed.headers["content-type"] == "application/json"
    # Acknowledged: nothing pending (the dispatcher records the answer just after the receiver has the request),
    # nothing failed.
    eventually(lambda: admin.get("/manage/webhooks", params={"status": "pending"}).json()["items"] == [])
    assert admin.get("/manage/health").json()["webhooks_failed"] == 0


def test_a_gone_receiver_leaves_a_failed_delivery_that_the_command_line_lists_and_redrives(
    webhook_devhost, api, admin, receiver
):
    tenant = f"g-{uuid.uuid4().hex[:10]}"
    alert_id = f"quota.threshold_crossed:{tenant}:api.requests:{THIS_START.date()}:80"
    receiver.answer = lambda r: Answer(410) if r.id == alert_id else Answer(200)
    assert admin.put(f"/manage/tenants/{tenant}", json={"limits": {"api.requests": {"hard": "10"}}}).status_code == 200
    assert api.post("/events", json=events(tenant, 9)).status_code == 202

    def failed() -> list[dict[str, object]]:
        return admin.get("/manage/webhooks", params={"status": "failed"}).json()["items"]

    [item] = eventually(lambda: [i for i in failed() if i["id"] == alert_id])
    assert (item["reason"], item["attempts"], item["last_status"]) == ("gone", 1, 410)
    assert admin.get("/manage/health").json()["webhooks_failed"] >= 1

    runner = CliRunner(env={"METERING_URL": webhook_devhost, "METERING_ADMIN_KEY": ADMIN})

    def run(*args: str) -> Result:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result

    listed = json.loads(run("webhooks", "list", "--format", "json").stdout)
    assert alert_id in [i["id"] for i in listed["items"]]
    assert alert_id in run("webhooks", "list", "--all").stdout
    receiver.answer = lambda r: Answer(200)
    assert "pending again" in run("webhooks", "redrive", alert_id).stdout
    # The redrive starts a delivery at once: the receiver gets it a second time, and this time takes it.
    eventually(lambda: len(receiver.of(alert_id)) == 2)
    assert alert_id not in [i["id"] for i in failed()]
    pending = {"status": "pending"}
    eventually(lambda: alert_id not in [i["id"] for i in admin.get("/manage/webhooks", params=pending).json()["items"]])
    gone = runner.invoke(app, ["webhooks", "redrive", alert_id])
    assert gone.exit_code == 1
    assert "404 Unknown webhook delivery" in gone.output
