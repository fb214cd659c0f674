"""Every metering pattern against the dev host over real HTTP: the pre-aggregating writer (threads and asyncio)
counts what the raw events count for every kind, with responses lost on the way, two writers in one process and
the host stopped and restarted under it; the sampling writer's estimates; CloudEvents in binary mode from the
official SDK."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudevents.core.bindings.http import to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from metering.client import (
    AggregatingUsageWriter,
    AsyncAggregatingUsageWriter,
    AsyncMeteringClient,
    Backoff,
    MeteringClient,
    SamplingUsageWriter,
)
from metering.core.estimates import error_bound
from metering.devhost.host import DevHost
from tests.e2e.conftest import FUNCTION_KEY, eventually, run_async

FAST = Backoff(initial=0.05, maximum=0.5)


class LosesResponses(httpx.BaseTransport):
    """The network between the writer and the service: every `every`-th POST reaches the service, which accepts
    it, but its answer is lost, so the writer must retry what was already counted."""

    def __init__(self, every: int = 3) -> None:
        self.inner = httpx.HTTPTransport()
        self.every = every
        self.posts = 0
        self.lost = 0
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST":
            with self._lock:
                self.posts += 1
                lose = self.posts % self.every == 0
                self.lost += lose
            if lose:
                response.read()
                response.close()
                raise httpx.ReadError("the response was lost", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


class AsyncLosesResponses(httpx.AsyncBaseTransport):
    def __init__(self, every: int = 3) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.every = every
        self.posts = 0
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST":
            self.posts += 1
            if self.posts % self.every == 0:
                self.lost += 1
                await response.aread()
                await response.aclose()
                raise httpx.ReadError("the response was lost", request=request)
        return response


@dataclass
class Truth:
    """What the raw events count, per meter: (total, event count), as the service would count them one by one."""

    sums: dict[str, Decimal] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    extremes: dict[str, Decimal] = field(default_factory=dict)
    latest: tuple[datetime, Decimal] | None = None
    users: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def expected(self) -> dict[str, tuple[Decimal, int]]:
        assert self.latest is not None
        return {
            "api.requests": (self.sums["api.requests"], self.counts["api.requests"]),
            "reports.generated": (Decimal(self.counts["reports.generated"]), self.counts["reports.generated"]),
            "storage.gb_peak": (self.extremes["storage.gb_peak"], self.counts["storage.gb_peak"]),
            "credits.balance": (self.extremes["credits.balance"], self.counts["credits.balance"]),
            "seats.licensed": (self.latest[1], self.counts["seats.licensed"]),
            "users.active": (Decimal(len(self.users)), self.counts["users.active"]),
        }


def record_mix(record: Any, tenant: str, truth: Truth, seed: int, events: int, now: datetime) -> None:  # noqa: PLR0917
    """`events` raw events of every kind over the last half minute (so some windows end while others fill)."""
    rng = random.Random(seed)
    for i in range(events):
        at = now - timedelta(seconds=30) + timedelta(microseconds=rng.randrange(30_000_000))
        kind = i % 6
        fields: dict[str, Any] = {"timestamp": at}
        if kind == 0:
            metric, quantity = "api.requests", Decimal(rng.randint(1, 10**6)) / 1000
            fields["dimensions"] = {"region": rng.choice(["eu", "us"])}
        elif kind == 1:
            metric, quantity = "reports.generated", Decimal(1)
        elif kind == 2:
            metric, quantity = "storage.gb_peak", Decimal(rng.randint(0, 10**5)) / 100
        elif kind == 3:
            metric, quantity = "credits.balance", Decimal(rng.randint(-(10**4), 10**4)) / 10
        elif kind == 4:
            metric, quantity = "seats.licensed", Decimal(rng.randint(1, 500))
        else:
            metric, quantity = "users.active", Decimal(1)
            fields["user_id"] = f"user-{rng.randrange(40)}"
        with truth.lock:
            truth.counts[metric] = truth.counts.get(metric, 0) + 1
            if metric == "api.requests":
                truth.sums[metric] = truth.sums.get(metric, Decimal(0)) + quantity
            elif metric == "storage.gb_peak":
                truth.extremes[metric] = max(truth.extremes.get(metric, quantity), quantity)
            elif metric == "credits.balance":
                truth.extremes[metric] = min(truth.extremes.get(metric, quantity), quantity)
            elif metric == "seats.licensed" and (truth.latest is None or at > truth.latest[0]):
                truth.latest = (at, quantity)
            elif metric == "users.active":
                truth.users.add(fields["user_id"])
        record(tenant, metric, str(quantity), **fields)


def counted(client: MeteringClient, tenant: str, truth: Truth) -> None:
    expected = truth.expected()

    def check() -> bool:
        found = {}
        for metric in expected:
            usage = client.current_usage(tenant, metric)
            found[metric] = (usage.total, usage.event_count)
        assert found == expected
        return True

    eventually(check, timeout=30)


@pytest.fixture
def client(devhost) -> Iterator[MeteringClient]:
    with MeteringClient(devhost.base_url, FUNCTION_KEY, source="e2e-patterns") as client:
        yield client


def test_aggregates_count_every_kind_exactly_while_responses_are_lost(devhost, client, tenant):
    network = LosesResponses(every=3)
    lossy = MeteringClient(devhost.base_url, FUNCTION_KEY, source="gateway", transport=network)
    writer = AggregatingUsageWriter(lossy, window=5, batch_size=20, send_interval=0.05, backoff=FAST)
    truth = Truth()
    record_mix(writer.record, tenant, truth, 1, 3000, datetime.now(UTC))
    report = writer.close(timeout=60)
    assert report.complete
    stats = writer.stats
    assert stats.recorded == 3000
    assert stats.sent < 3000 / 5  # about 7 windows of a few keys per meter
    assert network.lost >= 2
    assert stats.retries >= network.lost  # every lost answer was retried with the same aggregates
    counted(client, tenant, truth)
    lossy.close()


def test_two_writers_in_one_process_through_a_restart_of_the_host(devhost, tmp_path: Path, tenant):
    own = DevHost(port=0, data=tmp_path / "azurite").start()
    port = own.port
    restarted: DevHost | None = None
    clients = [MeteringClient(own.base_url, FUNCTION_KEY, source="gateway", timeout=5) for _ in range(2)]
    writers = [AggregatingUsageWriter(c, window=1, send_interval=0.05, backoff=FAST) for c in clients]
    assert writers[0].writer_id != writers[1].writer_id
    truth = Truth()
    now = datetime.now(UTC)
    try:
        # The same keys from both writers at once: their aggregates must never be taken for each other's.
        threads = [
            threading.Thread(target=record_mix, args=(w.record, tenant, truth, seed, 600, now))
            for seed, w in enumerate(writers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        own.stop()  # with aggregates buffered or in flight
        record_mix(writers[0].record, tenant, truth, 7, 300, now)
        eventually(lambda: writers[0].stats.retries >= 1)
        restarted = DevHost(port=port, data=tmp_path / "azurite").start()
        for writer in writers:
            assert writer.close(timeout=30).complete
        assert sum(w.stats.recorded for w in writers) == 1500
        counted(clients[0], tenant, truth)
    finally:
        for c in clients:
            c.close()
        (restarted or own).stop()


def test_the_async_aggregating_writer_counts_exactly_too(devhost, client, tenant):
    truth = Truth()
    network = AsyncLosesResponses(every=2)

    async def scenario() -> None:
        lossy = AsyncMeteringClient(devhost.base_url, FUNCTION_KEY, source="gw", transport=network)
        writer = AsyncAggregatingUsageWriter(lossy, window=5, batch_size=10, send_interval=0.05, backoff=FAST)
        async with lossy, writer:
            pending: list[Any] = []

            def record(*args: Any, **fields: Any) -> None:
                pending.append(writer.record(*args, **fields))

            record_mix(record, tenant, truth, 3, 1200, datetime.now(UTC))
            for call in pending:
                await call
            assert await writer.flush(timeout=30)
            assert writer.stats.recorded == 1200

    run_async(scenario())
    assert network.lost >= 1
    counted(client, tenant, truth)


def test_a_sampled_meter_reads_as_an_estimate_and_the_others_stay_exact(client, tenant):
    writer = SamplingUsageWriter(client, sample_rate=0.05, seed=11, batch_size=500, flush_interval=0.05)
    kept = 0
    for i in range(4000):
        kept += writer.record(tenant, "pages.viewed", 1, dimensions={"page": "home" if i % 4 else "docs"}) is not None
    for _ in range(10):
        assert writer.record(tenant, "api.requests", "2") is not None
    assert writer.close(timeout=30).complete
    assert writer.stats.recorded == 4010
    assert writer.stats.sent == kept + 10
    assert 120 < kept < 280  # one in 20 of 4000, give or take what chance gives

    def check() -> Any:
        usage = client.current_usage(tenant, "pages.viewed", group_by="page")
        assert (usage.total, usage.event_count) == (Decimal(20 * kept), kept)
        return usage

    usage = eventually(check)
    assert usage.estimate is True
    assert usage.error_bound == error_bound(Decimal(20 * 19 * kept))
    assert abs(usage.total - 4000) <= usage.error_bound
    assert usage.groups is not None
    assert all(group.estimate for group in usage.groups)
    exact = eventually(lambda: (u := client.current_usage(tenant, "api.requests")).event_count == 10 and u)
    assert (exact.total, exact.estimate, exact.error_bound) == (Decimal(20), None, None)


def test_binary_mode_cloud_events_from_the_official_sdk_are_accepted_and_counted(api, client, tenant):
    now = datetime.now(UTC)
    for i, quantity in enumerate(["1.5", "2.25"]):
        event = CloudEvent(
            attributes={
                "id": f"ce-binary-{i}",
                "source": "billing/örebro",  # percent-encoded by the SDK
                "type": "api.requests",
                "subject": tenant,
                "time": now,
                "datacontenttype": "application/json",
            },
            data={"quantity": quantity, "dimensions": {"region": "eu"}},
        )
        message = to_binary(event, JSONFormat())
        response = api.post("/events", headers=message.headers, content=message.body)
        assert (response.status_code, response.json()["event_ids"]) == (202, [f"ce-binary-{i}"])
    again = api.post("/events", headers=message.headers, content=message.body)  # a retry: counted once
    assert again.status_code == 202
    eventually(lambda: client.current_usage(tenant, "api.requests").event_count == 2)
    usage = client.current_usage(tenant, "api.requests")
    assert (usage.total, usage.event_count) == (Decimal("3.75"), 2)
