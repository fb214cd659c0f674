"""Every key of the usage, conflicts and late-events tables, and the ranges that scan them: the one place that
builds or takes apart a key.

A usage partition is one tenant, billing period and shard, `<tenant>|<period key>|<shard>`; a period has
N shards (0 to N-1, N fixed per period: core/shards.py), and an event's dedupe key decides its shard (`shard_of`;
which shard applies it is ledger/shards.py's rule). Inside a partition:

    s                     the period state (rows.StateRow)
    d|<day>               one tenant-local day's block (rows.DayBlock)
    m|<digest>            the dedupe marker of one event, created once, never updated (rows.Marker); in the
                          event's key shard, a claim when the event is applied in another shard (rows.Marker)
    u|<meter>|<digest>    a distinct value of a unique_count meter and the days it was met on (rows.UniqueRow)
    c|<digest>            the cancel of the event whose marker has the same digest
    r|<meter>|<digest>    a resource of a time_weighted meter: its opening level, its last point, the UTC days
                          it has points on (rows.ResourceRow)
    p|<meter>|<digest>|<UTC day>  that resource's points of one UTC day, sorted (rows.PointsRow)
    w|<meter>|<day>       a time_weighted meter's history buckets of one tenant-local day (its hours in it)

The conflicts table keeps a second payload under a counted dedupe key at `<digest>|<payload hash>` in the
tenant's partition, the late-events table a late event at `<digest>`. The digest is a pure function of the tenant
and the dedupe key, so a redelivered event always meets its own marker, conflict and late-event rows. User
strings never go into keys raw: keys forbid `/ \\ # ?` and control characters, and tenant ids allow none of them.
"""

from __future__ import annotations

from hashlib import blake2b
from typing import NamedTuple

from metering.core.periods import BillingPeriod

STATE_ROW = "s"
# The shard of a period with one shard: every tenant's, unless given more.
SHARD = 0

_MARKER = "m|"
_DAY = "d|"
_UNIQUE = "u|"
_CANCEL = "c|"
_RESOURCE = "r|"
_POINTS = "p|"
_LEVEL_BUCKETS = "w|"


class KeyRange(NamedTuple):
    """Keys with start <= key < stop, as `RowTable.range(partition, *key_range)` scans them."""

    start: str
    stop: str

    def holds(self, key: str) -> bool:
        return self.start <= key < self.stop


MARKERS = KeyRange(_MARKER, _MARKER + "~")
UNIQUES = KeyRange(_UNIQUE, _UNIQUE + "~")
# Every row of a partition of a table keyed by text that sorts below "~" (tenants' late events, statements).
EVERYTHING = KeyRange("", "~")


def digest(text: str) -> str:
    """128-bit hex digest: what stands for user strings in keys."""
    return blake2b(text.encode(), digest_size=16).hexdigest()


def partition_key(tenant_id: str, period: BillingPeriod, shard: int = SHARD) -> str:
    # Tenant ids are restricted to A-Z a-z 0-9 . _ : - , all legal in a PartitionKey.
    return f"{tenant_id}|{period.key}|{shard}"


def partition_keys(tenant_id: str, period: BillingPeriod, shards: int) -> list[str]:
    """Every store partition of a tenant's period, shard 0 first."""
    return [partition_key(tenant_id, period, shard) for shard in range(shards)]


def shard_of(hex_digest: str, shards: int) -> int:
    """The shard a digest (keys.digest's hex) falls in: its first 32 bits, modulo the period's shard count.
    Ingest and producers give an event's dedupe key digest (`event_digest`) the same function."""
    return int(hex_digest[:8], 16) % shards if shards > 1 else SHARD


def key_shard(tenant_id: str, dedupe_key: str, shards: int) -> int:
    """An event's key shard: where its marker (or its claim) lives, whatever its meter."""
    return shard_of(event_digest(tenant_id, dedupe_key), shards)


def marker_shard(marker: str, shards: int) -> int:
    """The key shard of the event whose marker key this is."""
    return shard_of(marker.removeprefix(_MARKER), shards)


def event_digest(tenant_id: str, dedupe_key: str) -> str:
    """What names one logical event (a tenant and a dedupe key) in the keys of every table."""
    return digest(f"{tenant_id}\n{dedupe_key}")


def marker_key(tenant_id: str, dedupe_key: str) -> str:
    return _MARKER + event_digest(tenant_id, dedupe_key)


def cancel_key(tenant_id: str, dedupe_key: str) -> str:
    return _CANCEL + event_digest(tenant_id, dedupe_key)


def late_key(tenant_id: str, dedupe_key: str) -> str:
    """A late event's row in the tenant's partition of the late-events table."""
    return event_digest(tenant_id, dedupe_key)


def conflict_key(tenant_id: str, dedupe_key: str, payload: str) -> str:
    """A conflicting payload's row in the tenant's partition of the conflicts table: one per payload."""
    return f"{event_digest(tenant_id, dedupe_key)}|{payload}"


def conflict_payload(key: str) -> str:
    """The payload hash a conflict row is keyed by."""
    return key.partition("|")[2]


def day_row_key(day: str) -> str:
    return _DAY + day


def days(first: str | None, after_last: str | None) -> KeyRange:
    """Day rows from `first` to before `after_last` (ISO dates; None: from the first or to the last there is)."""
    return KeyRange(day_row_key(first or ""), day_row_key(after_last or "~"))


def unique_key(metric: str, value: str) -> str:
    return f"{_UNIQUE}{metric}|{digest(value)}"


def resource_key(metric: str, resource: str) -> str:
    return f"{_RESOURCE}{metric}|{digest(resource)}"


def points_key(metric: str, resource: str, utc_day: str) -> str:
    return f"{_POINTS}{metric}|{digest(resource)}|{utc_day}"


def level_buckets_key(metric: str, day: str) -> str:
    return f"{_LEVEL_BUCKETS}{metric}|{day}"


def level_buckets(metric: str) -> KeyRange:
    """Every day's history buckets of a time_weighted meter in one partition."""
    return KeyRange(f"{_LEVEL_BUCKETS}{metric}|", f"{_LEVEL_BUCKETS}{metric}|~")


def resources(metric: str) -> KeyRange:
    """Every resource row of a time_weighted meter in one partition."""
    return KeyRange(f"{_RESOURCE}{metric}|", f"{_RESOURCE}{metric}|~")
