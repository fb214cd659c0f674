"""Benchmark: one hot tenant through the dev host's local partitions, with 1 shard and with 4 shards.

    python bench/shards.py [--events 20000] [--partitions 4] [--workers N] [--through-ingest]

Starts the dev host itself (its own Azurite, `METERING_LOCAL_PARTITIONS` queues, the feeds in worker processes:
one per partition unless `--workers` says otherwise) in a separate process, a fresh one for each run. Two tenants
get the same workload (mostly `api.requests`, a tenth `users.active` distinct users), one with 1 shard (every
event under one partition key: one queue, one feed, one worker busy), one with 4 shards (four keys, chosen so
they reach every local partition: all workers busy at once). Each tenant's events are sent straight to the local
hub's queues, packed and keyed as ingest packs and keys them (as a direct Event Hub producer does), so the run
measures the aggregators and not ingest, which shares the cores (`bench/ingest.py` measures it;
`--through-ingest` posts through `POST /api/events` instead). A run ends when `GET /api/usage` counts every
event. Prints each rate (events counted per second, from the first message sent to the last event visible) and
last `shard_speedup=R` (4 shards / 1 shard).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from azure.data.tables import TableServiceClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.devhost import start_host
from metering.core.clock import format_timestamp
from metering.core.events import UsageEvent
from metering.core.meters import load_catalog
from metering.core.periods import DEFAULT_HISTORY
from metering.core.shards import ShardChange
from metering.ledger.routing import hub_key
from metering.settings import Settings
from metering.stores.table import TableRows
from metering.tenants.records import SETTINGS_ROW, TenantRecord
from metering.transport import QUEUE_MESSAGE_BYTES, pack
from metering.transport.partitioning import partition_for
from metering.transport.queue import QueuePublisher, queue_client

KEY = "bench-" + uuid.uuid4().hex
TENANTS_TABLE = "meteringtenants"  # local.settings.example.json


def cpu_seconds(root: int) -> dict[str, float]:
    """CPU seconds so far of the dev host's processes (Linux /proc), by part: the host, its feed workers, Azurite."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    tree, todo = [root], [root]
    while todo:
        of = todo.pop()
        children = [pid for pid, ppid in parent.items() if ppid == of]
        tree += children
        todo += children
    ticks = os.sysconf("SC_CLK_TCK")
    parts: dict[str, float] = {}
    for pid in tree:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            program = command.split(b"\0", 1)[0]
            part = "workers" if b"spawn_main" in command else "azurite" if program.endswith(b"node") else "host"
            parts[part] = parts.get(part, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return parts


def tenant_with(shards: int, partitions: int, prefix: str) -> str:
    """A tenant whose `shards` keys reach min(shards, partitions) local partitions: with one shard any tenant,
    with four one whose keys keep every partition (and so every worker) busy, as a hub's own spread would with
    many tenants."""
    for n in range(10_000):
        tenant = f"{prefix}-{shards}-{n}"
        keys = [tenant] if shards == 1 else [f"{tenant}|{shard}" for shard in range(shards)]
        if len({partition_for(key, partitions) for key in keys}) == min(shards, partitions):
            return tenant
    raise SystemExit("no tenant id spreads over the partitions")


def seed(storage: str, tenant: str, shards: int) -> None:
    """The tenant's shards since always, as its settings row holds them (a change through the manage route takes
    effect at the next period boundary)."""
    table = TableServiceClient.from_connection_string(storage).create_table_if_not_exists(TENANTS_TABLE)
    record = TenantRecord(None, {}, DEFAULT_HISTORY, shards=(ShardChange(shards, None),))
    TableRows(table).upsert(tenant, SETTINGS_ROW, record.to_json(format_timestamp(datetime.now(UTC))))
    table.close()


def workload(tenant: str, events: int) -> tuple[list[dict[str, object]], int, int]:
    """The events, and how many of them each metric has."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    body: list[dict[str, object]] = []
    users = 0
    for i in range(events):
        event: dict[str, object] = {"event_id": f"e{i}", "tenant_id": tenant, "timestamp": now, "source": "shards"}
        if i % 10 == 9:
            event.update(metric="users.active", quantity=1, user_id=f"user-{i % 997}")
            users += 1
        else:
            event.update(metric="api.requests", quantity=1, dimensions={"region": ("eu", "us", "ap")[i % 3]})
        body.append(event)
    return body, events - users, users


@dataclass
class Hub:
    """Where a run's events go: the dev host's ingest route, or its local hub's queues directly."""

    base: str
    pid: int
    storage: str
    partitions: int
    through_ingest: bool

    def send(self, api: httpx.Client, body: list[dict[str, object]], shards: int) -> None:
        if self.through_ingest:
            for start in range(0, len(body), REQUEST_EVENTS):
                response = api.post("/events", json=body[start : start + REQUEST_EVENTS])
                if response.status_code != 202:
                    raise SystemExit(f"ingest answered {response.status_code}: {response.text}")
            return
        settings = Settings.model_validate({"storage_connection": self.storage, "local_partitions": self.partitions})
        catalog = load_catalog()
        events = [UsageEvent.model_validate(item) for item in body]
        messages = pack(events, QUEUE_MESSAGE_BYTES, lambda event: hub_key(event, shards, catalog))
        publisher = QueuePublisher([queue_client(self.storage, name) for name in settings.local_queues])
        publisher.publish(messages)
        publisher.close()


REQUEST_EVENTS = 1000


def measure(hub: Hub, tenant: str, shards: int, events: int) -> float:
    """Events counted per second, from the first event sent to the moment usage shows every event."""
    body, requests_count, users_count = workload(tenant, events)
    cpu_before = cpu_seconds(hub.pid)
    with httpx.Client(base_url=hub.base, headers={"x-functions-key": KEY}, timeout=60) as api:
        started = time.monotonic()
        hub.send(api, body, shards)
        posted = time.monotonic() - started
        deadline = started + 600
        while time.monotonic() < deadline:
            counted = api.get(f"/usage/{tenant}/api.requests").json()["event_count"]
            if counted >= requests_count:
                users = api.get(f"/usage/{tenant}/users.active").json()["event_count"]
                if users >= users_count:
                    break
            time.sleep(0.25)  # polls cost the dev host CPU the aggregators share
        else:
            raise SystemExit(f"{tenant}: not every event was counted within 10 minutes")
        elapsed = time.monotonic() - started
    cpu_after = cpu_seconds(hub.pid)
    spent = {part: cpu_after[part] - cpu_before.get(part, 0.0) for part in sorted(cpu_after)}
    used = " + ".join(f"{part} {seconds / elapsed:.2f}" for part, seconds in spent.items())
    print(
        f"  {tenant} ({shards} shard{'s' if shards > 1 else ''}): {events:,} events sent in {posted:.1f} s, "
        f"all counted after {elapsed:.1f} s; cores used: {used} "
        f"= {sum(spent.values()) / elapsed:.2f} (CPU ms per event: {1000 * sum(spent.values()) / events:.2f})"
    )
    return events / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--through-ingest", action="store_true", help="post through POST /api/events")
    args = parser.parse_args()
    prefix = uuid.uuid4().hex[:6]
    way = "through ingest" if args.through_ingest else "straight to the local hub's queues"
    rates = {}
    for shards in (1, 4):
        # Each on a dev host and Azurite of its own: Azurite's cost per request grows with the rows it holds (it
        # keeps every table in memory and saves them whole), so a second run on one host would pay for the first.
        env = {
            "METERING_FUNCTION_KEY": KEY,
            "METERING_ADMIN_KEY": KEY,
            "METERING_LOCAL_PARTITIONS": str(args.partitions),
            "CLOSE_PERIODS_SCHEDULE": "0 0 0 1 1 *",
        }
        host = start_host("shards", env, [] if args.workers is None else ["--workers", str(args.workers)])
        base, process = host.base, host.process
        storage, hub = host.printed(r"AzureWebJobsStorage='([^']+)'"), host.printed(r"hub: (.*)")
        try:
            print(f"dev host: {hub}; {os.cpu_count()} cores; events sent {way}")
            tenant = tenant_with(shards, args.partitions, prefix)
            seed(storage, tenant, shards)
            hub_of = Hub(base, process.pid, storage, args.partitions, args.through_ingest)
            # A short warm-up, so the run does not pay the workers' first connections and imports.
            warm = tenant_with(4, args.partitions, prefix + "w")
            seed(storage, warm, 4)
            measure(hub_of, warm, 4, 2000)
            rates[shards] = measure(hub_of, tenant, shards, args.events)
        finally:
            host.stop()
    print(f"1 shard:  {rates[1]:,.0f} events/s")
    print(f"4 shards: {rates[4]:,.0f} events/s")
    print(f"shard_speedup={rates[4] / rates[1]:.2f}")


if __name__ == "__main__":
    main()
