"""The retry schedule of webhook deliveries: exponential with full jitter, capped, for 26 hours."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from metering.notifications.webhooks.backoff import RetrySchedule

START = datetime(2026, 11, 24, 12, tzinfo=UTC)
SCHEDULE = RetrySchedule()


def test_the_longest_wait_doubles_from_30_seconds_up_to_two_hours():
    ceilings = [SCHEDULE.ceiling(n) for n in range(1, 12)]
    assert ceilings[:9] == [timedelta(seconds=30 * 2**i) for i in range(8)] + [timedelta(hours=2)]
    assert set(ceilings[8:]) == {timedelta(hours=2)}
    assert SCHEDULE.ceiling(10_000) == timedelta(hours=2)


@pytest.mark.parametrize(("draw", "wait"), [(0.0, timedelta()), (0.5, timedelta(minutes=4)), (0.999, None)])
def test_the_wait_is_a_random_share_of_the_longest(draw, wait):
    following = SCHEDULE.next_attempt(5, START, START, lambda: draw)
    assert following is not None
    assert following - START == (wait if wait is not None else SCHEDULE.ceiling(5) * 0.999)


@pytest.mark.parametrize("seed", range(20))
def test_attempts_go_on_for_the_whole_window_and_the_last_falls_at_its_end(seed):
    draws = random.Random(seed)
    now, attempts = START, 0
    while True:
        attempts += 1
        following = SCHEDULE.next_attempt(attempts, START, now, draws.random)
        if following is None:
            break
        assert now <= following <= now + SCHEDULE.cap
        now = following
    # Given up only at the end of the window: retried for 26 hours, more than a day.
    assert now == START + timedelta(hours=26)
    assert attempts > 13


def test_a_delivery_past_its_window_is_given_up_at_once():
    late = START + SCHEDULE.window + timedelta(seconds=1)
    assert SCHEDULE.next_attempt(1, START, late, lambda: 0.5) is None
