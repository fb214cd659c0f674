"""Event Hubs Capture's file format and blob names, as the dev host writes them and as Capture does."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import fastavro
import pytest

from metering.archive.capture import (
    SCHEMA,
    ArchivedMessage,
    capture_time_text,
    decode,
    encode,
    parse_blob_name,
    parse_enqueued_text,
    window_prefix,
)

AT = datetime(2026, 11, 24, 15, 4, 5, 123456, tzinfo=UTC)


def test_messages_round_trip_through_a_capture_file():
    messages = [
        ArchivedMessage("0", 41, AT, b'[{"tenant_id":"acme"}]', "acme"),
        ArchivedMessage("0", 42, AT + timedelta(milliseconds=7), "é 🚀".encode(), None),
        ArchivedMessage("0", 43, AT, b""),
    ]
    data = encode(messages)
    decoded = list(decode(data, "0"))
    # The enqueued time keeps milliseconds (the AMQP annotation's precision), the rest is exact.
    millis = [m.enqueued.replace(microsecond=m.enqueued.microsecond // 1000 * 1000) for m in messages]
    assert decoded == [
        ArchivedMessage(m.partition, m.sequence, at, m.body, m.partition_key)
        for m, at in zip(messages, millis, strict=True)
    ]


def test_a_file_carries_captures_own_schema_and_fields():
    data = encode([ArchivedMessage("3", 7, AT, b"{}", "acme")])
    reader = fastavro.reader(io.BytesIO(data))
    assert reader.writer_schema is not None
    assert fastavro.parse_schema(SCHEMA)["fields"] == reader.writer_schema["fields"]
    (record,) = list(reader)
    assert record["SequenceNumber"] == 7
    assert record["Offset"] == "7"
    assert record["EnqueuedTimeUtc"] == "11/24/2026 3:04:05 PM"
    assert record["Body"] == b"{}"
    assert record["SystemProperties"]["x-opt-partition-key"] == "acme"


def test_a_capture_file_without_the_annotation_reads_its_text_time():
    # As Capture writes it: whole seconds as US-style text, system properties without the enqueued time,
    # and an extra "null" in the maps' value types (some Capture files declare it).
    schema = {**SCHEMA, "fields": [dict(f) for f in SCHEMA["fields"]]}
    schema["fields"][4]["type"] = {"type": "map", "values": ["long", "double", "string", "bytes", "null"]}
    buffer = io.BytesIO()
    record = {
        "SequenceNumber": 2400,
        "Offset": "4294967296",
        "EnqueuedTimeUtc": "12/2/2021 2:58:24 PM",
        "SystemProperties": {"x-opt-partition-key": "acme"},
        "Properties": {"content-type": None},
        "Body": b'{"tenant_id":"acme"}',
    }
    fastavro.writer(buffer, fastavro.parse_schema(schema), [record])
    (message,) = decode(buffer.getvalue(), "5")
    assert message == ArchivedMessage(
        "5", 2400, datetime(2021, 12, 2, 14, 58, 24, tzinfo=UTC), b'{"tenant_id":"acme"}', "acme"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1/5/2026 12:00:01 AM", datetime(2026, 1, 5, 0, 0, 1, tzinfo=UTC)),
        ("1/5/2026 12:00:01 PM", datetime(2026, 1, 5, 12, 0, 1, tzinfo=UTC)),
        ("12/31/2026 11:59:59 PM", datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("2018-06-11T00:00:08.2250000Z", datetime(2018, 6, 11, 0, 0, 8, 225000, tzinfo=UTC)),
    ],
)
def test_enqueued_times_read_as_capture_and_iso_writers_write_them(text, expected):
    assert parse_enqueued_text(text) == expected
    if "T" not in text:
        assert capture_time_text(expected) == text


def test_blob_names_follow_the_capture_name_format():
    prefix = window_prefix("evhns-metering", "usage", "3", AT)
    assert prefix == "evhns-metering/usage/3/2026/11/24/15/04/05"
    for name in (f"{prefix}.avro", f"{prefix}-0a1b2c.avro"):
        path = parse_blob_name(name)
        assert path is not None
        assert (path.namespace, path.hub, path.partition) == ("evhns-metering", "usage", "3")
        assert path.instant == AT.replace(microsecond=0)
    assert parse_blob_name(f"{prefix}.json") is None
    assert parse_blob_name("evhns/usage/3/2026/13/24/15/04/05.avro") is None  # no 13th month
    assert parse_blob_name("other/layout.avro") is None
