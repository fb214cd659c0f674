"""Which shard of a period applies an event: a rule per meter kind (pure).

A period of N shards is N store partitions (keys.partition_keys). Every event has a *key shard*, a function of its
dedupe key alone (keys.key_shard): its marker lives there, so a dedupe key reused with any other payload, another
meter included, meets the marker of the first and is a conflict, never counted twice. Where the event is *applied*
(its rows changed) is its meter kind's rule, `PLACEMENTS`:

- by key (sum, count, max, min, latest): in the key shard, marker and rows in one commit, as with one shard;
- by resource (time_weighted): in the shard of the resource whose level it sets, the same way (claim included);
- by value (unique_count): in the shard of the value it counts, a function of the meter and the value, so every
  event of one distinct value lands in one shard and a shard's distinct count is of values no other shard has.
  When that shard is not the key shard, the ledger first *claims* the event in the key shard (a marker holding the
  payload hash and the shard it is applied in, created once), then applies it in the value's shard under its own
  marker; a crash between the two is completed by a redelivery, which meets its own claim (ledger.py).

A new kind plugs in with a rule: None for by key, else the text whose hash chooses the applying shard (for a
resource's level, its resource id), and its way of combining shards (shards.ACROSS).
"""

from __future__ import annotations

from collections.abc import Callable

from metering.core.events import UsageEvent, unique_value
from metering.core.meters import Aggregation, Meter
from metering.ledger.keys import digest, shard_of

# The text an event's applying shard is the hash of, by its meter's kind; None: its key shard.
Placement = Callable[[Meter, UsageEvent], str | None]


def by_key(meter: Meter, event: UsageEvent) -> str | None:
    return None


def by_value(meter: Meter, event: UsageEvent) -> str | None:
    """The distinct value a unique_count event counts (plan_batch rejects an event without one before this)."""
    return unique_value(event, meter.field)


def by_resource(meter: Meter, event: UsageEvent) -> str | None:
    """The resource whose level a time_weighted event sets ("" for the tenant as a whole): all its points in one
    shard, so each point meets its neighbours in one partition."""
    return resource_of(event)


def resource_of(event: UsageEvent) -> str:
    return event.resource_id or ""


PLACEMENTS: dict[Aggregation, Placement] = {
    Aggregation.SUM: by_key,
    Aggregation.COUNT: by_key,
    Aggregation.MAX: by_key,
    Aggregation.MIN: by_key,
    Aggregation.LATEST: by_key,
    Aggregation.UNIQUE_COUNT: by_value,
    Aggregation.TIME_WEIGHTED: by_resource,
}


def value_shard(meter: Meter, value: str, shards: int) -> int:
    """The shard that applies every event of `meter` whose placement text is `value`."""
    return shard_of(digest(f"{meter.name}\n{value}"), shards)


def applying_shard(meter: Meter, event: UsageEvent, key_shard: int, shards: int) -> int:
    """Where the event's rows change: its key shard, or its value's shard for a kind placed by value."""
    if shards == 1:
        return key_shard
    value = PLACEMENTS[meter.aggregation](meter, event)
    return key_shard if value is None else value_shard(meter, value, shards)
