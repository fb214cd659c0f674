"""NCRONTAB schedules (seconds first) and the dev host's timer runner."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from metering.devhost.timers import Timer, resolve
from tests.e2e.conftest import eventually


def test_six_field_schedules_are_seconds_first():
    timer = Timer("t", "0 */5 * * * *", lambda timer: None, "timer")
    assert timer.next_after(datetime(2026, 11, 24, 9, 3, 10, tzinfo=UTC)) == datetime(2026, 11, 24, 9, 5, tzinfo=UTC)
    hourly = Timer("t", "30 0 * * * *", lambda timer: None, "timer")
    assert hourly.next_after(datetime(2026, 11, 24, 9, 3, tzinfo=UTC)) == datetime(2026, 11, 24, 10, 0, 30, tzinfo=UTC)


def test_schedules_come_from_app_settings(monkeypatch):
    monkeypatch.setenv("MY_SCHEDULE", "*/10 * * * * *")
    assert resolve("%MY_SCHEDULE%") == "*/10 * * * * *"
    monkeypatch.delenv("MY_SCHEDULE")
    with pytest.raises(KeyError, match="MY_SCHEDULE"):
        resolve("%MY_SCHEDULE%")
    with pytest.raises(ValueError, match="NCRONTAB"):
        Timer("t", "every minute", lambda timer: None, "timer")


def test_a_timer_runs_its_function_on_schedule():
    calls = []
    timer = Timer("t", "* * * * * *", lambda timer: calls.append(timer.past_due), "timer")
    stop = threading.Event()
    thread = threading.Thread(target=timer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        eventually(lambda: len(calls) >= 2, timeout=10)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert calls[0] is False
