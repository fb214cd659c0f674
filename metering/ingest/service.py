"""Taking a request's events in: validate them all, give them ids, take them from their tenants' ingest rates and
hand them to the transport. All of it or nothing: an event that breaks a rule, a tenant over its rate or a
transport that refuses leaves nothing forwarded and no allowance spent.

The steps are separate calls (`prepare`, `take`, `publish`) because ids are fixed before anything can fail: the
caller gives them back with every failure after `prepare`, so a retry of events sent without ids resends them
with these and is counted once.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from metering.core.events import FieldError, UsageEvent, validate_events
from metering.core.meters import MeterCatalog
from metering.quotas.ratelimit import RateLimit, RateLimiter
from metering.transport import Message, Publisher, pack, tenant_key

Taken = Mapping[str, tuple[int, RateLimit]]


class InvalidEvents(ValueError):
    """At least one event breaks a rule; `errors` name each by its index, `count` is how many were sent."""

    def __init__(self, errors: list[FieldError], count: int) -> None:
        super().__init__(f"{len({e.index for e in errors})} of {count} events are invalid")
        self.errors = errors
        self.count = count


class OverBurst(ValueError):
    """More events of one tenant than its plan's burst: no wait would ever let the request through."""

    def __init__(self, tenant_id: str, count: int, burst: int) -> None:
        super().__init__(f"{count} events for tenant {tenant_id} exceed the burst of its plan's ingest rate ({burst})")
        self.tenant_id = tenant_id
        self.count = count
        self.burst = burst


class RateLimited(RuntimeError):
    """A tenant of the request is over its ingest rate; `seconds` until the whole request would pass."""

    def __init__(self, seconds: int) -> None:
        super().__init__(f"retry after {seconds} s")
        self.seconds = seconds


class IngestService:
    def __init__(
        self,
        catalog: MeterCatalog,
        publisher: Publisher,
        *,
        max_message_bytes: int,
        max_age: timedelta,
        max_future: timedelta,
        clock: Callable[[], datetime],
        rate_of: Callable[[str], RateLimit | None] | None = None,
        limiter: RateLimiter | None = None,
        key_of: Callable[[UsageEvent], str] = tenant_key,
    ) -> None:
        # The hub partition key of each event (ledger/routing.py): the tenant, or its shard for a sharded one.
        self.key_of = key_of
        self.rate_of = rate_of
        self.limiter = limiter or RateLimiter()
        self.catalog = catalog
        self.publisher = publisher
        self.max_message_bytes = max_message_bytes
        self.max_age = max_age
        self.max_future = max_future
        self.clock = clock

    def prepare(self, items: Sequence[Any], *, cloud: bool = False) -> list[UsageEvent]:
        """The events validated, each with an id (a new one where it has none); raises InvalidEvents."""
        events, errors = validate_events(
            items, self.catalog, now=self.clock(), max_age=self.max_age, max_future=self.max_future, cloud=cloud
        )
        if errors:
            raise InvalidEvents(errors, len(items))
        return [e if e.event_id is not None else e.model_copy(update={"event_id": uuid.uuid4().hex}) for e in events]

    def take(self, events: Sequence[UsageEvent]) -> Taken:
        """Take the events from their tenants' allowances, all or none (raises OverBurst or RateLimited, and then
        nothing is taken from any tenant). The buckets live in this instance's memory."""
        if self.rate_of is None:
            return {}
        wanted = {}
        for tenant, count in Counter(event.tenant_id for event in events).items():
            rate = self.rate_of(tenant)
            if rate is not None:
                wanted[tenant] = (count, rate)
        for tenant, (count, rate) in wanted.items():
            if count > rate.burst:
                raise OverBurst(tenant, count, rate.burst)
        wait = self.limiter.take_all(wanted) if wanted else None
        if wait is not None:
            raise RateLimited(max(1, math.ceil(wait)))
        return wanted

    def publish(self, events: Sequence[UsageEvent], taken: Taken) -> None:
        """Hand the events to the transport; if it does not accept them all, what `take` took is given back (the
        client resends them, and that retry must not find the allowance spent on nothing) and the error raised."""
        try:
            self.publisher.publish(self.messages(events))
        except BaseException:
            self.limiter.give_back(taken)
            raise

    def messages(self, events: Sequence[UsageEvent]) -> list[Message]:
        return pack(events, self.max_message_bytes, self.key_of)
