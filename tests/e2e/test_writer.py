"""The buffered writers against the dev host over real HTTP: exactly once under concurrency, through a restart of
the host, with refused events reported and the rest counted."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from metering.client import (
    AsyncBufferedUsageWriter,
    AsyncMeteringClient,
    Backoff,
    BufferedUsageWriter,
    BufferFull,
    MeteringClient,
    RejectedEvent,
    WriterClosed,
)
from metering.devhost.host import DevHost
from tests.e2e.conftest import FUNCTION_KEY, eventually, run_async
from tests.e2e.test_client import closed_port

FAST = Backoff(initial=0.05, maximum=0.5)


@pytest.fixture
def client(devhost) -> Iterator[MeteringClient]:
    with MeteringClient(devhost.base_url, FUNCTION_KEY, source="e2e-writer") as client:
        yield client


def settle(client: MeteringClient, tenant: str, total: str, count: int, timeout: float = 20.0) -> None:
    def check() -> bool:
        usage = client.current_usage(tenant, "api.requests")
        assert (usage.total, usage.event_count) == (Decimal(total), count)
        return True

    eventually(check, timeout=timeout)


def test_ten_thousand_events_from_four_threads_arrive_exactly_once(client, tenant):
    tenants = [f"{tenant}-{n}" for n in range(4)]
    recorded: dict[str, list[str]] = {t: [] for t in tenants}
    # A buffer smaller than what is recorded: recorders wait for room while the sender works.
    writer = BufferedUsageWriter(client, batch_size=500, flush_interval=0.2, max_buffer=2_000, backoff=FAST)

    def record(name: str) -> None:
        for _ in range(2_500):
            recorded[name].append(writer.record(name, "api.requests", "0.5").event_id)

    threads = [threading.Thread(target=record, args=(name,)) for name in tenants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report = writer.close(timeout=60)
    assert report.complete
    assert (report.sent, report.rejected) == (10_000, 0)
    assert writer.stats.recorded == 10_000
    assert len({event_id for ids in recorded.values() for event_id in ids}) == 10_000
    for name in tenants:
        settle(client, name, "1250", 2_500, timeout=60)


def test_the_dev_host_stopped_and_restarted_under_the_writer(devhost, tmp_path: Path, tenant):
    # Its own host (sharing the session's Azurite) so stopping it leaves the other tests' host alone.
    own = DevHost(port=0, data=tmp_path / "azurite").start()
    port = own.port
    restarted: DevHost | None = None
    client = MeteringClient(own.base_url, FUNCTION_KEY, source="restart", timeout=5)
    writer = BufferedUsageWriter(client, batch_size=40, flush_interval=0.05, backoff=FAST)
    try:
        for _ in range(100):
            writer.record(tenant, "api.requests", "1")
        # Stopped while the sender is busy: some events are buffered, a request may be in flight.
        own.stop()
        # Recorded while nothing listens: the sender fails, backs off and keeps every event in order.
        for _ in range(100):
            writer.record(tenant, "api.requests", "1")
        eventually(lambda: writer.stats.retries >= 2)
        assert writer.stats.buffered > 0
        restarted = DevHost(port=port, data=tmp_path / "azurite").start()
        for _ in range(100):
            writer.record(tenant, "api.requests", "1")
        report = writer.close(timeout=30)
        assert report.complete
        assert (report.sent, report.rejected) == (300, 0)
        # Every retry resent the same events: none is lost and none is counted twice.
        settle(client, tenant, "300", 300)
    finally:
        client.close()
        (restarted or own).stop()


def test_a_refused_event_is_reported_and_does_not_block_the_rest(client, tenant, caplog):
    rejected: list[RejectedEvent] = []
    writer = BufferedUsageWriter(client, batch_size=20, flush_interval=60, on_rejected=rejected.extend)
    with caplog.at_level(logging.WARNING, logger="metering.client"):
        for _ in range(5):
            writer.record(tenant, "api.requests", "1")
        unknown = writer.record(tenant, "no.such.meter", "1")
        negative = writer.record(tenant, "api.requests", "-3")
        for _ in range(5):
            writer.record(tenant, "api.requests", "1")
        assert writer.flush(timeout=20)
    assert [(r.event.event_id, r.status) for r in rejected] == [(unknown.event_id, 422), (negative.event_id, 422)]
    assert rejected[0].reasons[0].startswith("metric: is not a meter of the catalog")
    assert rejected[1].reasons == ("quantity: must not be negative: api.requests does not allow it",)
    stats = writer.stats
    assert (stats.sent, stats.rejected, stats.buffered) == (10, 2, 0)
    assert "refused 2 event(s)" in caplog.text
    writer.close()
    settle(client, tenant, "10", 10)


def test_the_interval_sends_a_partial_batch_and_flush_sends_at_once(client, tenant):
    by_interval = BufferedUsageWriter(client, batch_size=100, flush_interval=0.1)
    for _ in range(3):
        by_interval.record(tenant, "api.requests", "1")
    eventually(lambda: by_interval.stats.sent == 3)
    by_interval.close()

    by_flush = BufferedUsageWriter(client, batch_size=100, flush_interval=3600)
    for _ in range(2):
        by_flush.record(tenant, "api.requests", "1")
    assert by_flush.stats.sent == 0
    assert by_flush.flush(timeout=20)
    assert by_flush.stats.sent == 2
    by_flush.close()
    with pytest.raises(WriterClosed):
        by_flush.record(tenant, "api.requests", "1")
    settle(client, tenant, "5", 5)


def test_a_full_buffer_blocks_or_raises_and_close_reports_what_was_not_sent(tenant):
    sock = closed_port()
    try:
        client = MeteringClient(f"http://127.0.0.1:{sock.getsockname()[1]}/api", "k")
        writer = BufferedUsageWriter(client, batch_size=2, flush_interval=0.01, max_buffer=2, backoff=FAST)
        kept = [writer.record(tenant, "api.requests", str(i)) for i in range(2)]
        with pytest.raises(BufferFull):
            writer.record(tenant, "api.requests", "3", block=False)
        with pytest.raises(BufferFull):
            writer.record(tenant, "api.requests", "4", timeout=0.2)
        assert not writer.flush(timeout=0.2)
        report = writer.close(timeout=0.3)
        assert not report.complete
        assert [event.event_id for event in report.unsent] == [event.event_id for event in kept]
        assert writer.stats.retries >= 1
        assert "POST http://127.0.0.1" in (writer.stats.last_error or "")
        client.close()
    finally:
        sock.close()


def test_async_writer(devhost, tenant):
    rejected: list[RejectedEvent] = []

    async def scenario() -> None:
        async with AsyncMeteringClient(devhost.base_url, FUNCTION_KEY) as client:
            writer = AsyncBufferedUsageWriter(
                client, batch_size=50, flush_interval=0.05, max_buffer=100, on_rejected=rejected.extend
            )
            async with writer:

                async def record(n: int) -> None:
                    for _ in range(100):
                        await writer.record(f"{tenant}-{n}", "api.requests", "0.25")

                await asyncio.gather(*(record(n) for n in range(3)))
                await writer.record(tenant, "no.such.meter", 1)
                assert await writer.flush(timeout=20)
                assert writer.stats.sent == 300
            with pytest.raises(WriterClosed):
                await writer.record(tenant, "api.requests", 1)

    run_async(scenario())
    assert [r.status for r in rejected] == [422]
    with MeteringClient(devhost.base_url, FUNCTION_KEY) as client:
        for n in range(3):
            settle(client, f"{tenant}-{n}", "25", 100)
