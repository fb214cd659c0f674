"""The dev host's Event Hub semantics: a failed call is delivered again, and the totals stay exact."""

from __future__ import annotations

from metering.bootstrap import services
from tests.e2e.conftest import feed_of
from tests.e2e.test_api import settle, usage_event
from tests.support import ProbedStore


def test_a_batch_whose_call_failed_is_delivered_again_and_counted_once(devhost, api, tenant):
    ledger = services().ledger
    real = ledger.store
    probed = ProbedStore(real)
    # The second commit reaches the store, then the "process" dies before it hears back: the worst case.
    probed.probe.crash_after, probed.probe.crash_applies = 1, True
    ledger.store = probed
    try:
        feed = feed_of(devhost, tenant)
        failures = feed.stats.failures
        events = [usage_event(tenant, f"e{i}", "1.5") for i in range(250)]
        assert api.post("/events", json=events).status_code == 202
        settle(api, tenant, ("375", 250))
        assert feed.stats.failures > failures
        assert probed.probe.crash_after is None  # the crash happened
    finally:
        ledger.store = real
