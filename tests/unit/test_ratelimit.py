"""The ingest rate limiter: token buckets driven by a clock the test advances (nothing here sleeps)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.quotas.ratelimit import RateLimit, RateLimiter


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def rate(per_second: str | int, burst: int) -> RateLimit:
    return RateLimit(events_per_second=per_second, burst=burst)


# Powers of two keep the float arithmetic exact, so waits can be compared with ==.
FOUR_A_SECOND = rate(4, 8)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(clock: FakeClock) -> RateLimiter:
    return RateLimiter(clock)


# one key --------------------------------------------------------------------------------------------------------


def test_a_new_key_has_a_full_burst(limiter: RateLimiter) -> None:
    assert limiter.take("acme", 8, FOUR_A_SECOND) is None
    assert limiter.take("acme", 1, FOUR_A_SECOND) == 0.25


def test_the_burst_may_be_taken_in_pieces(limiter: RateLimiter) -> None:
    assert [limiter.take("acme", 3, FOUR_A_SECOND) for _ in range(2)] == [None, None]
    assert limiter.take("acme", 2, FOUR_A_SECOND) is None
    assert limiter.take("acme", 1, FOUR_A_SECOND) is not None


def test_tokens_refill_at_the_rate(limiter: RateLimiter, clock: FakeClock) -> None:
    assert limiter.take("acme", 8, FOUR_A_SECOND) is None
    clock.advance(0.5)
    assert limiter.take("acme", 2, FOUR_A_SECOND) is None
    assert limiter.take("acme", 1, FOUR_A_SECOND) == 0.25


def test_refill_stops_at_the_burst(limiter: RateLimiter, clock: FakeClock) -> None:
    assert limiter.take("acme", 1, FOUR_A_SECOND) is None
    clock.advance(3600)
    assert limiter.take("acme", 8, FOUR_A_SECOND) is None
    assert limiter.take("acme", 1, FOUR_A_SECOND) == 0.25


def test_retry_after_is_the_time_until_the_amount_is_there(limiter: RateLimiter, clock: FakeClock) -> None:
    assert limiter.take("acme", 8, FOUR_A_SECOND) is None
    assert limiter.take("acme", 3, FOUR_A_SECOND) == 0.75
    clock.advance(0.5)
    assert limiter.take("acme", 3, FOUR_A_SECOND) == 0.25
    clock.advance(0.25)
    assert limiter.take("acme", 3, FOUR_A_SECOND) is None


def test_waiting_the_returned_time_is_enough_whatever_the_rounding(limiter: RateLimiter, clock: FakeClock) -> None:
    # A third of a second is not a float: the wait is rounded, and must still be enough.
    three = rate(3, 3)
    assert limiter.take("acme", 3, three) is None
    wait = limiter.take("acme", 1, three)
    assert wait == pytest.approx(1 / 3)
    assert wait is not None
    clock.advance(wait)
    assert limiter.take("acme", 1, three) is None


def test_a_refused_take_takes_nothing(limiter: RateLimiter, clock: FakeClock) -> None:
    assert limiter.take("acme", 8, FOUR_A_SECOND) is None
    clock.advance(0.5)  # two tokens back
    assert limiter.take("acme", 3, FOUR_A_SECOND) == 0.25
    # Had the refusal taken the two tokens there, these would be refused too.
    assert limiter.take("acme", 2, FOUR_A_SECOND) is None


def test_more_than_the_burst_never_succeeds(limiter: RateLimiter, clock: FakeClock) -> None:
    # The answer is the time a whole bucket takes to refill: never zero, so never an immediate retry.
    assert limiter.take("acme", 9, FOUR_A_SECOND) == 2.0
    clock.advance(3600)
    assert limiter.take("acme", 9, FOUR_A_SECOND) == 2.0
    # And it took nothing.
    assert limiter.take("acme", 8, FOUR_A_SECOND) is None


def test_zero_is_always_granted(limiter: RateLimiter) -> None:
    assert limiter.take("acme", 8, FOUR_A_SECOND) is None
    assert limiter.take("acme", 0, FOUR_A_SECOND) is None


def test_a_negative_amount_is_a_programming_error(limiter: RateLimiter) -> None:
    with pytest.raises(ValueError, match="negative"):
        limiter.take("acme", -1, FOUR_A_SECOND)


def test_keys_have_their_own_buckets(limiter: RateLimiter) -> None:
    assert limiter.take("acme", 8, FOUR_A_SECOND) is None
    assert limiter.take("globex", 8, FOUR_A_SECOND) is None
    assert limiter.take("acme", 1, FOUR_A_SECOND) is not None


def test_a_new_rate_applies_from_the_next_take(limiter: RateLimiter, clock: FakeClock) -> None:
    assert limiter.take("acme", 8, FOUR_A_SECOND) is None
    clock.advance(1)
    # Upgraded to 16/s: the second that passed refilled at the old rate (4), the wait counts at the new one.
    faster = rate(16, 32)
    assert limiter.take("acme", 6, faster) == 0.125
    # Downgraded to a burst of 2: whatever the bucket held is capped to it.
    clock.advance(10)
    assert limiter.take("acme", 2, rate(4, 2)) is None
    assert limiter.take("acme", 1, rate(4, 2)) == 0.25


def test_the_clock_going_back_refills_nothing(limiter: RateLimiter, clock: FakeClock) -> None:
    assert limiter.take("acme", 8, FOUR_A_SECOND) is None
    clock.advance(-5)
    assert limiter.take("acme", 1, FOUR_A_SECOND) == 0.25


# several keys at once -------------------------------------------------------------------------------------------


def test_take_all_takes_from_every_key(limiter: RateLimiter) -> None:
    assert limiter.take_all({"acme": (5, FOUR_A_SECOND), "globex": (8, FOUR_A_SECOND)}) is None
    assert limiter.take("acme", 3, FOUR_A_SECOND) is None
    assert limiter.take("acme", 1, FOUR_A_SECOND) == 0.25
    assert limiter.take("globex", 1, FOUR_A_SECOND) == 0.25


def test_what_is_given_back_can_be_taken_again_up_to_the_burst(limiter: RateLimiter) -> None:
    assert limiter.take_all({"acme": (6, FOUR_A_SECOND), "globex": (2, FOUR_A_SECOND)}) is None
    limiter.give_back({"acme": (6, FOUR_A_SECOND), "globex": (2, FOUR_A_SECOND)})
    assert limiter.take("acme", 8, FOUR_A_SECOND) is None
    limiter.give_back({"globex": (5, FOUR_A_SECOND)})  # more than was taken: still at most a full bucket
    assert limiter.take("globex", 8, FOUR_A_SECOND) is None
    assert limiter.take("globex", 1, FOUR_A_SECOND) == 0.25


def test_take_all_refuses_the_whole_request_and_takes_nothing(limiter: RateLimiter) -> None:
    assert limiter.take("globex", 7, FOUR_A_SECOND) is None
    assert limiter.take_all({"acme": (8, FOUR_A_SECOND), "globex": (2, FOUR_A_SECOND)}) == 0.25
    # acme kept its whole burst, globex its one token.
    assert limiter.take("acme", 8, FOUR_A_SECOND) is None
    assert limiter.take("globex", 1, FOUR_A_SECOND) is None


def test_take_all_waits_for_the_slowest_key(limiter: RateLimiter) -> None:
    assert limiter.take("acme", 8, FOUR_A_SECOND) is None
    assert limiter.take("globex", 8, FOUR_A_SECOND) is None
    assert limiter.take_all({"acme": (1, FOUR_A_SECOND), "globex": (3, FOUR_A_SECOND)}) == 0.75


def test_take_all_of_nothing_is_granted(limiter: RateLimiter) -> None:
    assert limiter.take_all({}) is None


# memory ---------------------------------------------------------------------------------------------------------


def test_idle_full_buckets_are_dropped_past_the_key_limit(clock: FakeClock) -> None:
    limiter = RateLimiter(clock, max_keys=3)
    for key in ("a", "b", "c"):
        assert limiter.take(key, 8, FOUR_A_SECOND) is None
    assert len(limiter) == 3
    clock.advance(2)  # a, b and c are full again
    assert limiter.take("d", 1, FOUR_A_SECOND) is None
    assert len(limiter) == 1
    # A dropped key starts again with a full bucket, exactly what it had.
    assert limiter.take("a", 8, FOUR_A_SECOND) is None
    assert limiter.take("a", 1, FOUR_A_SECOND) == 0.25


def test_busy_buckets_are_kept(clock: FakeClock) -> None:
    limiter = RateLimiter(clock, max_keys=3)
    for key in ("a", "b", "c"):
        assert limiter.take(key, 8, FOUR_A_SECOND) is None
    clock.advance(1)  # half refilled: dropping them would hand out tokens they do not have
    assert limiter.take("d", 1, FOUR_A_SECOND) is None
    assert len(limiter) == 4
    assert limiter.take("a", 5, FOUR_A_SECOND) == 0.25


def test_the_key_count_stays_bounded_under_churn(clock: FakeClock) -> None:
    limiter = RateLimiter(clock, max_keys=100)
    for index in range(10_000):
        assert limiter.take(f"tenant-{index}", 1, FOUR_A_SECOND) is None
        clock.advance(0.01)
    # A bucket refills its one token in a quarter second: only the last few dozen keys can still be held, plus
    # whatever accumulated since the last prune.
    assert len(limiter) <= 101


def test_refused_requests_are_pruned_too(clock: FakeClock) -> None:
    limiter = RateLimiter(clock, max_keys=2)
    for index in range(50):
        assert limiter.take(f"tenant-{index}", 9, FOUR_A_SECOND) is not None
    assert len(limiter) <= 3


# threads --------------------------------------------------------------------------------------------------------


@pytest.fixture
def eager_thread_switches() -> Iterator[None]:
    # Threads switch every microsecond instead of every 5 ms, so a take without the lock would be interrupted
    # between reading a bucket and writing it back.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


@pytest.mark.usefixtures("eager_thread_switches")
def test_concurrent_takes_never_grant_more_than_the_burst(limiter: RateLimiter) -> None:
    # The clock stands still: exactly the burst can be granted, however the threads interleave.
    limit = rate(1, 20_000)
    granted = [0] * 8

    def worker(slot: int) -> None:
        for _ in range(3_000):
            if limiter.take("acme", 1, limit) is None:
                granted[slot] += 1

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 20_000
    assert limiter.take("acme", 1, limit) == 1.0


# properties -----------------------------------------------------------------------------------------------------

KEYS = ("a", "b", "c")
rates = st.builds(
    RateLimit,
    events_per_second=st.decimals(min_value=Decimal("0.01"), max_value=Decimal(1000), places=2),
    burst=st.integers(min_value=1, max_value=50),
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(min_value=0, max_value=5, allow_nan=False)),
        st.tuples(st.just("take"), st.sampled_from(KEYS), st.integers(min_value=0, max_value=60)),
        st.tuples(
            st.just("take_all"),
            st.dictionaries(st.sampled_from(KEYS), st.integers(min_value=0, max_value=60), max_size=3),
        ),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(limits=st.fixed_dictionaries(dict.fromkeys(KEYS, rates)), steps=steps, max_keys=st.integers(1, 4))
def test_never_more_than_the_burst_plus_the_rate_over_time(
    limits: dict[str, RateLimit], steps: list[tuple], max_keys: int
) -> None:
    clock = FakeClock(0.0)
    limiter = RateLimiter(clock, max_keys=max_keys)
    granted = dict.fromkeys(KEYS, 0)
    for step in steps:
        if step[0] == "advance":
            clock.advance(step[1])
            continue
        wanted = {step[1]: step[2]} if step[0] == "take" else step[1]
        if step[0] == "take":
            answer = limiter.take(step[1], step[2], limits[step[1]])
        else:
            answer = limiter.take_all({key: (amount, limits[key]) for key, amount in wanted.items()})
        if answer is None:
            for key, amount in wanted.items():
                granted[key] += amount
        else:
            assert answer > 0
        for key in KEYS:
            # Granted amounts are whole events: the allowance only absorbs float rounding, never an event.
            allowance = limits[key].burst + float(limits[key].events_per_second) * clock.now
            assert granted[key] <= allowance + 1e-6, (key, granted[key], allowance)


@settings(max_examples=300, deadline=None)
@given(
    limit=rates,
    first=st.integers(min_value=0, max_value=50),
    idle=st.floats(min_value=0, max_value=5, allow_nan=False),
    second=st.integers(min_value=1, max_value=50),
)
def test_the_wait_returned_is_enough(limit: RateLimit, first: int, idle: float, second: int) -> None:
    clock = FakeClock(0.0)
    limiter = RateLimiter(clock)
    limiter.take("acme", first, limit)
    clock.advance(idle)
    wait = limiter.take("acme", second, limit)
    if wait is None or second > limit.burst:
        return
    clock.advance(wait)
    assert limiter.take("acme", second, limit) is None
