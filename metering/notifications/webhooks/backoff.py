"""When a failed webhook delivery is tried again: exponential backoff with full jitter, for a fixed window.

After the n-th failed attempt the next waits a random time between 0 and min(cap, first * 2^(n-1)): the
receivers that come back after an outage are not met by every sender at once. Attempts go on until the window
(26 hours from the delivery's start, so a receiver down for a whole day still gets everything) has passed;
the last one falls at the window's end, and a delivery that fails then is kept as failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

# 2^30 * 30 s is far past any cap: the exponent stops growing there instead of overflowing.
_MAX_DOUBLINGS = 30


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    first: timedelta = timedelta(seconds=30)
    cap: timedelta = timedelta(hours=2)
    window: timedelta = timedelta(hours=26)

    def ceiling(self, attempts: int) -> timedelta:
        """The longest wait after `attempts` failed attempts."""
        return min(self.cap, self.first * 2 ** min(max(attempts - 1, 0), _MAX_DOUBLINGS))

    def next_attempt(
        self, attempts: int, started: datetime, now: datetime, random: Callable[[], float]
    ) -> datetime | None:
        """When to try again after the `attempts`-th failed attempt at `now`, or None to give up. `random`
        returns a number in [0, 1)."""
        end = started + self.window
        if now >= end:
            return None
        return min(now + self.ceiling(attempts) * random(), end)
