"""A store that stops answering (its process frozen, as a hung host or a network partition leaves it) must not
hold a request for minutes: the SDK clients the app builds time out, and ingest answers 503 within about 25 s.
Each test has its own Azurite or local Cosmos server, which it freezes with SIGSTOP."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from metering.api.http import OUTAGES
from metering.bootstrap import Services
from metering.devhost.azurite import Azurite
from metering.devhost.cosmos import CosmosServer
from metering.settings import Settings, StoreKind

# The ingest path's worst case: a tenant settings read (4 attempts of 5 s, and the backoff between them).
WITHIN_SECONDS = 30


@pytest.fixture
def frozen_cosmos(azurite) -> Iterator[tuple[CosmosServer, Services]]:
    server = CosmosServer().start()
    try:
        settings = Settings(  # type: ignore[call-arg]
            storage_connection=azurite.connection_string,  # queues stay in storage, which keeps answering
            store=StoreKind.COSMOS,
            cosmos_endpoint=server.endpoint,
            cosmos_key=server.key,
            cosmos_non_atomic_local=True,
            cosmos_database=f"t{uuid.uuid4().hex}",
            local_queue=f"q{uuid.uuid4().hex}",
        )
        yield server, Services(settings)
    finally:
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


@pytest.fixture
def frozen(tmp_path) -> Iterator[tuple[Azurite, Services]]:
    azurite = Azurite(tmp_path / "azurite").start()
    try:
        settings = Settings(storage_connection=azurite.connection_string)  # type: ignore[call-arg]
        yield azurite, Services(settings)
    finally:
        assert azurite.process is not None
        os.kill(azurite.process.pid, signal.SIGCONT)
        azurite.stop()


def body(tenant: str, *ids: str | None) -> bytes:
    now = datetime.now(UTC).isoformat()
    events = [{"tenant_id": tenant, "metric": "api.requests", "quantity": "1", "timestamp": now, "source": "t"}
              | ({} if event_id is None else {"event_id": event_id}) for event_id in ids]  # fmt: skip
    return json.dumps(events).encode()


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    """What the call returned or raised, and how long it took."""
    started = time.monotonic()
    try:
        outcome: Any = call()
    except Exception as error:
        outcome = error
    return outcome, time.monotonic() - started


def test_requests_on_a_frozen_store_are_answered_within_seconds_not_minutes(frozen):
    azurite, services = frozen
    ingest = services.http.ingest
    known = f"known-{uuid.uuid4().hex[:8]}"
    assert ingest(body(known, "warm-1"), "application/json").status == 202  # tables, queue, cache ready
    assert azurite.process is not None
    os.kill(azurite.process.pid, signal.SIGSTOP)
    calls = {
        # A tenant not in the settings cache: its settings read waits on the store.
        "new tenant": lambda: ingest(body(f"new-{uuid.uuid4().hex[:8]}", None, "n-2"), "application/json"),
        # A cached tenant: publishing to the queue waits on the store.
        "known tenant": lambda: ingest(body(known, "k-1"), "application/json"),
        "usage read": lambda: services.usage.current(known, "api.requests"),
    }
    outcomes = run_at_once(calls)
    for name in ("new tenant", "known tenant"):
        response = outcomes[name][0]
        assert response.status == 503, name
        assert response.headers["Retry-After"] == "5"
        assert len(response.json()["event_ids"]) == (2 if name == "new tenant" else 1)
    assert isinstance(outcomes["usage read"][0], OUTAGES)  # what the HTTP functions answer 503


def test_requests_on_a_frozen_cosmos_account_are_answered_within_seconds(frozen_cosmos):
    server, services = frozen_cosmos
    known = f"known-{uuid.uuid4().hex[:8]}"
    assert services.http.ingest(body(known, "warm-1"), "application/json").status == 202
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    outcomes = run_at_once(
        {
            "new tenant": lambda: services.http.ingest(body(f"new-{uuid.uuid4().hex[:8]}", "n-1"), "application/json"),
            "usage read": lambda: services.usage.current(known, "api.requests"),
        }
    )
    response = outcomes["new tenant"][0]
    assert (response.status, response.json()["event_ids"]) == (503, ["n-1"])
    assert isinstance(outcomes["usage read"][0], OUTAGES)


def run_at_once(calls: dict[str, Callable[[], Any]]) -> dict[str, tuple[Any, float]]:
    """Each call's outcome and duration; every one must be answered within the bound."""
    pool = ThreadPoolExecutor(len(calls))
    try:
        futures = {name: pool.submit(timed, call) for name, call in calls.items()}
        # Without timeouts these would wait for the SDKs' defaults: 300 s per attempt.
        outcomes = {name: future.result(timeout=WITHIN_SECONDS + 30) for name, future in futures.items()}
    finally:
        pool.shutdown(wait=False)  # should one still wait, the fixture thaws the store and it ends
    for name, (_, seconds) in outcomes.items():
        assert seconds < WITHIN_SECONDS, f"{name}: answered after {seconds:.1f} s"
    return outcomes
