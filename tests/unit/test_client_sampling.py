"""The sampling writer's choice (pure): integer weights only, one event in k of a sampled meter kept, every event
of the other meters sent as recorded."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from metering.client import new_event
from metering.client.sampling import _Sampler, weight_of

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


@pytest.mark.parametrize(("rate", "weight"), [(1, 1), (0.5, 2), (0.1, 10), (0.01, 100), (1e-6, 1_000_000)])
def test_a_rate_is_one_in_an_integer(rate, weight):
    assert weight_of(rate) == weight


@pytest.mark.parametrize("rate", [0, -0.1, 1.5, 0.3, 0.015, 1e-7])
def test_a_rate_that_is_not_one_in_an_integer_up_to_a_million_is_refused(rate):
    with pytest.raises(ValueError, match="sample_rate"):
        weight_of(rate)


def test_one_event_in_k_of_a_sampled_meter_is_kept_with_its_weight_and_the_rest_go_as_recorded():
    sampler = _Sampler(None, 0.1, seed=5)
    views = [sampler.sampled(new_event("acme", "pages.viewed", 1, source="t", timestamp=NOW)) for _ in range(5000)]
    kept = [event for event in views if event is not None]
    assert 420 < len(kept) < 580  # 500 expected: a binomial's deviation is 21
    assert {event.sample_weight for event in kept} == {10}
    calls = [sampler.sampled(new_event("acme", "api.requests", 1, source="t", timestamp=NOW)) for _ in range(50)]
    assert all(event is not None and event.sample_weight is None for event in calls)
    assert sampler.recorded == 5050
    again = _Sampler(None, 0.1, seed=5)
    replay = [again.sampled(new_event("acme", "pages.viewed", 1, source="t", timestamp=NOW)) for _ in range(5000)]
    assert [e is None for e in replay] == [e is None for e in views]  # a seed makes the choice reproducible
