"""Benchmark: the ingest path against plain pydantic validation of the same request bodies.

    python bench/ingest.py [--requests 100] [--events 1000]

The ingest path is what POST /api/events does with a body: lossless JSON decoding, validation against the
model and the meter catalog, event ids, and packing into hub messages (the transport is a sink that counts
bytes). The baseline, in the same run, is `TypeAdapter(list[UsageEvent]).validate_json` of the same bodies.
Last line: `ingest_vs_validate_ratio=R` (target at least 0.33).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import timeit
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydantic import TypeAdapter

from metering.bootstrap import Services
from metering.core.events import UsageEvent
from metering.core.meters import load_catalog
from metering.quotas.plans import parse_plans
from metering.settings import Settings
from metering.stores.memory import MemoryStore
from metering.transport import EVENT_HUB_MESSAGE_BYTES, Message


class CountingSink:
    """The transport replaced by a sink: it counts what would be sent."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0

    def publish(self, messages: Sequence[Message]) -> None:
        self.messages += len(messages)
        self.bytes += sum(len(m.body) for m in messages)

    def close(self) -> None:
        pass


def bodies(requests: int, events: int, now: datetime) -> list[bytes]:
    rng = random.Random(3)
    out = []
    for r in range(requests):
        tenant = f"tenant-{r % 20:02d}"
        items = []
        for i in range(events):
            at = now - timedelta(seconds=rng.randrange(3600))
            items.append(
                {
                    "event_id": f"req{r}-evt{i}",
                    "tenant_id": tenant,
                    "metric": "api.requests",
                    "quantity": 1,
                    "timestamp": at.isoformat().replace("+00:00", "Z"),
                    "source": "gateway-eu-1",
                    "user_id": f"user-{rng.randrange(500)}",
                    "dimensions": {"endpoint": "/v1/search", "method": "GET", "region": "eu"},
                }
            )
        out.append(json.dumps(items).encode())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--events", type=int, default=1000)
    args = parser.parse_args()
    now = datetime.now(UTC)
    payloads = bodies(args.requests, args.events, now)
    total = args.requests * args.events
    sink = CountingSink()
    catalog = load_catalog()
    # Every tenant on a plan with an ingest rate, so the token buckets are part of the path measured; the rate is
    # high enough that no request of the run is refused. Tenant settings come from a memory store, as the app
    # reads them (cached) from its own.
    plans = parse_plans(
        {
            "version": "bench",
            "default_plan": "bench",
            "plans": {"bench": {"rate": {"events_per_second": 10**9, "burst": 10**6}}},
        },
        catalog,
    )
    # The hub's settings: messages packed for Event Hubs, not for the local queue.
    settings = Settings.model_validate(
        {"storage_connection": "UseDevelopmentStorage=true", "event_hub_connection": "Endpoint=sb://bench/"}
    )
    services = Services(settings, clock=lambda: now, store=MemoryStore(), publisher=sink, catalog=catalog, plans=plans)
    ingest = services.http.ingest
    assert services.ingest.max_message_bytes == EVENT_HUB_MESSAGE_BYTES
    adapter = TypeAdapter(list[UsageEvent])

    def run_ingest() -> None:
        for payload in payloads:
            response = ingest(payload, "application/json")
            assert response.status == 202, response.body[:300]

    def run_validate() -> None:
        for payload in payloads:
            adapter.validate_json(payload)

    # Interleaved, best of five each: both see the same machine.
    ingest_times, validate_times = [], []
    for _ in range(5):
        validate_times.append(timeit.timeit(run_validate, number=1))
        ingest_times.append(timeit.timeit(run_ingest, number=1))
    ingest_rate = total / min(ingest_times)
    validate_rate = total / min(validate_times)
    per_message = sink.bytes / sink.messages
    messages = sink.messages // 5
    print(f"requests={args.requests} events_per_request={args.events}")
    print(f"validate_json baseline: {validate_rate:,.0f} events/s")
    print(f"ingest path (decode, validate, catalog, rate limit, ids, pack): {ingest_rate:,.0f} events/s")
    print(f"messages: {messages} per pass, {per_message:,.0f} bytes each, {total / messages:,.0f} events each")
    print(f"ingest_vs_validate_ratio={ingest_rate / validate_rate:.2f}")


if __name__ == "__main__":
    main()
