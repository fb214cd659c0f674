"""Event Hubs Capture's files: Avro container files of hub messages, and the names of their blobs.

Capture writes one file per hub partition and time window, named after the window's start
(`{Namespace}/{EventHub}/{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}.avro`, the name format
infra/modules/eventhubs.bicep sets): every message in a file was enqueued at or after the instant its name
gives. A file's records follow Capture's schema; the partition is known from the name only.

Capture writes `EnqueuedTimeUtc` as US-style text with whole seconds ("12/2/2021 2:58:24 PM"). Where the
record's system properties also carry the AMQP annotation `x-opt-enqueued-time` (milliseconds since the epoch)
that finer instant is used; the dev host writes both.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro

# Capture's record schema, as `avro-tools getschema` prints it for a Capture file.
SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "EventData",
    "namespace": "Microsoft.ServiceBus.Messaging",
    "fields": [
        {"name": "SequenceNumber", "type": "long"},
        {"name": "Offset", "type": "string"},
        {"name": "EnqueuedTimeUtc", "type": "string"},
        {"name": "SystemProperties", "type": {"type": "map", "values": ["long", "double", "string", "bytes"]}},
        {"name": "Properties", "type": {"type": "map", "values": ["long", "double", "string", "bytes"]}},
        {"name": "Body", "type": ["null", "bytes"]},
    ],
}
_PARSED = fastavro.parse_schema(SCHEMA)

ENQUEUED_TIME = "x-opt-enqueued-time"
SEQUENCE_NUMBER = "x-opt-sequence-number"
OFFSET = "x-opt-offset"
PARTITION_KEY = "x-opt-partition-key"

# namespace/hub/partition/YYYY/MM/DD/hh/mm/ss, then anything up to .avro (the dev host adds a unique suffix).
_NAME = re.compile(
    r"^(?P<namespace>[^/]+)/(?P<hub>[^/]+)/(?P<partition>[^/]+)/"
    r"(?P<year>\d{4})/(?P<month>\d{2})/(?P<day>\d{2})/(?P<hour>\d{2})/(?P<minute>\d{2})/(?P<second>\d{2})[^/]*\.avro$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ArchivedMessage:
    """One hub message as the archive keeps it: where it sat in the hub, when it was enqueued, its bytes."""

    partition: str
    sequence: int
    enqueued: datetime
    body: bytes
    partition_key: str | None = None


@dataclass(frozen=True, slots=True)
class BlobPath:
    namespace: str
    hub: str
    partition: str
    instant: datetime  # the start of the file's window: no message in it was enqueued earlier


def window_prefix(namespace: str, hub: str, partition: str, instant: datetime) -> str:
    """The blob name Capture gives the window starting at `instant`, without the `.avro`."""
    utc = instant.astimezone(UTC)
    return f"{namespace}/{hub}/{partition}/{utc:%Y/%m/%d/%H/%M/%S}"


def parse_blob_name(name: str) -> BlobPath | None:
    """The parts of a Capture blob name; None for a blob that is not a Capture file."""
    match = _NAME.match(name)
    if match is None:
        return None
    parts = {key: int(match[key]) for key in ("year", "month", "day", "hour", "minute", "second")}
    try:
        instant = datetime(tzinfo=UTC, **parts)
    except ValueError:
        return None
    return BlobPath(match["namespace"], match["hub"], match["partition"], instant)


def capture_time_text(instant: datetime) -> str:
    """`EnqueuedTimeUtc` as Capture writes it: month/day/year, 12-hour clock, whole seconds."""
    utc = instant.astimezone(UTC)
    hour = utc.hour % 12 or 12
    return f"{utc.month}/{utc.day}/{utc.year} {hour}:{utc:%M:%S} {'AM' if utc.hour < 12 else 'PM'}"


def encode(messages: Sequence[ArchivedMessage]) -> bytes:
    """A Capture file (Avro object container, deflate) holding `messages` in order."""
    records = []
    for message in messages:
        millis = (message.enqueued.astimezone(UTC) - _EPOCH) // timedelta(milliseconds=1)
        system: dict[str, Any] = {
            SEQUENCE_NUMBER: message.sequence,
            OFFSET: str(message.sequence),
            ENQUEUED_TIME: millis,
        }
        if message.partition_key is not None:
            system[PARTITION_KEY] = message.partition_key
        records.append(
            {
                "SequenceNumber": message.sequence,
                "Offset": str(message.sequence),
                "EnqueuedTimeUtc": capture_time_text(message.enqueued),
                "SystemProperties": system,
                "Properties": {},
                "Body": message.body,
            }
        )
    buffer = io.BytesIO()
    fastavro.writer(buffer, _PARSED, records, codec="deflate")
    return buffer.getvalue()


def decode(data: bytes, partition: str) -> Iterator[ArchivedMessage]:
    """The messages of a Capture file, in the file's order. The reader takes the schema the file carries, so a
    file with extra properties or types in its maps reads the same."""
    for record in fastavro.reader(io.BytesIO(data)):
        assert isinstance(record, dict)
        system = record.get("SystemProperties") or {}
        key = system.get(PARTITION_KEY)
        yield ArchivedMessage(
            partition=partition,
            sequence=int(record["SequenceNumber"]),
            enqueued=enqueued_time(record),
            body=record.get("Body") or b"",
            partition_key=key if isinstance(key, str) else None,
        )


def enqueued_time(record: dict[str, Any]) -> datetime:
    millis = (record.get("SystemProperties") or {}).get(ENQUEUED_TIME)
    if isinstance(millis, int):
        return _EPOCH + timedelta(milliseconds=millis)
    return parse_enqueued_text(str(record["EnqueuedTimeUtc"]))


def parse_enqueued_text(text: str) -> datetime:
    """Capture's text ("12/2/2021 2:58:24 PM"), or ISO 8601 as other Avro writers of hub data use."""
    try:
        return datetime.strptime(text, "%m/%d/%Y %I:%M:%S %p").replace(tzinfo=UTC)
    except ValueError:
        parsed = datetime.fromisoformat(text)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
