"""`BufferedUsageWriter` (threads) and `AsyncBufferedUsageWriter` (asyncio): record usage without waiting for
the network.

`record()` fixes the event's id and timestamp and puts it in a bounded buffer; one sender sends the oldest events
when a batch is full, when the oldest has waited `flush_interval` seconds, or when asked to flush. Transient
failures (no connection, 408, 429, 5xx) are retried with exponential backoff and jitter, honouring
`Retry-After`; events the service refuses (a 422 names them) are dropped, counted in `stats` and reported to
`on_rejected` and the log, and the rest are sent on. Which batch goes next and what a failure means is decided in
buffer.py; this module only adds the waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self

from metering.client.buffer import Backoff, Buffer, CloseReport, Entry, Outcome, RejectedEvent, WriterStats
from metering.client.errors import MeteringError
from metering.client.http import AsyncMeteringClient, MeteringClient
from metering.client.recording import QuantityLike, encode, recorded, to_event
from metering.core.events import UsageEvent

log = logging.getLogger("metering.client")

OnRejected = Callable[[list[RejectedEvent]], None]


class BufferFull(MeteringError):
    """The buffer holds `max_buffer` events (the service is slow or unreachable) and record() may not wait."""


class WriterClosed(MeteringError):
    """record() after close()."""


def _unexpected(error: Exception) -> MeteringError:
    # A bug or an odd answer must not kill the sender and strand the buffer: treat it as transient.
    log.exception("metering writer: unexpected error sending usage; the events stay buffered", exc_info=error)
    wrapped = MeteringError(f"unexpected {type(error).__name__}: {error}")
    wrapped.transient = True
    return wrapped


def _report(on_rejected: OnRejected | None, outcome: Outcome, rejected: list[RejectedEvent], error: Exception) -> None:
    if rejected:
        first = rejected[0]
        log.warning(
            "metering writer: the service refused %d event(s), dropped (first: %s %s: %s)",
            len(rejected),
            first.event.event_id,
            first.status,
            "; ".join(first.reasons),
        )
        if on_rejected is not None:
            try:
                on_rejected(rejected)
            except Exception:
                log.exception("metering writer: on_rejected raised")
    elif outcome is Outcome.HOLD:
        log.error("metering writer: %s; the events stay buffered: check the key and the URL", error)
    else:
        log.warning("metering writer: sending failed (%s); retrying with backoff", error)


class BufferedUsageWriter:
    """Records usage from any number of threads through one sender thread.

    >>> with BufferedUsageWriter(MeteringClient(url, key)) as usage:
    ...     usage.record("acme", "api.requests", 1)
    """

    def __init__(
        self,
        client: MeteringClient,
        batch_size: int = 100,
        flush_interval: float = 5.0,
        max_buffer: int = 10_000,
        *,
        backoff: Backoff | None = None,
        on_rejected: OnRejected | None = None,
    ) -> None:
        self.client = client
        self.on_rejected = on_rejected
        self._buffer = Buffer(batch_size, flush_interval, max_buffer, backoff or Backoff())
        self._cond = threading.Condition()
        self._closed = False
        self._abort = False
        self._sender = threading.Thread(target=self._send_forever, name="metering-writer", daemon=True)
        self._sender.start()

    @property
    def stats(self) -> WriterStats:
        with self._cond:
            return self._buffer.stats()

    def record(
        self,
        tenant_id: str,
        metric: str,
        quantity: QuantityLike,
        *,
        block: bool = True,
        timeout: float | None = None,
        **fields: Any,
    ) -> UsageEvent:
        """Buffer one event (keyword fields as for `MeteringClient.record`) and return it, id and timestamp
        fixed. When the buffer is full, wait for room (at most `timeout` seconds), or with `block=False` raise
        BufferFull at once. Invalid fields raise InvalidEvent here, before anything is buffered."""
        event = recorded(tenant_id, metric, quantity, fields, default_source=self.client.source)
        return self.record_event(event, block=block, timeout=timeout)

    def record_event(
        self, event: UsageEvent | Mapping[str, Any], *, block: bool = True, timeout: float | None = None
    ) -> UsageEvent:
        """Buffer a ready-made event (a model or its fields); an id and a timestamp are added if it has none."""
        event = to_event(event, default_source=self.client.source)
        body = encode(event)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise WriterClosed("the writer is closed")
                if self._buffer.has_room:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if not block or (remaining is not None and remaining <= 0):
                    raise BufferFull(f"{self._buffer.max_buffer} events are waiting to be sent")
                self._cond.wait(remaining)
            if self._buffer.add(event, body, time.monotonic()):
                self._cond.notify_all()
        return event

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything recorded so far now, and wait until the service accepted or refused all of it.
        Returns False if `timeout` seconds passed first (the events stay buffered and are still sent)."""
        with self._cond:
            target = self._buffer.request_flush()
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._buffer.flushed(target), timeout)

    def close(self, timeout: float | None = 30.0) -> CloseReport:
        """Stop taking events, send what is buffered, and stop the sender. Events not confirmed within
        `timeout` seconds (None: wait as long as it takes) are reported in `unsent`, and logged."""
        with self._cond:
            self._closed = True
            self._buffer.closing = True
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: not self._buffer.entries, timeout):
                self._abort = True
                self._cond.notify_all()
        # A request in flight at the deadline ends within the client's timeout; its events are reported unsent.
        self._sender.join(timeout=None if timeout is None else 1.0)
        with self._cond:
            report = CloseReport(self._buffer.sent, self._buffer.rejected, [e.event for e in self._buffer.entries])
        if report.unsent:
            log.error("metering writer: closed with %d event(s) not confirmed as sent", len(report.unsent))
        return report

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _next_batch(self) -> list[Entry] | None:
        with self._cond:
            while not self._abort:
                wait = self._buffer.due_in(time.monotonic())
                if wait is None and self._buffer.closing:
                    return None
                if wait is not None and wait <= 0:
                    return self._buffer.take()
                self._cond.wait(wait)
            return None

    def _send_forever(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self.client.send_encoded([entry.body for entry in batch])
            except Exception as error:  # every failure is classified below, so the sender never dies
                failure = error if isinstance(error, MeteringError) else _unexpected(error)
                with self._cond:
                    outcome, rejected = self._buffer.failed(batch, failure, time.monotonic())
                    self._cond.notify_all()
                _report(self.on_rejected, outcome, rejected, failure)
            else:
                with self._cond:
                    self._buffer.accepted(batch)
                    self._cond.notify_all()


class AsyncBufferedUsageWriter:
    """The same for asyncio: `await writer.record(...)`; the sender is a task on the running loop.

    >>> async with AsyncBufferedUsageWriter(AsyncMeteringClient(url, key)) as usage:
    ...     await usage.record("acme", "api.requests", 1)
    """

    def __init__(
        self,
        client: AsyncMeteringClient,
        batch_size: int = 100,
        flush_interval: float = 5.0,
        max_buffer: int = 10_000,
        *,
        backoff: Backoff | None = None,
        on_rejected: OnRejected | None = None,
    ) -> None:
        self.client = client
        self.on_rejected = on_rejected
        self._buffer = Buffer(batch_size, flush_interval, max_buffer, backoff or Backoff())
        self._cond = asyncio.Condition()
        self._closed = False
        self._sender: asyncio.Task[None] | None = None

    @property
    def stats(self) -> WriterStats:
        return self._buffer.stats()

    async def record(
        self,
        tenant_id: str,
        metric: str,
        quantity: QuantityLike,
        *,
        block: bool = True,
        timeout: float | None = None,
        **fields: Any,
    ) -> UsageEvent:
        event = recorded(tenant_id, metric, quantity, fields, default_source=self.client.source)
        return await self.record_event(event, block=block, timeout=timeout)

    async def record_event(
        self, event: UsageEvent | Mapping[str, Any], *, block: bool = True, timeout: float | None = None
    ) -> UsageEvent:
        event = to_event(event, default_source=self.client.source)
        body = encode(event)
        self._start()
        async with self._cond:
            if self._closed:
                raise WriterClosed("the writer is closed")
            if not self._buffer.has_room:
                if not block:
                    raise BufferFull(f"{self._buffer.max_buffer} events are waiting to be sent")
                try:
                    await asyncio.wait_for(self._cond.wait_for(lambda: self._buffer.has_room or self._closed), timeout)
                except TimeoutError:
                    raise BufferFull(f"{self._buffer.max_buffer} events are waiting to be sent") from None
                if self._closed:
                    raise WriterClosed("the writer is closed")
            if self._buffer.add(event, body, time.monotonic()):
                self._cond.notify_all()
        return event

    async def flush(self, timeout: float | None = None) -> bool:
        self._start()
        async with self._cond:
            target = self._buffer.request_flush()
            self._cond.notify_all()
            try:
                await asyncio.wait_for(self._cond.wait_for(lambda: self._buffer.flushed(target)), timeout)
            except TimeoutError:
                return False
            return True

    async def close(self, timeout: float | None = 30.0) -> CloseReport:
        async with self._cond:
            self._closed = True
            self._buffer.closing = True
            self._cond.notify_all()
            if self._sender is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait_for(lambda: not self._buffer.entries), timeout)
        if self._sender is not None:
            # Whatever the sender is doing now (a backoff, a request in flight) ends here; unconfirmed events
            # are reported below.
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        report = CloseReport(self._buffer.sent, self._buffer.rejected, [e.event for e in self._buffer.entries])
        if report.unsent:
            log.error("metering writer: closed with %d event(s) not confirmed as sent", len(report.unsent))
        return report

    async def __aenter__(self) -> Self:
        self._start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    def _start(self) -> None:
        if self._sender is None and not self._closed:
            self._sender = asyncio.get_running_loop().create_task(self._send_forever(), name="metering-writer")

    async def _next_batch(self) -> list[Entry] | None:
        async with self._cond:
            while True:
                wait = self._buffer.due_in(time.monotonic())
                if wait is None and self._buffer.closing:
                    return None
                if wait is not None and wait <= 0:
                    return self._buffer.take()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), wait)

    async def _send_forever(self) -> None:
        while (batch := await self._next_batch()) is not None:
            try:
                await self.client.send_encoded([entry.body for entry in batch])
            except Exception as error:  # every failure is classified below, so the sender never dies
                failure = error if isinstance(error, MeteringError) else _unexpected(error)
                async with self._cond:
                    outcome, rejected = self._buffer.failed(batch, failure, time.monotonic())
                    self._cond.notify_all()
                _report(self.on_rejected, outcome, rejected, failure)
            else:
                async with self._cond:
                    self._buffer.accepted(batch)
                    self._cond.notify_all()
