"""A real dev host per test worker (its own Azurite, a free port, a local hub of four partitions fed by threads of
the test process, so tests can reach into the app), and an HTTP client with the key."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from metering.devhost.feed import HubFeed
from metering.devhost.host import DevHost
from metering.transport.partitioning import partition_for
from tests.support import run_async  # noqa: F401 (the e2e tests import it from here)

FUNCTION_KEY = "test-function-key"
ADMIN_KEY = "test-admin-key"
# Least-privilege keys, as Azure's per-function keys: a gateway may only ingest, a quota checker only read.
GATEWAY_KEY = "test-gateway-key"
READ_KEY = "test-read-only-key"
FUNCTION_KEYS = {"ingest": [GATEWAY_KEY], "usage": [READ_KEY], "usage_history": [READ_KEY], "quota": [READ_KEY]}
# The portal: its token secrets (the previous one as during a rotation), and the origins that may frame it
# (tests/e2e/browser.py serves an embedding page from localhost; 127.0.0.1 is another origin).
PORTAL_SECRET = "test-portal-secret-" + "0123456789abcdef" * 2
PORTAL_SECRET_PREVIOUS = "test-portal-previous-" + "fedcba9876543210" * 2
PORTAL_FRAME_ANCESTORS = "http://localhost:*"


@pytest.fixture(scope="session")
def devhost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHost]:
    saved = dict(os.environ)
    os.environ.update(
        {
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "METERING_FUNCTION_KEY": FUNCTION_KEY,
            "METERING_ADMIN_KEY": ADMIN_KEY,
            "METERING_FUNCTION_KEYS": json.dumps(FUNCTION_KEYS),
            # The billing tests close the previous calendar month on demand; with the default 24 h grace it
            # would not be due on the first day of a month.
            "METERING_GRACE_HOURS": "0",
            # Periods close only when a test asks (POST /api/manage/periods/close), never behind its back
            # between two of its steps: once a year instead of every five minutes.
            "CLOSE_PERIODS_SCHEDULE": "0 0 0 1 1 *",
            "METERING_PORTAL_SECRET": PORTAL_SECRET,
            "METERING_PORTAL_SECRET_PREVIOUS": PORTAL_SECRET_PREVIOUS,
            "METERING_PORTAL_FRAME_ANCESTORS": PORTAL_FRAME_ANCESTORS,
            # Several partitions, as a hub has: tenants' events are fed by different feeds, at once.
            "METERING_LOCAL_PARTITIONS": "4",
        }
    )
    host = DevHost(port=0, data=tmp_path_factory.mktemp("devhost-azurite"))
    try:
        host.start()
        # The feed polls quickly so tests wait on the pipeline, not on idle sleeps.
        for feed in host.feeds:
            feed.idle_seconds = 0.05
        yield host
    finally:
        host.stop()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the session's browser tests (tests/e2e/browser.py)."""
    from tests.e2e.browser import launch  # noqa: PLC0415 (Playwright: only for the browser tests)

    with launch() as chromium:
        yield chromium


@pytest.fixture(scope="session")
def previous_period(devhost: DevHost) -> Any:
    """The previous period's usage of every module that needs one, written first, then closed by one close.

    A close closes every period that ended before it for every tenant (an event of one is late from then on), so
    the usage of the previous period is all written before the session's first close: the portal's tenants
    (tests/e2e/portal.py) and the billing tests' (test_billing_api.build_previous_month, which ends with the
    close). Every test that closes periods on the shared dev host asks for this first."""
    from tests.e2e.portal import write  # noqa: PLC0415
    from tests.e2e.test_billing_api import build_previous_month  # noqa: PLC0415

    portal = write(devhost)
    return portal, build_previous_month(devhost)


@pytest.fixture(scope="session")
def portal_tenants(devhost: DevHost, previous_period: Any) -> Any:
    """Tenants with usage for the portal's tests, seeded once (tests/e2e/portal.py)."""
    from tests.e2e.portal import finish  # noqa: PLC0415

    return finish(devhost, previous_period[0])


def feed_of(devhost: DevHost, partition_key: str) -> HubFeed:
    """The feed of the local partition a partition key's messages go to (a tenant's, with one shard)."""
    return devhost.feeds[partition_for(partition_key, len(devhost.feeds))]


@pytest.fixture
def api(devhost: DevHost) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=devhost.base_url, headers={"x-functions-key": FUNCTION_KEY}, timeout=30) as client:
        yield client


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def eventually(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll until `check` returns a truthy value or raises no AssertionError; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(interval)
