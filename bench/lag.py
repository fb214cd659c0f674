"""Benchmark: end-to-end lag through the dev host, from a request's 202 to its events in GET /api/usage.

    python bench/lag.py [--rate 500] [--seconds 20] [--batch 100] [--tenants 20] [--no-ramp]

Starts the dev host itself (with its own Azurite) in a separate process. Sends `rate` events/s for `seconds`
in requests of `batch` events over `tenants` tenants, and polls each request's tenant until its events are
visible. Prints accepted events/s and the p50 / p95 lag, then ramps the rate up to find the highest the local
stack sustains without the lag growing. Last line: `lag_p95_s=X` (target at most 2).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.devhost import start_host

KEY = "bench-" + uuid.uuid4().hex


@dataclass
class Run:
    rate: int
    accepted: int = 0
    lags: list[tuple[float, float]] = field(default_factory=list)  # (sent at, lag)
    seconds: float = 0.0
    failures: int = 0

    def p(self, q: float) -> float:
        values = sorted(lag for _, lag in self.lags)
        return values[min(int(q * len(values)), len(values) - 1)] if values else float("inf")

    @property
    def growing(self) -> bool:
        """The lag grows when the last third of the run waits clearly longer than the first third."""
        if len(self.lags) < 6:
            return True
        ordered = [lag for _, lag in sorted(self.lags)]
        third = len(ordered) // 3
        first, last = statistics.median(ordered[:third]), statistics.median(ordered[-third:])
        return last > 2 * first + 0.5


def measure(base: str, rate: int, seconds: float, batch: int, tenants: int) -> Run:
    run = Run(rate)
    prefix = uuid.uuid4().hex[:6]
    counts = dict.fromkeys(range(tenants), 0)
    locks = {t: threading.Lock() for t in range(tenants)}
    pollers: list[threading.Thread] = []
    headers = {"x-functions-key": KEY}
    client = httpx.Client(base_url=base, headers=headers, timeout=30, limits=httpx.Limits(max_connections=64))

    def wait_visible(tenant: str, expected: int, accepted_at: float) -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as poller:
            deadline = accepted_at + 120
            while time.monotonic() < deadline:
                count = poller.get(f"/usage/{tenant}/api.requests").json()["event_count"]
                if count >= expected:
                    run.lags.append((accepted_at, time.monotonic() - accepted_at))
                    return
                time.sleep(0.05)
            run.failures += 1

    interval = batch / rate
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < seconds:
        due = started + sent * interval
        if (pause := due - time.monotonic()) > 0:
            time.sleep(pause)
        index = sent % tenants
        tenant = f"{prefix}-{index}"
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        events = [
            {
                "event_id": f"{sent}-{i}",
                "tenant_id": tenant,
                "metric": "api.requests",
                "quantity": 1,
                "timestamp": now,
                "source": "lag",
            }
            for i in range(batch)
        ]
        with locks[index]:
            response = client.post("/events", json=events)
            if response.status_code != 202:
                run.failures += 1
            else:
                run.accepted += batch
                counts[index] += batch
                poller = threading.Thread(
                    target=wait_visible, args=(tenant, counts[index], time.monotonic()), daemon=True
                )
                poller.start()
                pollers.append(poller)
        sent += 1
    run.seconds = time.monotonic() - started
    for poller in pollers:
        poller.join(timeout=130)
    client.close()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--no-ramp", action="store_true")
    args = parser.parse_args()
    host = start_host("lag", {"METERING_FUNCTION_KEY": KEY})
    base = host.base
    try:
        run = measure(base, args.rate, args.seconds, args.batch, args.tenants)
        shape = f"{args.batch}-event requests over {args.tenants} tenants"
        print(f"rate={args.rate} events/s for {args.seconds:.0f} s in {shape}")
        print(f"accepted: {run.accepted / run.seconds:,.0f} events/s; failures: {run.failures}")
        print(f"lag from 202 to visible in usage: p50 {run.p(0.5):.2f} s, p95 {run.p(0.95):.2f} s")
        if not args.no_ramp:
            sustained = args.rate if not run.growing else 0
            for rate in (750, 1000, 1500, 2000, 3000, 4000):
                trial = measure(base, rate, 10, args.batch, args.tenants)
                ok = not trial.growing and not trial.failures and trial.accepted / trial.seconds > 0.9 * rate
                print(
                    f"  ramp {rate} events/s: accepted {trial.accepted / trial.seconds:,.0f}/s, "
                    f"p50 {trial.p(0.5):.2f} s, p95 {trial.p(0.95):.2f} s, {'sustained' if ok else 'lag grows'}"
                )
                if not ok:
                    break
                sustained = rate
            print(f"highest rate sustained without the lag growing: {sustained:,} events/s")
        print(f"lag_p95_s={run.p(0.95):.2f}")
    finally:
        host.stop(timeout=30)


if __name__ == "__main__":
    main()
