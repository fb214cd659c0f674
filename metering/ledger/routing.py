"""Which hub partition key an event is published under: the tenant, or with several shards `<tenant>|<shard>`.

Event Hubs sends every message of one partition key to one partition, read by one aggregator at a time. A tenant
with one shard keeps its events together under its id, as always; a tenant with N shards gets N keys, one per
shard, each event under the shard that applies it (placement.py: its key shard, or for a distinct value the
value's shard). So its events spread over up to N hub partitions and their aggregators, and each shard's rows are
written by one aggregator only: an event applied away from its key shard leaves there a claim alone, which does
not touch that shard's state row, so no two aggregators contend for one row.

The key is only about spreading the work: where an event is counted is decided by the aggregator from the event
alone, so a producer that uses another key (the tenant, an older shard count, its key shard) loses nothing and
counts nothing twice; it only gives one aggregator more of the tenant, or two aggregators one row.
"""

from __future__ import annotations

from collections.abc import Callable

from metering.core.events import UsageEvent, dedupe_key_of
from metering.core.meters import MeterCatalog
from metering.core.periods import PeriodSchedule
from metering.ledger.keys import key_shard
from metering.ledger.placement import applying_shard


def hub_key(event: UsageEvent, shards: int, catalog: MeterCatalog) -> str:
    """The partition key of an event of a period with `shards` shards: the tenant's own id with one shard (or
    for an event without an id yet, or of a meter the catalog does not know), else `<tenant>|<applying shard>`."""
    tenant = event.tenant_id
    dedupe = dedupe_key_of(event)
    meter = catalog.get(event.metric)
    if shards <= 1 or dedupe is None or meter is None:
        return tenant
    return f"{tenant}|{applying_shard(meter, event, key_shard(tenant, dedupe, shards), shards)}"


def by_shard(schedule: PeriodSchedule, catalog: MeterCatalog) -> Callable[[UsageEvent], str]:
    """Partition keys by the shard count of each event's own period, as the aggregator will count it."""

    def key_of(event: UsageEvent) -> str:
        tenant = event.tenant_id
        shards = schedule.shards(tenant, schedule.period_at(tenant, event.timestamp))
        return tenant if shards == 1 else hub_key(event, shards, catalog)

    return key_of
