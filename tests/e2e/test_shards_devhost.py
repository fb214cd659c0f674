"""A hot tenant's shards through the dev host: ingest spreads its events over the local hub's partitions, several
feeds count them at once, and usage, groups, quotas and the invoice preview read one period. Then the same
through a dev host whose feeds run in worker processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from azure.data.tables import TableServiceClient

from metering.bootstrap import services
from metering.core.clock import format_timestamp
from metering.core.periods import DEFAULT_HISTORY
from metering.core.shards import ShardChange
from metering.stores import RowTable
from metering.stores.table import TableRows
from metering.tenants.records import SETTINGS_ROW, TenantRecord
from metering.transport.partitioning import partition_for
from tests.e2e.conftest import eventually
from tests.e2e.test_api import TS, settle, usage_event

ROOT = Path(__file__).resolve().parents[2]


def seed_shards(tenants: RowTable, tenant: str, shards: int) -> None:
    """A tenant with `shards` since always, as its settings row holds them (a change through the manage route
    takes effect at the next period boundary, weeks away)."""
    record = TenantRecord(None, {}, DEFAULT_HISTORY, shards=(ShardChange(shards, None),))
    tenants.upsert(tenant, SETTINGS_ROW, record.to_json(format_timestamp(datetime.now(UTC))))


def spread_tenant(shards: int, partitions: int = 4) -> str:
    """A new tenant whose shard keys reach at least two of the local hub's partitions (about 1 in 100 random ids
    puts all four on one, which would leave nothing here to prove)."""
    while True:
        tenant = f"t-{uuid.uuid4().hex[:12]}"
        if len({partition_for(f"{tenant}|{shard}", partitions) for shard in range(shards)}) > 1:
            return tenant


def workload(tenant: str, count: int) -> list[dict]:
    events = []
    for i in range(count):
        events.append(usage_event(tenant, f"s{i}", "1.5", dimensions={"region": "eu" if i % 3 else "us"}))
        events.append(usage_event(tenant, f"u{i}", "1", metric="users.active", user_id=f"user-{i % 23}"))
    return events


def test_a_sharded_tenants_events_are_counted_by_several_feeds_at_once_and_read_as_one(devhost, api):
    tenant = spread_tenant(4, len(devhost.feeds))
    seed_shards(services().store.tenants, tenant, 4)
    before = [feed.stats.messages for feed in devhost.feeds]
    events = workload(tenant, 120)
    for start in range(0, len(events), 60):
        assert api.post("/events", json=events[start : start + 60]).status_code == 202
    settle(api, tenant, ("180", 120))
    settle(api, tenant, ("23", 120), metric="users.active")
    fed = [feed.stats.messages - was for feed, was in zip(devhost.feeds, before, strict=True)]
    assert sum(1 for n in fed if n) > 1, fed  # the tenant's keys went to several partitions
    groups = api.get(f"/usage/{tenant}/api.requests", params={"group_by": "region"}).json()["groups"]
    assert {g["key"]: (g["total"], g["event_count"]) for g in groups} == {"eu": ("120", 80), "us": ("60", 40)}
    day = TS[:10]
    history = api.get(f"/usage/{tenant}/users.active/history", params={"start": day, "end": day}).json()
    assert [(b["total"], b["event_count"]) for b in history["items"]] == [("23", 120)]
    assert api.get(f"/quota/{tenant}/api.requests", params={"requested": "1"}).json()["current"] == "180"
    # The same events again (a client retry): once the feeds have taken them, nothing counted twice.
    taken = sum(feed.stats.messages for feed in devhost.feeds)
    ingest = services().ingest
    sent = len(ingest.messages(ingest.prepare(events[:60])))
    assert api.post("/events", json=events[:60]).status_code == 202
    eventually(lambda: sum(feed.stats.messages for feed in devhost.feeds) >= taken + sent)
    settle(api, tenant, ("180", 120))
    settle(api, tenant, ("23", 120), metric="users.active")


@pytest.fixture
def worker_host(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, list[str]]]:
    key = "k-" + uuid.uuid4().hex
    env = {
        **os.environ,
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "METERING_FUNCTION_KEY": key,
        "METERING_ADMIN_KEY": key,
        "METERING_LOCAL_PARTITIONS": "4",
        "CLOSE_PERIODS_SCHEDULE": "0 0 0 1 1 *",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "metering", "dev", "--port", "0", "--data", str(tmp_path), "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    deadline = time.monotonic() + 90
    for line in process.stdout:
        lines.append(line)
        if line.startswith("Press Ctrl-C") or time.monotonic() > deadline:
            break
    output = "".join(lines)
    found = re.search(r"Functions running at (http://\S+/api)", output)
    storage = re.search(r"AzureWebJobsStorage='([^']+)'", output)
    assert found, output
    assert storage, output
    threading.Thread(target=lambda: lines.extend(process.stdout or []), daemon=True).start()
    try:
        yield process, found.group(1), [key, storage.group(1), output]
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


def test_the_dev_host_feeds_its_partitions_from_worker_processes(worker_host):
    process, base, (key, storage, output) = worker_host
    assert "hub: 4 local partitions, fed by 2 worker processes" in output
    tenant = spread_tenant(4)
    # The dev host's tenants table (local.settings.example.json), created if no request has made it yet.
    tenants = TableServiceClient.from_connection_string(storage).create_table_if_not_exists("meteringtenants")
    seed_shards(TableRows(tenants), tenant, 4)
    tenants.close()
    with httpx.Client(base_url=base, headers={"x-functions-key": key}, timeout=30) as api:
        assert api.post("/events", json=workload(tenant, 40)).status_code == 202
        settle(api, tenant, ("60", 40))
        settle(api, tenant, ("23", 40), metric="users.active")

        def fed_by_workers() -> bool:
            partitions = api.get("/manage/health").json()["partitions"]
            applied = [p for p in partitions if p["applied_sequence"] is not None]
            assert len(applied) > 1, partitions
            return True

        eventually(fed_by_workers)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
