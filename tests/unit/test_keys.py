"""Store keys are data: rows written by earlier versions must be found by this one. These are their formats."""

from __future__ import annotations

from datetime import UTC, datetime

from metering.core.periods import CalendarMonthUtc
from metering.ledger import keys

PERIOD = CalendarMonthUtc().period_at("acme", datetime(2026, 11, 24, tzinfo=UTC))


def test_the_keys_of_one_event_share_its_digest():
    digest = keys.event_digest("acme", "e:evt-1")
    assert digest == keys.digest("acme\ne:evt-1")
    assert len(digest) == 32
    assert keys.marker_key("acme", "e:evt-1") == "m|" + digest
    assert keys.cancel_key("acme", "e:evt-1") == "c|" + digest
    assert keys.late_key("acme", "e:evt-1") == digest
    assert keys.conflict_key("acme", "e:evt-1", "f" * 32) == f"{digest}|{'f' * 32}"
    assert keys.conflict_payload(keys.conflict_key("acme", "e:evt-1", "f" * 32)) == "f" * 32


def test_partition_day_unique_and_state_keys():
    assert keys.partition_key("acme", PERIOD) == "acme|2026-11-01|0"
    assert keys.day_row_key("2026-11-24") == "d|2026-11-24"
    assert keys.unique_key("users.active", "ann") == "u|users.active|" + keys.digest("ann")
    assert keys.STATE_ROW == "s"


def test_ranges_hold_exactly_their_kind_of_row():
    marker, unique = keys.marker_key("acme", "k:x"), keys.unique_key("users.active", "ann")
    assert keys.MARKERS.holds(marker)
    assert not keys.MARKERS.holds(unique)
    assert keys.UNIQUES.holds(unique)
    assert not keys.UNIQUES.holds(keys.STATE_ROW)
    november = keys.days("2026-11-01", "2026-12-01")
    assert november.holds(keys.day_row_key("2026-11-30"))
    assert not november.holds(keys.day_row_key("2026-12-01"))
    assert keys.days(None, None).holds(keys.day_row_key("2026-11-24"))
