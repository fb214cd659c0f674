"""`metering dev` with METERING_STORE=cosmos: the whole app on the Cosmos store, against the local
Cosmos-compatible server the dev host starts itself. A separate process, because a process builds its services
from its settings once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from tests.e2e.conftest import eventually

KEY = "cosmos-function-key"


@pytest.fixture(scope="module")
def cosmos_devhost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {
        **os.environ,
        "METERING_STORE": "cosmos",
        "METERING_FUNCTION_KEY": KEY,
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "COSMOS__accountEndpoint": "",
    }
    data = tmp_path_factory.mktemp("cosmos-devhost")
    process = subprocess.Popen(
        [sys.executable, "-m", "metering", "dev", "--port", "0", "--data", str(data)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        url = None
        for line in process.stdout:
            if "Functions running at" in line:
                url = line.split("Functions running at", 1)[1].split()[0]
                break
        assert url, "the dev host did not start"
        yield url
    finally:
        os.killpg(process.pid, signal.SIGINT)
        rest, _ = process.communicate(timeout=30)
    # The store the app used was the Cosmos one, on the local server (it says so when it is built).
    assert "Cosmos store on https://127.0.0.1" in rest


def test_the_app_counts_exactly_once_on_the_cosmos_store(cosmos_devhost):
    tenant = f"c-{uuid.uuid4().hex[:10]}"
    now = datetime.now(UTC).isoformat()
    events = [
        {"event_id": f"e{i}", "tenant_id": tenant, "metric": "api.requests", "quantity": "1.25", "timestamp": now,
         "source": "test"}
        for i in range(3)
    ]  # fmt: skip
    with httpx.Client(base_url=cosmos_devhost, headers={"x-functions-key": KEY}, timeout=30) as api:
        assert api.post("/events", json=events).status_code == 202
        assert api.post("/events", json=events[:2]).status_code == 202  # a retry: counted once

        def counted() -> bool:
            usage = api.get(f"/usage/{tenant}/api.requests").json()
            assert (usage["total"], usage["event_count"]) == ("3.75", 3)
            return True

        eventually(counted)
        cancelled = api.post(f"/events/{tenant}/cancel", json={"event_id": "e0"})
        assert cancelled.status_code == 200
        assert api.get(f"/usage/{tenant}/api.requests").json()["total"] == "2.5"
