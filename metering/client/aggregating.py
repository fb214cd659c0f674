"""`AggregatingUsageWriter` (threads) and `AsyncAggregatingUsageWriter` (asyncio): the batch and hybrid metering
patterns, for a producer whose events are too many to send one by one (a gateway serving thousands of requests a
second).

`record()` folds an event into the aggregate of its key and window of event time (windows.py says how each kind
folds, and how aggregates are identified); when a window ends, its aggregates go to a buffered writer
(writer.py), which sends, retries and reports them exactly as it does any event: transient failures are retried
with backoff and `Retry-After`, refused events are reported to `on_rejected` and the log, and a retry resends
the very same aggregate. What each aggregate stands for is exact: the service's totals and event counts equal
those of the events recorded.

`stats.recorded` counts the events recorded; `sent`, `rejected`, `requests` and `retries` count aggregates, as
they travel; `buffered` counts the aggregates still open or waiting to be sent. When the send buffer is full (the
service is away for long), `record()` waits for room: the open aggregates stay bounded by `max_open`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self

from metering.client.buffer import Backoff, CloseReport, WriterStats
from metering.client.http import AsyncMeteringClient, MeteringClient
from metering.client.recording import QuantityLike
from metering.client.windows import DEFAULT_MAX_OPEN, DEFAULT_WINDOW, Windows
from metering.client.writer import AsyncBufferedUsageWriter, BufferedUsageWriter, OnRejected, WriterClosed
from metering.core.events import UsageEvent
from metering.core.meters import MeterCatalog, load_catalog

Clock = Callable[[], float]


def _stats(windows: Windows, sent: WriterStats) -> WriterStats:
    return WriterStats(
        recorded=windows.recorded,
        sent=sent.sent,
        rejected=sent.rejected,
        buffered=sent.buffered + windows.open,
        requests=sent.requests,
        retries=sent.retries,
        last_error=sent.last_error,
    )


def _windows(catalog: MeterCatalog | None, source: str, window: float, max_open: int) -> Windows:
    # A random id per writer: two writers (or two runs of one) never share an aggregate's id.
    return Windows(
        catalog or load_catalog(), writer_id=uuid.uuid4().hex, source=source, window=window, max_open=max_open
    )


class AggregatingUsageWriter:
    """Records usage from any number of threads; one event per key and window reaches the service.

    >>> with AggregatingUsageWriter(MeteringClient(url, key), window=10) as usage:
    ...     usage.record("acme", "api.requests", 1, dimensions={"region": "eu"})

    `catalog` is the service's meter catalog (the packaged one by default): it says how each meter folds.
    """

    def __init__(
        self,
        client: MeteringClient,
        window: float = DEFAULT_WINDOW,
        *,
        catalog: MeterCatalog | None = None,
        max_open: int = DEFAULT_MAX_OPEN,
        batch_size: int = 1000,
        send_interval: float = 0.5,
        max_buffer: int = 10_000,
        backoff: Backoff | None = None,
        on_rejected: OnRejected | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.client = client
        self._windows = _windows(catalog, client.source, window, max_open)
        self._clock = clock
        self._sender = BufferedUsageWriter(
            client, batch_size, send_interval, max_buffer, backoff=backoff, on_rejected=on_rejected
        )
        self._cond = threading.Condition()
        self._closed = False
        self._ticker = threading.Thread(target=self._tick_forever, name="metering-windows", daemon=True)
        self._ticker.start()

    @property
    def writer_id(self) -> str:
        return self._windows.writer_id

    @property
    def stats(self) -> WriterStats:
        with self._cond:
            return _stats(self._windows, self._sender.stats)

    def record(self, tenant_id: str, metric: str, quantity: QuantityLike, **fields: Any) -> None:
        """Fold one event in (keyword fields as for `MeteringClient.record`; `timestamp` is its event time, now
        by default). Invalid fields raise InvalidEvent here, before anything is folded. An event with an
        `event_id`, an `idempotency_key` or a `sample_weight` goes as recorded, under its own identity."""
        with self._cond:
            if self._closed:
                raise WriterClosed("the writer is closed")
            earliest = self._windows.next_due()
            self._hand(self._windows.add(tenant_id, metric, quantity, fields, now=self._clock()))
            if earliest is None or self._windows.next_due() != earliest:
                self._cond.notify_all()

    def record_event(self, event: UsageEvent | Mapping[str, Any]) -> None:
        """A ready-made event (its fields, or a model: a model has an id, so it goes as recorded)."""
        fields = event.model_dump(exclude_none=True) if isinstance(event, UsageEvent) else dict(event)
        self.record(fields.pop("tenant_id"), fields.pop("metric"), fields.pop("quantity"), **fields)

    def flush(self, timeout: float | None = None) -> bool:
        """Send every aggregate now, open windows included, and wait until the service accepted or refused all
        of them. Returns False if `timeout` seconds passed first (they stay buffered and are still sent). A key
        recorded again in a window sent early goes again, as another aggregate."""
        with self._cond:
            self._hand(self._windows.drain())
        return self._sender.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> CloseReport:
        """Stop taking events, send every aggregate, and stop. `unsent` are aggregates not confirmed in time:
        they keep their ids, so sending them again later never counts twice."""
        with self._cond:
            if not self._closed:
                self._closed = True
                self._hand(self._windows.drain())
                self._cond.notify_all()
        self._ticker.join(timeout=1.0)
        return self._sender.close(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _hand(self, events: list[UsageEvent]) -> None:
        # Under the lock, so a close cannot slip between folding an aggregate out and buffering it.
        for event in events:
            self._sender.record_event(event)

    def _tick_forever(self) -> None:
        with self._cond:
            while not self._closed:
                due = self._windows.next_due()
                wait = None if due is None else due - self._clock()
                if wait is not None and wait <= 0:
                    self._hand(self._windows.due(self._clock()))
                    continue
                self._cond.wait(wait)


class AsyncAggregatingUsageWriter:
    """The same for asyncio: `await writer.record(...)`; window ends are watched by a task on the running loop.

    >>> async with AsyncAggregatingUsageWriter(AsyncMeteringClient(url, key)) as usage:
    ...     await usage.record("acme", "api.requests", 1)
    """

    def __init__(
        self,
        client: AsyncMeteringClient,
        window: float = DEFAULT_WINDOW,
        *,
        catalog: MeterCatalog | None = None,
        max_open: int = DEFAULT_MAX_OPEN,
        batch_size: int = 1000,
        send_interval: float = 0.5,
        max_buffer: int = 10_000,
        backoff: Backoff | None = None,
        on_rejected: OnRejected | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.client = client
        self._windows = _windows(catalog, client.source, window, max_open)
        self._clock = clock
        self._sender = AsyncBufferedUsageWriter(
            client, batch_size, send_interval, max_buffer, backoff=backoff, on_rejected=on_rejected
        )
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._closed = False
        self._ticker: asyncio.Task[None] | None = None

    @property
    def writer_id(self) -> str:
        return self._windows.writer_id

    @property
    def stats(self) -> WriterStats:
        return _stats(self._windows, self._sender.stats)

    async def record(self, tenant_id: str, metric: str, quantity: QuantityLike, **fields: Any) -> None:
        self._start()
        async with self._lock:
            if self._closed:
                raise WriterClosed("the writer is closed")
            earliest = self._windows.next_due()
            await self._hand(self._windows.add(tenant_id, metric, quantity, fields, now=self._clock()))
            if earliest is None or self._windows.next_due() != earliest:
                self._wake.set()

    async def record_event(self, event: UsageEvent | Mapping[str, Any]) -> None:
        fields = event.model_dump(exclude_none=True) if isinstance(event, UsageEvent) else dict(event)
        await self.record(fields.pop("tenant_id"), fields.pop("metric"), fields.pop("quantity"), **fields)

    async def flush(self, timeout: float | None = None) -> bool:
        async with self._lock:
            await self._hand(self._windows.drain())
        return await self._sender.flush(timeout)

    async def close(self, timeout: float | None = 30.0) -> CloseReport:
        async with self._lock:
            if not self._closed:
                self._closed = True
                await self._hand(self._windows.drain())
                self._wake.set()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        return await self._sender.close(timeout)

    async def __aenter__(self) -> Self:
        self._start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    async def _hand(self, events: list[UsageEvent]) -> None:
        for event in events:
            await self._sender.record_event(event)

    def _start(self) -> None:
        if self._ticker is None and not self._closed:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever(), name="metering-windows")

    async def _tick_forever(self) -> None:
        while not self._closed:
            # Cleared before looking, so a record() that opens an earlier window after the look wakes the wait.
            self._wake.clear()
            due = self._windows.next_due()
            wait = None if due is None else due - self._clock()
            if wait is not None and wait <= 0:
                async with self._lock:
                    await self._hand(self._windows.due(self._clock()))
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
