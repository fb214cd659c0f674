"""Running the due webhook deliveries: concurrently, each attempt bounded in time, each run within a budget.

A run reads the pending deliveries that are due and hands them to a small pool of threads: a receiver that
hangs holds one thread for at most the attempt's timeout, never the others. No attempt starts once the run's
budget is spent (what is left waits for the next run), so a run ends within its budget plus one attempt.

Each attempt first claims its delivery (an ETag-guarded write that moves its next attempt past the attempt's
longest duration): dispatchers running at once, in one process or several, do not send the same delivery
together, and a dispatcher that dies mid-attempt leaves it due again soon after. The outcome is then written
under the claim's ETag: acknowledged (the row goes), another attempt scheduled (backoff.py), or given up on
(kept as failed). Runs come from the timer (`deliver_webhooks`) and, without waiting for them, after the
outbox sent something (`kick`).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from metering.core.clock import Clock
from metering.notifications.webhooks.backoff import RetrySchedule
from metering.notifications.webhooks.rows import Delivery, Due, FailureReason, WebhookDeliveries
from metering.notifications.webhooks.sender import Attempt, Result, WebhookSender

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    """What a run did with a due delivery (each a count of the report)."""

    DELIVERED = "delivered"
    RETRYING = "retrying"
    FAILED = "failed"
    LEFT = "left"  # not attempted in this run: the budget was spent, or another dispatcher has it


@dataclass(slots=True)
class DispatchReport:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    left: int = 0
    ids: dict[str, Outcome] = field(default_factory=dict)  # message id -> what this run did with it

    def add(self, other: DispatchReport) -> None:
        for outcome in Outcome:
            setattr(self, outcome.value, getattr(self, outcome.value) + getattr(other, outcome.value))
        self.ids.update(other.ids)


class WebhookDispatcher:
    def __init__(
        self,
        deliveries: WebhookDeliveries,
        sender: WebhookSender,
        clock: Clock,
        *,
        schedule: RetrySchedule | None = None,
        workers: int = 8,
        budget: timedelta = timedelta(seconds=20),
        max_per_run: int = 1000,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.deliveries = deliveries
        self.sender = sender
        self.clock = clock
        self.schedule = schedule or RetrySchedule()
        self.workers = workers
        self.budget = budget
        self.max_per_run = max_per_run
        self.jitter = jitter
        # An attempt's connect, send and answer each have the timeout; the claim outlasts all three.
        self.lease = timedelta(seconds=3 * sender.timeout + 30)
        self._running = threading.Lock()
        self._again = threading.Event()

    def run(self) -> DispatchReport:
        """Attempt every due delivery this run's budget allows. A run already going in this process is left
        to finish (it reads the due deliveries again before it ends)."""
        if not self._running.acquire(blocking=False):
            self._again.set()
            return DispatchReport()
        try:
            report = self._run_once()
            while self._again.is_set():
                self._again.clear()
                report.add(self._run_once())
            return report
        finally:
            self._running.release()

    def kick(self) -> None:
        """Start a run in the background: the caller (the outbox, a redrive) never waits on a receiver."""
        if self._running.locked():
            self._again.set()
            return
        threading.Thread(target=self._background_run, name="webhook dispatch", daemon=True).start()

    def _background_run(self) -> None:
        try:
            self.run()
        except Exception:
            log.exception("webhooks: a background run failed; the timer's next run retries")

    def _run_once(self) -> DispatchReport:
        deadline = time.monotonic() + self.budget.total_seconds()
        due = self.deliveries.due(self.clock(), self.max_per_run)
        report = DispatchReport()
        if not due:
            return report
        with ThreadPoolExecutor(max_workers=min(self.workers, len(due)), thread_name_prefix="webhook") as pool:
            outcomes = list(pool.map(lambda item: self._attempt(item, deadline), due))
        for item, outcome in zip(due, outcomes, strict=True):
            report.ids[item.delivery.id] = outcome
            setattr(report, outcome.value, getattr(report, outcome.value) + 1)
        if report.delivered or report.retrying or report.failed:
            log.info(
                "webhooks: %d delivered, %d to retry, %d given up, %d left for the next run",
                report.delivered,
                report.retrying,
                report.failed,
                report.left,
            )
        return report

    def _attempt(self, due: Due, deadline: float) -> Outcome:
        if time.monotonic() >= deadline:
            return Outcome.LEFT
        delivery = due.delivery
        etag = self.deliveries.claim(due, self.clock() + self.lease)
        if etag is None:
            return Outcome.LEFT
        body = json.dumps(delivery.message, separators=(",", ":"))
        attempt = self.sender.send(delivery.id, body)
        now = self.clock()
        if attempt.result is Result.DELIVERED:
            self.deliveries.delivered(delivery)
            return Outcome.DELIVERED
        tried = _tried(delivery, attempt, now)
        if attempt.result is Result.GONE:
            return self._give_up(tried, FailureReason.GONE, etag)
        following = self.schedule.next_attempt(tried.attempts, delivery.created, now, self.jitter)
        if following is None:
            return self._give_up(tried, FailureReason.EXPIRED, etag)
        self.deliveries.retry_later(tried.model_copy(update={"next_attempt": following}), etag)
        log.warning(
            "webhooks: %s attempt %d failed (%s); next at %s",
            delivery.id,
            tried.attempts,
            attempt.error,
            following.isoformat(),
        )
        return Outcome.RETRYING

    def _give_up(self, tried: Delivery, reason: FailureReason, etag: str) -> Outcome:
        self.deliveries.give_up(tried.model_copy(update={"reason": reason}), etag)
        log.error(
            "webhooks: %s given up after %d attempts (%s: %s); kept as failed for an operator to redrive "
            "(alert on this)",
            tried.id,
            tried.attempts,
            reason.value,
            tried.last_error,
        )
        return Outcome.FAILED


def _tried(delivery: Delivery, attempt: Attempt, now: datetime) -> Delivery:
    return delivery.model_copy(
        update={
            "attempts": delivery.attempts + 1,
            "last_attempt": now,
            "last_status": attempt.status,
            "last_error": attempt.error,
        }
    )
