"""Hub positions: where an event sat in the hub, the names of hub partitions, and what a batch covers (pure).

Event Hubs numbers a partition's messages in order, so a position (partition, sequence number) names one
delivery of one message, and a batch whose sequence numbers have no gap holds every message between its first
and last. Positions are what the ledger records as applied and what the closer waits for.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

# Before any period: what a hub reports applied when nothing of it is known to be applied.
NOTHING_APPLIED = datetime(2000, 1, 1, tzinfo=UTC)

# Table keys may not hold these (nor control characters); a namespace, hub or partition id never should.
_NOT_IN_KEYS = str.maketrans(dict.fromkeys("/\\#?", "_"))


def hub_partition(namespace: str, hub: str, partition_id: str) -> str:
    """The name of a hub partition wherever its positions are kept (applied ranges, hub progress, dead-letter
    keys, derived event ids): `<namespace>|<hub>|<partition id>`. A partition id alone repeats across hubs, and a
    hub in another namespace (a failover, a redeployment) numbers its sequences from 0 again: under the bare id,
    its new events would look applied. The namespace is its name, the first label of its host name (unique in
    its cloud, and the `{Namespace}` of Capture's file names, so a rebuild derives the same names); names are
    case-insensitive, so they are lowercased."""
    name = namespace.split(".", 1)[0]
    return "|".join((name.lower(), hub.lower(), partition_id)).translate(_NOT_IN_KEYS)


@dataclass(frozen=True, slots=True)
class Position:
    """Where an event came from in the hub: its partition and the sequence number of its message."""

    partition: str
    sequence: int


@dataclass(frozen=True, slots=True)
class Applied:
    """The newest message of a hub partition whose events are all applied."""

    partition: str
    sequence: int
    enqueued: datetime


def contiguous_ranges(positions: Iterable[Position]) -> dict[str, tuple[int, int]]:
    """The hub ranges a batch holds completely: Event Hubs delivers a partition's messages in sequence, so a
    batch whose sequence numbers have no gap holds every message between its first and last."""
    sequences: dict[str, set[int]] = {}
    for position in positions:
        sequences.setdefault(position.partition, set()).add(position.sequence)
    return {
        partition: (min(seqs), max(seqs))
        for partition, seqs in sequences.items()
        if max(seqs) - min(seqs) + 1 == len(seqs)
    }
