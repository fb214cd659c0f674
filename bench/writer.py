"""Benchmark: a simulated gateway offers events to the pre-aggregating writer against the dev host.

    python bench/writer.py [--rate 20000] [--seconds 10] [--window 10] [--tenants 20] [--patterns]

Starts the dev host itself (with its own Azurite) in a separate process. The gateway serves `rate / 2` requests a
second over `tenants` tenants, 4 endpoints and 2 regions, and reports two events per request: `api.requests` (1)
and `transfer.bytes` (the response size), both `sum` meters grouped by endpoint and region. Every event goes to
one `AggregatingUsageWriter`; once the writer is closed, the usage of every tenant and meter is read back until
it equals what was offered, or a minute passes. Prints events offered, events sent, `events_reduction=R`
(offered / sent; target at least 100) and `totals exact`, or each difference.

`--patterns` then measures each metering pattern on the same load at `--compare-rate` (300 events/s), but the
real-time one at `--realtime-rate` (30 events/s: the local dev host, one process on shared cores, answers about 50
single-event requests a second, so at 300/s its requests would queue for a minute): how many events and requests
reach the service per 1,000 offered, how long the last event takes to be sent and to be visible, and how exact
the figures are (the sampled meter's against its error bound).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.devhost import start_host
from metering.client import (
    AggregatingUsageWriter,
    BufferedUsageWriter,
    MeteringClient,
    SamplingUsageWriter,
)

KEY = "bench-" + uuid.uuid4().hex
ENDPOINTS = ("/v1/search", "/v1/items", "/v1/orders", "/v1/users")
REGIONS = ("eu", "us")


@dataclass
class Truth:
    """What was offered, per tenant and meter: the exact total and the number of events."""

    figures: dict[tuple[str, str], list[Any]] = field(default_factory=dict)

    def add(self, tenant: str, metric: str, quantity: Decimal, weight: int = 1) -> None:
        entry = self.figures.setdefault((tenant, metric), [Decimal(0), 0])
        entry[0] += quantity
        entry[1] += weight


def offer(
    record: Callable[..., Any], rate: int, seconds: float, tenants: list[str], *, views: bool = False
) -> tuple[Truth, int, float]:
    """Offer `rate` events a second for `seconds`, paced in 10 ms ticks; returns what was offered and how long
    it took (longer than `seconds` when the writer cannot keep up). With `views`, each request also reports a
    page view (`pages.viewed`, a sampled meter)."""
    rng = random.Random(14)
    truth = Truth()
    per_request = 3 if views else 2
    requests_per_second = rate / per_request
    offered = 0
    served = 0
    started = time.monotonic()
    for tick in range(int(seconds * 100)):
        due = started + tick / 100
        if (pause := due - time.monotonic()) > 0:
            time.sleep(pause)
        # Requests due by the end of this tick, so a rate below one request a tick is paced too.
        requests_now = round(requests_per_second * (tick + 1) / 100) - served
        served += requests_now
        for _ in range(requests_now):
            tenant = tenants[rng.randrange(len(tenants))]
            dimensions = {"endpoint": ENDPOINTS[rng.randrange(4)], "region": REGIONS[rng.randrange(2)]}
            size = Decimal(rng.randrange(200, 60_000))
            record(tenant, "api.requests", 1, dimensions=dimensions)
            record(tenant, "transfer.bytes", size, dimensions=dimensions)
            truth.add(tenant, "api.requests", Decimal(1))
            truth.add(tenant, "transfer.bytes", size)
            if views:
                record(tenant, "pages.viewed", 1, dimensions={"page": dimensions["endpoint"]})
                truth.add(tenant, "pages.viewed", Decimal(1))
            offered += per_request
    return truth, offered, time.monotonic() - started


@dataclass
class Sampled:
    """A sampled meter's reads against what was offered."""

    estimate: Decimal = Decimal(0)
    truth: Decimal = Decimal(0)
    within: int = 0
    reads: int = 0


def read_back(
    client: MeteringClient, truth: Truth, *, sampled: str | None = None, timeout: float = 90
) -> tuple[dict[tuple[str, str], str], Sampled]:
    """Poll every tenant and meter until its usage equals what was offered (a `sampled` meter is compared with
    its error bound instead); returns the differences left at the deadline."""
    started = time.monotonic()
    pending = {key: value for key, value in truth.figures.items() if key[1] != sampled}
    differences: dict[tuple[str, str], str] = {}
    while pending and time.monotonic() - started < timeout:
        for key, (total, count) in list(pending.items()):
            usage = client.current_usage(*key)
            if (usage.total, usage.event_count) == (total, count):
                del pending[key]
                differences.pop(key, None)
            else:
                differences[key] = f"read {usage.total} in {usage.event_count} events, offered {total} in {count}"
        if pending:
            time.sleep(0.2)
    estimates = Sampled()
    for (tenant, metric), (total, _count) in truth.figures.items():
        if metric == sampled:
            usage = client.current_usage(tenant, metric)
            estimates.estimate += usage.total
            estimates.truth += total
            estimates.within += abs(usage.total - total) <= (usage.error_bound or 0)
            estimates.reads += 1
    return {key: differences[key] for key in pending}, estimates


def report_exactness(differences: dict[tuple[str, str], str]) -> None:
    if not differences:
        print("totals exact")
        return
    print(f"totals differ for {len(differences)} tenant meters:")
    for (tenant, metric), text in sorted(differences.items()):
        print(f"  {tenant} {metric}: {text}")


def aggregating_run(base: str, rate: int, seconds: float, window: float, tenants: int) -> None:
    names = [f"gw-{uuid.uuid4().hex[:6]}-{n}" for n in range(tenants)]
    with MeteringClient(base, KEY, source="gateway", timeout=30) as client:
        writer = AggregatingUsageWriter(client, window=window)
        cpu = time.process_time()
        truth, offered, took = offer(writer.record, rate, seconds, names)
        cpu = time.process_time() - cpu
        last = time.monotonic()
        report = writer.close(timeout=120)
        stats = writer.stats
        differences, _ = read_back(client, truth)
        visible = time.monotonic() - last
    print(
        f"gateway: {rate:,} events/s for {seconds:g} s, {tenants} tenants, 4 endpoints, 2 regions; window {window:g} s"
    )
    print(
        f"events offered: {offered:,} in {took:.1f} s ({offered / took:,.0f}/s); {cpu / offered * 1e6:.1f} us CPU each"
    )
    print(
        f"events sent: {stats.sent:,} in {stats.requests} requests "
        f"(retries {stats.retries}, rejected {stats.rejected}, unsent {len(report.unsent)})"
    )
    print(f"all visible in usage {visible:.1f} s after the last event (the writer closed: its open windows went then)")
    print(f"events_reduction={offered / max(stats.sent, 1):.0f}")
    report_exactness(differences)


def offer_one_by_one(
    client: MeteringClient, rate: int, seconds: float, names: list[str]
) -> tuple[Truth, int, float, float]:
    """An app reporting each request as it serves it: many request threads, one POST per event. Also returns when
    the offering ended (monotonic): the POSTs still waiting then are answered later, when the host keeps up."""
    calls: list[Future[Any]] = []
    with ThreadPoolExecutor(max_workers=32) as pool:

        def record(tenant: str, metric: str, quantity: Any, **fields: Any) -> None:
            calls.append(pool.submit(client.record, tenant, metric, quantity, **fields))

        truth, offered, took = offer(record, rate, seconds, names, views=True)
        ended = time.monotonic()
        for call in calls:
            call.result()
    return truth, offered, took, ended


Writer = Callable[[MeteringClient], Any]
PATTERNS: list[tuple[str, Writer | None]] = [
    ("real-time (one request per event)", None),
    ("near-real-time (buffered, 1 s)", lambda c: BufferedUsageWriter(c, batch_size=500, flush_interval=1.0)),
    ("batch (aggregating, 10 s windows)", lambda c: AggregatingUsageWriter(c, window=10)),
    (
        "sampling (buffered, pages.viewed 1 in 10)",
        lambda c: SamplingUsageWriter(c, sample_rate=0.1, batch_size=500, flush_interval=1.0, seed=3),
    ),
]


def pattern_runs(base: str, rate: int, seconds: float, realtime_rate: int) -> None:
    """Each pattern on the same gateway load, at a rate the local pipeline takes event by event. Latency is
    measured as a live stream has it: events are timestamped as they are offered, and a writer is left to send
    on its own (windows when they end, batches when their interval is up) before it is closed."""
    print(
        f"patterns at {rate:,} events/s (real-time at {realtime_rate:,}) for {seconds:g} s "
        "(api.requests, transfer.bytes, pages.viewed):"
    )
    for name, make in PATTERNS:
        names = [f"p-{uuid.uuid4().hex[:6]}-{n}" for n in range(5)]
        with MeteringClient(base, KEY, source="gateway", timeout=30) as client:
            if make is None:
                truth, offered, took, last = offer_one_by_one(client, realtime_rate, seconds, names)
                sent_at = time.monotonic()
                sent = requests = offered
            else:
                writer = make(client)
                truth, offered, took = offer(writer.record, rate, seconds, names, views=True)
                last = time.monotonic()
                # As a live stream would: windows go when they end, batches when their interval is up.
                deadline = last + 60
                while writer.stats.buffered and time.monotonic() < deadline:
                    time.sleep(0.05)
                sent_at = time.monotonic()
                writer.close(timeout=120)
                sent, requests = writer.stats.sent, writer.stats.requests
            sampled = "pages.viewed" if name.startswith("sampling") else None
            differences, estimates = read_back(client, truth, sampled=sampled)
            visible = time.monotonic() - last
        exact = "exact" if not differences else f"{len(differences)} tenant meters differ"
        if sampled:
            exact += (
                f"; pages.viewed estimated {estimates.estimate} for {estimates.truth}, "
                f"{estimates.within} of {estimates.reads} tenants within the bound"
            )
        print(
            f"  {name}: offered {offered / took:,.0f}/s; per 1,000 offered {1000 * sent / offered:,.1f} events in "
            f"{1000 * requests / offered:,.2f} requests; the last event sent after {sent_at - last:.1f} s and "
            f"visible after {visible:.1f} s; {exact}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--window", type=float, default=10)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--patterns", action="store_true")
    parser.add_argument("--compare-rate", type=int, default=300)
    parser.add_argument("--realtime-rate", type=int, default=30)
    args = parser.parse_args()
    host = start_host("writer", {"METERING_FUNCTION_KEY": KEY})
    base = host.base
    try:
        aggregating_run(base, args.rate, args.seconds, args.window, args.tenants)
        if args.patterns:
            pattern_runs(base, args.compare_rate, args.seconds, args.realtime_rate)
    finally:
        host.stop(timeout=30)


if __name__ == "__main__":
    main()
