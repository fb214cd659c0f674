"""A store outage under load, end to end: the dev host (a process of its own) on an Azurite that this test
controls, while four client threads post batches of events with ids they set, retrying every 503 with the same
events and never giving up on one. Azurite is frozen (SIGSTOP), thawed, stopped, then started again on the same
ports and data folder. Every answer must be 202 or 503, never a 500 nor a hung request; afterwards the totals
must equal the unique events accepted, to the last digit, and nothing may have been dead-lettered: an outage only
delays counting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from metering.devhost.azurite import Azurite
from tests.e2e.conftest import eventually

KEY = "outage-function-key"
ADMIN = "outage-admin-key"
THREADS = 4
BATCH = 20
FREEZE_SECONDS = 5.0
STOP_SECONDS = 8.0


@dataclass
class DevHostProcess:
    process: subprocess.Popen[str]
    url: str = ""
    output: list[str] = field(default_factory=list)

    def drain(self) -> None:
        # Read its output all along: a full pipe would block the host's logging mid-outage.
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Azurite, DevHostProcess]]:
    azurite = Azurite(tmp_path / "azurite").start()
    env = {
        **os.environ,
        "AzureWebJobsStorage": azurite.connection_string,
        "METERING_FUNCTION_KEY": KEY,
        "METERING_ADMIN_KEY": ADMIN,
        "METERING_STORE": "table",
        "CLOSE_PERIODS_SCHEDULE": "0 0 0 1 1 *",  # no period closes under the test
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "metering", "dev", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    host = DevHostProcess(process)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            host.output.append(line)
            if "Functions running at" in line:
                host.url = line.split("Functions running at", 1)[1].split()[0]
                break
        assert host.url, "the dev host did not start:\n" + "".join(host.output)
        threading.Thread(target=host.drain, daemon=True).start()
        yield azurite, host
    finally:
        if azurite.process is not None and azurite.process.poll() is None:
            os.kill(azurite.process.pid, signal.SIGCONT)
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        azurite.stop()


@dataclass
class Load:
    """Client threads posting batches with client-set ids, each retrying a batch until it is accepted."""

    url: str
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # a request that got no answer at all
    accepted: dict[str, dict[str, Decimal]] = field(default_factory=dict)  # tenant -> event id -> quantity
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def batches(self, thread: int) -> Iterator[tuple[str, list[dict]]]:
        """A thread's batches: mostly its own tenant (cached settings), every third a new one (a settings read)."""
        previous: dict | None = None
        for number in range(1_000_000):
            tenant = f"o-{self.run_id}-{thread}" if number % 3 else f"o-{self.run_id}-{thread}-{number}"
            now = datetime.now(UTC).isoformat()
            events = [
                {
                    "event_id": f"{thread}-{number}-{i}",
                    "tenant_id": tenant,
                    "metric": "api.requests",
                    # Exact decimals of 12 places and large integers: the totals must match to the last digit.
                    "quantity": str(Decimal(f"{number}.{i:012d}") + Decimal(123456789) * i),
                    "timestamp": now,
                    "source": "outage-test",
                }
                for i in range(BATCH)
            ]
            if previous is not None and previous["tenant_id"] == tenant:
                events.append(previous)  # a client replaying an event it already sent: counted once
            previous = events[0]
            yield tenant, events

    def run(self, thread: int) -> None:
        """New batches and the retries of refused ones, in turn: a refused batch waits a moment and is sent
        again, the same events with the same ids, until accepted; meanwhile new batches (new tenants among them)
        go out, as from an app that keeps working during the outage."""
        pending: list[tuple[float, str, list[dict]]] = []
        fresh = self.batches(thread)
        with httpx.Client(base_url=self.url, headers={"x-functions-key": KEY}, timeout=60) as client:
            while pending or not self.stop.is_set():
                if pending and (pending[0][0] <= time.monotonic() or self.stop.is_set()):
                    _, tenant, events = pending.pop(0)
                elif not self.stop.is_set():
                    tenant, events = next(fresh)
                else:
                    continue
                try:
                    response = client.post("/events", json=events)
                except httpx.HTTPError as error:
                    with self.lock:
                        self.failures.append(repr(error))
                    pending.append((time.monotonic(), tenant, events))
                    continue
                with self.lock:
                    self.statuses[response.status_code] += 1
                    if response.status_code == 202:
                        counted = self.accepted.setdefault(tenant, {})
                        counted.update({e["event_id"]: Decimal(e["quantity"]) for e in events})
                if response.status_code == 503:
                    # Sooner than Retry-After says: the test wants many tries within the outage.
                    pending.append((time.monotonic() + 0.25, tenant, events))
                    self.stop.wait(0.05)
                elif response.status_code != 202:
                    return  # recorded: the test fails on it

    def accepted_count(self) -> int:
        with self.lock:
            return self.statuses[202]


def hold(seconds: float) -> None:
    """Keep a fault in place for a while: its duration, not a wait for something to happen."""
    time.sleep(seconds)


def test_an_outage_under_load_answers_only_202_or_503_and_loses_or_doubles_nothing(stack):
    azurite, host = stack
    load = Load(host.url)
    threads = [threading.Thread(target=load.run, args=(n,), daemon=True) for n in range(THREADS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    eventually(lambda: load.accepted_count() >= 5 * THREADS)
    assert azurite.process is not None

    phases = {"load": time.monotonic() - started}
    os.kill(azurite.process.pid, signal.SIGSTOP)  # frozen: connections open, nothing answers
    hold(FREEZE_SECONDS)
    os.kill(azurite.process.pid, signal.SIGCONT)
    during = load.accepted_count()
    eventually(lambda: load.accepted_count() > during + THREADS, timeout=40)
    phases["freeze"] = time.monotonic() - started

    azurite.stop()  # gone: connections refused
    hold(STOP_SECONDS)
    azurite.restart()  # back on the same ports, with its data
    after = load.accepted_count()
    eventually(lambda: load.accepted_count() > after + THREADS, timeout=40)
    phases["stop"] = time.monotonic() - started

    load.stop.set()
    for thread in threads:
        thread.join(timeout=90)
    assert not any(thread.is_alive() for thread in threads)
    phases["load ended"] = time.monotonic() - started
    assert load.failures == []
    assert set(load.statuses) <= {202, 503}, f"statuses {dict(load.statuses)}"
    assert load.statuses[503] > 0, "the outage was not seen by any request"

    with httpx.Client(base_url=host.url, headers={"x-functions-key": KEY}, timeout=30) as api:

        def counted(tenant: str, events: dict[str, Decimal]) -> bool:
            body = api.get(f"/usage/{tenant}/api.requests").json()
            assert (Decimal(body["total"]), body["event_count"]) == (sum(events.values()), len(events))
            return True

        for tenant, events in load.accepted.items():
            eventually(lambda tenant=tenant, events=events: counted(tenant, events), timeout=60)
        phases["counted"] = time.monotonic() - started
        health = api.get("/manage/health", headers={"x-functions-key": ADMIN}).json()
    assert health["dead_letters"] == 0  # the outage dead-lettered nothing
    output = "".join(host.output)
    assert "answered 500" not in output
    assert "answered 503" in output  # each one logged
    print(
        f"outage test: {sum(load.statuses.values())} requests ({dict(load.statuses)}), "
        f"{sum(len(e) for e in load.accepted.values())} unique events over {len(load.accepted)} tenants, "
        f"{time.monotonic() - started:.1f} s; phases ended at {', '.join(f'{k} {v:.1f}' for k, v in phases.items())}"
    )
