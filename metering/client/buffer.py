"""The buffered writers' bookkeeping, with no threads or event loops in it: what is buffered, which batch goes
next and when, and what a failed request means for the events it carried.

Events leave the buffer only from its head, and only once the service accepted them or refused them for good, so
a retry always resends the oldest events first, in the order they were recorded: nothing is reordered or lost
while it is buffered. The writers (writer.py) hold a lock around every call.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from metering.api.contract import MAX_BODY_BYTES, MAX_EVENTS
from metering.client.errors import Forbidden, MeteringError, NotFound, ProblemError, Unauthorized, ValidationFailed
from metering.core.events import UsageEvent


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: the n-th retry waits between half and all of `initial * 2**n`, at most
    `maximum`, and never less than the service's `Retry-After`."""

    initial: float = 0.5
    maximum: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        ceiling = min(self.maximum, self.initial * 2 ** min(attempt, 32))
        # Jitter spreads the retries of many writers that failed together, so they do not return together.
        jittered = ceiling / 2 + random.uniform(0, ceiling / 2)
        return max(jittered, retry_after or 0.0)


@dataclass(frozen=True, slots=True)
class WriterStats:
    recorded: int = 0
    """events recorded into the buffer"""
    sent: int = 0
    """events the service accepted (202)"""
    rejected: int = 0
    """events the service refused (a 4xx about the events, reported to `on_rejected`) and dropped"""
    buffered: int = 0
    """events waiting in the buffer, including those of a request in flight"""
    requests: int = 0
    """requests sent, successful or not"""
    retries: int = 0
    """failed requests whose events stayed in the buffer to be sent again"""
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class RejectedEvent:
    """An event the service refused for good, and why (`reasons`: "field: rule" for a 422)."""

    event: UsageEvent
    status: int
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CloseReport:
    """What close() achieved. `unsent` were not confirmed by the deadline (or were in flight at it); they keep
    their ids, so sending them again later, e.g. with `client.record_batch(report.unsent)`, never counts twice."""

    sent: int
    rejected: int
    unsent: list[UsageEvent]

    @property
    def complete(self) -> bool:
        return not self.unsent


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    event: UsageEvent
    body: bytes
    recorded_at: float


class Outcome(Enum):
    RETRY = "retry"  # transient: back off, then the same events again
    HOLD = "hold"  # the writer's key or URL is wrong: keep the events, retry at the longest backoff
    REJECT_SOME = "reject_some"  # 422: drop the events it names, send the rest at once
    REJECT_ALL = "reject_all"  # another 4xx about the request: drop its events


def outcome_of(error: MeteringError) -> Outcome:
    if error.transient:
        return Outcome.RETRY
    if isinstance(error, Unauthorized | Forbidden | NotFound):
        # Not about the events: dropping them would give usage away over a configuration mistake.
        return Outcome.HOLD
    if isinstance(error, ValidationFailed) and error.errors:
        return Outcome.REJECT_SOME
    if isinstance(error, ProblemError):
        return Outcome.REJECT_ALL
    return Outcome.RETRY


@dataclass
class Buffer:
    batch_size: int
    flush_interval: float
    max_buffer: int
    backoff: Backoff = field(default_factory=Backoff)
    entries: deque[Entry] = field(default_factory=deque)
    closing: bool = False
    next_seq: int = 0
    flush_through: int = -1
    retry_at: float | None = None
    attempt: int = 0
    sent: int = 0
    rejected: int = 0
    requests: int = 0
    retries: int = 0
    last_error: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_EVENTS:
            raise ValueError(f"batch_size must be 1 to {MAX_EVENTS} (events per request)")
        if self.max_buffer < self.batch_size:
            raise ValueError("max_buffer must hold at least one batch")
        if self.flush_interval <= 0:
            raise ValueError("flush_interval must be positive")

    @property
    def has_room(self) -> bool:
        return len(self.entries) < self.max_buffer

    @property
    def resolved_through(self) -> int:
        """Every event recorded up to this sequence number was accepted or refused."""
        return self.entries[0].seq - 1 if self.entries else self.next_seq - 1

    def add(self, event: UsageEvent, body: bytes, now: float) -> bool:
        """Buffer an event; True when the sender should wake (a first event, or a full batch)."""
        self.entries.append(Entry(self.next_seq, event, body, now))
        self.next_seq += 1
        return len(self.entries) == 1 or len(self.entries) == self.batch_size

    def request_flush(self) -> int:
        """Send what is recorded so far without waiting for the interval; returns the sequence to wait for."""
        self.flush_through = self.next_seq - 1
        return self.flush_through

    def flushed(self, target: int) -> bool:
        return self.resolved_through >= target

    def due_in(self, now: float) -> float | None:
        """Seconds until the next batch should go (0: now); None when nothing is buffered."""
        if not self.entries:
            return None
        if self.retry_at is not None:
            return max(self.retry_at - now, 0.0)
        head = self.entries[0]
        if len(self.entries) >= self.batch_size or self.closing or head.seq <= self.flush_through:
            return 0.0
        return max(head.recorded_at + self.flush_interval - now, 0.0)

    def take(self) -> list[Entry]:
        """The oldest events that fit one request (batch_size, 1 MiB); they stay buffered until resolved."""
        batch: list[Entry] = []
        size = 2
        for entry in self.entries:
            extra = len(entry.body) + (1 if batch else 0)
            if len(batch) == self.batch_size or (batch and size + extra > MAX_BODY_BYTES):
                break
            batch.append(entry)
            size += extra
        self.requests += 1
        return batch

    def accepted(self, batch: list[Entry]) -> None:
        self._drop_head(batch, keep=())
        self.sent += len(batch)
        self.attempt = 0
        self.retry_at = None

    def failed(self, batch: list[Entry], error: MeteringError, now: float) -> tuple[Outcome, list[RejectedEvent]]:
        """Apply a failed request to the buffer; returns what happened and the events dropped for good."""
        self.last_error = str(error)
        outcome = outcome_of(error)
        retry_after = error.retry_after if isinstance(error, ProblemError) else None
        if outcome is Outcome.RETRY:
            self.retries += 1
            self.retry_at = now + self.backoff.delay(self.attempt, retry_after)
            self.attempt += 1
            return outcome, []
        if outcome is Outcome.HOLD:
            self.retries += 1
            self.retry_at = now + max(self.backoff.maximum, retry_after or 0.0)
            return outcome, []
        assert isinstance(error, ProblemError)
        reasons: dict[int, list[str]] = {}
        if outcome is Outcome.REJECT_SOME:
            for problem in error.errors:
                if 0 <= problem.index < len(batch):
                    reasons.setdefault(problem.index, []).append(f"{problem.field}: {problem.message}")
        if not reasons:  # nothing names an event of this request: the request as a whole was refused
            outcome = Outcome.REJECT_ALL
            reasons = {index: [error.detail or error.title] for index in range(len(batch))}
        keep = [entry for index, entry in enumerate(batch) if index not in reasons]
        self._drop_head(batch, keep)
        self.rejected += len(reasons)
        # A 422 forwarded nothing: the valid rest goes again at once, ahead of anything recorded since.
        self.retry_at = None
        return outcome, [RejectedEvent(batch[i].event, error.status, tuple(reasons[i])) for i in sorted(reasons)]

    def _drop_head(self, batch: list[Entry], keep: list[Entry] | tuple[()]) -> None:
        for entry in batch:
            head = self.entries.popleft()
            assert head is entry, "only the sender removes events, and only from the head"
        self.entries.extendleft(reversed(keep))

    def stats(self) -> WriterStats:
        return WriterStats(
            recorded=self.next_seq,
            sent=self.sent,
            rejected=self.rejected,
            buffered=len(self.entries),
            requests=self.requests,
            retries=self.retries,
            last_error=self.last_error,
        )
