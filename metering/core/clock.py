"""Time as the pipeline reads and writes it: an injectable clock, and the fixed-width texts of instants.

Every text here has a fixed width, so the order of the texts is the order of the instants: store keys that
start with one (period index, journal) scan in time order, and `latest` compares stored timestamps as text.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_timestamp(value: datetime) -> str:
    """Fixed-width UTC text (microseconds always written): sorts as the instants do, which `latest` relies on."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")[:26] + "Z"


def hour_key(instant: datetime) -> str:
    """The UTC hour an instant falls in, e.g. `2026-11-24T09`: hourly buckets are UTC hours whatever the tenant's
    time zone. (isoformat is C code, strftime is not: this runs per event.)"""
    utc = instant if instant.tzinfo is UTC else instant.astimezone(UTC)
    return utc.isoformat(timespec="hours")[:13]


def second_key(instant: datetime) -> str:
    """An instant to the second, in UTC, for keys that order periods by their end or purge time."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
