"""Running a function app's timer triggers on their NCRONTAB schedules (six fields, seconds first)."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from azure.functions.timer import TimerRequest
from croniter import croniter

from metering.devhost.http import trigger_of

log = logging.getLogger(__name__)


def resolve(expression: str) -> str:
    """`%NAME%` is an app setting, as the Functions host reads binding expressions."""

    def setting(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise KeyError(f"the app setting {name} (used by a timer schedule) is not set")
        return os.environ[name]

    return re.sub(r"%([^%]+)%", setting, expression)


class Timer:
    def __init__(self, name: str, schedule: str, handler: Callable[..., Any], arg_name: str) -> None:
        self.name = name
        self.schedule = resolve(schedule)
        if not croniter.is_valid(self.schedule, second_at_beginning=True):
            raise ValueError(f"timer {name}: {self.schedule!r} is not a valid NCRONTAB expression")
        self.handler = handler
        self.arg_name = arg_name
        self.runs = 0

    def next_after(self, instant: datetime) -> datetime:
        return croniter(self.schedule, instant, second_at_beginning=True).get_next(datetime)

    def run(self, stop: threading.Event) -> None:
        due = self.next_after(datetime.now(UTC))
        while not stop.wait(max((due - datetime.now(UTC)).total_seconds(), 0)):
            late = (datetime.now(UTC) - due).total_seconds() > 1
            try:
                self.handler(**{self.arg_name: TimerRequest(past_due=late)})
            except Exception:
                log.exception("timer %s failed", self.name)
            self.runs += 1
            due = self.next_after(datetime.now(UTC))


def timers(functions: list[Any]) -> list[Timer]:
    found = []
    for function in functions:
        data = trigger_of(function)
        if data["type"] == "timerTrigger":
            found.append(
                Timer(function.get_function_name(), data["schedule"], function.get_user_function(), data["name"])
            )
    return found
