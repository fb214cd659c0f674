"""Ingest rate limits: a token bucket per key (a tenant), held in this process.

A bucket holds at most `burst` tokens and gains `events_per_second` tokens a second; an event costs one. A key
seen for the first time, or idle long enough to refill, starts with a full bucket.

The arithmetic is float, on purpose: a rate limit protects the pipeline from a flood, it is approximate by
nature (clocks, instances) and never touches a count that ends up on an invoice. Quantities stay Decimal.

The limit is per instance: each Functions instance keeps its own buckets, so N instances admit up to N times a
plan's rate between them. Quotas, which are exact, are enforced from the aggregates, not here.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from metering.core import decimals

# Buckets idle long enough to be full again are indistinguishable from new ones, so dropping them changes no
# decision; they are dropped once this many keys are held, which bounds memory by the keys active recently.
DEFAULT_MAX_KEYS = 10_000

# Float rounding must not make a caller who waited exactly the time it was told fail again; a billionth of
# an event is far below anything a rate limit can mean.
_SLACK = 1e-9


def _events_per_second(value: Any) -> Decimal:
    """A positive decimal string or a number; a float is fine here (a rate is approximate, not a quantity)."""
    if isinstance(value, bool):
        raise ValueError('must be a positive number of events per second, such as 100 or "0.5"')
    if isinstance(value, str):
        number = decimals.from_str(value)
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        number = Decimal(repr(value))
    elif isinstance(value, Decimal):
        number = value
    else:
        raise ValueError('must be a positive number of events per second, such as 100 or "0.5"')
    decimals.check_bounds(number)
    if number <= 0:
        raise ValueError("must be greater than zero")
    return number


class RateLimit(BaseModel):
    """At most `burst` events at once, and `events_per_second` on average over time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    events_per_second: Annotated[Decimal, BeforeValidator(_events_per_second)]
    burst: Annotated[int, Field(strict=True, ge=1)]

    @cached_property
    def per_second(self) -> float:
        return float(self.events_per_second)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float
    per_second: float
    burst: int

    def refill(self, now: float, rate: RateLimit) -> None:
        """Bring the bucket to `now`, then under `rate`: time that passed refilled at the rate of then, and a
        tenant whose plan changed keeps at most the new burst."""
        elapsed = max(now - self.updated, 0.0)
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.per_second, float(rate.burst))
        self.updated = now
        self.per_second = rate.per_second
        self.burst = rate.burst

    def wait_for(self, amount: int) -> float | None:
        """None if `amount` tokens are there now, else the seconds until they would be."""
        if amount > self.burst:
            # Never possible: the time a whole bucket takes to refill, which is never zero, so a caller that
            # passes it on as Retry-After does not invite an immediate retry. Better still, the caller refuses
            # the request as larger than the burst and asks the client to split it.
            return self.burst / self.per_second
        if self.tokens + _SLACK >= amount:
            return None
        return (amount - self.tokens) / self.per_second

    def is_full_at(self, now: float) -> bool:
        return self.tokens + max(now - self.updated, 0.0) * self.per_second >= self.burst


class RateLimiter:
    """Token buckets by key. Thread-safe: the Python worker may run invocations on several threads."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._clock = clock
        self._max_keys = max_keys
        # Pruning scans every bucket; when most are busy it frees little, so the next scan waits until the
        # dict has grown again, which keeps the cost per take constant on average.
        self._prune_at = max_keys
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)

    def take(self, key: str, amount: int, rate: RateLimit) -> float | None:
        """Take `amount` tokens for `key` and return None, or take nothing and return the seconds until
        `amount` would be available (round up to whole seconds for a Retry-After). An amount above the
        burst can never be taken: the answer is then the time to refill a whole bucket."""
        return self.take_all({key: (amount, rate)})

    def take_all(self, requests: Mapping[str, tuple[int, RateLimit]]) -> float | None:
        """All or nothing over several keys: a request carrying events for several tenants is refused whole
        (nothing taken from anyone) if any of them is over its rate. Returns the seconds until every key
        would have its amount, or None once taken."""
        for key, (amount, _) in requests.items():
            if amount < 0:
                raise ValueError(f"amount for {key!r} must not be negative, not {amount}")
        with self._lock:
            now = self._clock()
            buckets = [(self._bucket(key, rate, now), amount) for key, (amount, rate) in requests.items()]
            waits = [wait for bucket, amount in buckets if (wait := bucket.wait_for(amount)) is not None]
            if not waits:
                for bucket, amount in buckets:
                    bucket.tokens -= amount
            self._prune(now)
            return max(waits) if waits else None

    def give_back(self, requests: Mapping[str, tuple[int, RateLimit]]) -> None:
        """Return what `take_all` took for a request that was not accepted after all (the transport refused
        it): the client resends it, and that retry must not find the allowance spent on nothing."""
        with self._lock:
            now = self._clock()
            for key, (amount, rate) in requests.items():
                bucket = self._bucket(key, rate, now)
                bucket.tokens = min(float(bucket.burst), bucket.tokens + amount)

    def _bucket(self, key: str, rate: RateLimit, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(tokens=float(rate.burst), updated=now, per_second=rate.per_second, burst=rate.burst)
            self._buckets[key] = bucket
        else:
            bucket.refill(now, rate)
        return bucket

    def _prune(self, now: float) -> None:
        if len(self._buckets) <= self._prune_at:
            return
        for key in [key for key, bucket in self._buckets.items() if bucket.is_full_at(now)]:
            del self._buckets[key]
        self._prune_at = max(self._max_keys, 2 * len(self._buckets))
