"""`SamplingUsageWriter` (threads) and `AsyncSamplingUsageWriter` (asyncio): the sampling pattern, for analytics
meters whose volume does not deserve every event (`sampling = true` in the meter catalog).

Each event of a sampled meter is kept with probability 1/k, independently (Poisson sampling), and sent with
`sample_weight` k: the service multiplies its figure by k and keeps the variance of that estimate, and reads say
`"estimate": true` with a 95 % `error_bound`. The weight is an integer, so the estimate is an exact decimal.
Events of meters that are not sampled are sent as recorded, so one writer serves the hybrid pattern too: billing
meters exact, analytics meters sampled. Sending, retries and rejections are the buffered writer's (writer.py).

`stats.recorded` counts the events recorded, kept or not; `sent` and the rest count the events that travel.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from metering.client.buffer import Backoff, CloseReport, WriterStats
from metering.client.http import AsyncMeteringClient, MeteringClient
from metering.client.recording import QuantityLike, recorded, to_event
from metering.client.writer import AsyncBufferedUsageWriter, BufferedUsageWriter, OnRejected
from metering.core.events import MAX_SAMPLE_WEIGHT, UsageEvent
from metering.core.meters import MeterCatalog, load_catalog


def weight_of(sample_rate: float) -> int:
    """The integer weight k of a rate of 1/k (0.01 keeps one event in 100)."""
    if not 0 < sample_rate <= 1:
        raise ValueError("sample_rate must be above 0 and at most 1")
    weight = round(1 / sample_rate)
    if abs(weight * sample_rate - 1) > 1e-9 or weight > MAX_SAMPLE_WEIGHT:
        raise ValueError(
            f"sample_rate must be 1/k for an integer k from 1 to {MAX_SAMPLE_WEIGHT} (0.5, 0.1, 0.001), not "
            f"{sample_rate}: the service multiplies by k, and an estimate with a fractional weight is not exact"
        )
    return weight


class _Sampler:
    """Which events travel, and with which weight; shared by both writers."""

    def __init__(self, catalog: MeterCatalog | None, sample_rate: float, seed: int | None) -> None:
        self.catalog = catalog or load_catalog()
        self.weight = weight_of(sample_rate)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.recorded = 0

    def sampled(self, event: UsageEvent) -> UsageEvent | None:
        """The event to send (weighted when its meter is sampled), or None when it is left out."""
        meter = self.catalog.get(event.metric)
        with self._lock:
            self.recorded += 1
            if meter is None or not meter.is_sampled or self.weight == 1 or event.sample_weight is not None:
                return event
            if self._random.randrange(self.weight):
                return None
        return event.model_copy(update={"sample_weight": self.weight})

    def stats(self, sent: WriterStats) -> WriterStats:
        with self._lock:
            recorded = self.recorded
        return WriterStats(
            recorded, sent.sent, sent.rejected, sent.buffered, sent.requests, sent.retries, sent.last_error
        )


class SamplingUsageWriter:
    """Records usage from any number of threads, keeping one event in k of each sampled meter.

    >>> with SamplingUsageWriter(MeteringClient(url, key), sample_rate=0.01) as usage:
    ...     usage.record("acme", "pages.viewed", 1, dimensions={"page": "home"})

    `seed` makes the choice reproducible (tests); `catalog` is the service's meter catalog (the packaged one by
    default): it says which meters are sampled. The other options are the buffered writer's.
    """

    def __init__(
        self,
        client: MeteringClient,
        sample_rate: float,
        *,
        catalog: MeterCatalog | None = None,
        seed: int | None = None,
        batch_size: int = 100,
        flush_interval: float = 5.0,
        max_buffer: int = 10_000,
        backoff: Backoff | None = None,
        on_rejected: OnRejected | None = None,
    ) -> None:
        self.client = client
        self._sampler = _Sampler(catalog, sample_rate, seed)
        self._sender = BufferedUsageWriter(
            client, batch_size, flush_interval, max_buffer, backoff=backoff, on_rejected=on_rejected
        )

    @property
    def weight(self) -> int:
        return self._sampler.weight

    @property
    def stats(self) -> WriterStats:
        return self._sampler.stats(self._sender.stats)

    def record(
        self,
        tenant_id: str,
        metric: str,
        quantity: QuantityLike,
        *,
        block: bool = True,
        timeout: float | None = None,
        **fields: Any,
    ) -> UsageEvent | None:
        """As `BufferedUsageWriter.record`; returns the event sent (with its weight), or None when left out."""
        event = recorded(tenant_id, metric, quantity, fields, default_source=self.client.source)
        return self.record_event(event, block=block, timeout=timeout)

    def record_event(
        self, event: UsageEvent | Mapping[str, Any], *, block: bool = True, timeout: float | None = None
    ) -> UsageEvent | None:
        kept = self._sampler.sampled(to_event(event, default_source=self.client.source))
        return None if kept is None else self._sender.record_event(kept, block=block, timeout=timeout)

    def flush(self, timeout: float | None = None) -> bool:
        return self._sender.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> CloseReport:
        return self._sender.close(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


class AsyncSamplingUsageWriter:
    """The same for asyncio: `await writer.record(...)`."""

    def __init__(
        self,
        client: AsyncMeteringClient,
        sample_rate: float,
        *,
        catalog: MeterCatalog | None = None,
        seed: int | None = None,
        batch_size: int = 100,
        flush_interval: float = 5.0,
        max_buffer: int = 10_000,
        backoff: Backoff | None = None,
        on_rejected: OnRejected | None = None,
    ) -> None:
        self.client = client
        self._sampler = _Sampler(catalog, sample_rate, seed)
        self._sender = AsyncBufferedUsageWriter(
            client, batch_size, flush_interval, max_buffer, backoff=backoff, on_rejected=on_rejected
        )

    @property
    def weight(self) -> int:
        return self._sampler.weight

    @property
    def stats(self) -> WriterStats:
        return self._sampler.stats(self._sender.stats)

    async def record(
        self,
        tenant_id: str,
        metric: str,
        quantity: QuantityLike,
        *,
        block: bool = True,
        timeout: float | None = None,
        **fields: Any,
    ) -> UsageEvent | None:
        event = recorded(tenant_id, metric, quantity, fields, default_source=self.client.source)
        return await self.record_event(event, block=block, timeout=timeout)

    async def record_event(
        self, event: UsageEvent | Mapping[str, Any], *, block: bool = True, timeout: float | None = None
    ) -> UsageEvent | None:
        kept = self._sampler.sampled(to_event(event, default_source=self.client.source))
        return None if kept is None else await self._sender.record_event(kept, block=block, timeout=timeout)

    async def flush(self, timeout: float | None = None) -> bool:
        return await self._sender.flush(timeout)

    async def close(self, timeout: float | None = 30.0) -> CloseReport:
        return await self._sender.close(timeout)

    async def __aenter__(self) -> Self:
        await self._sender.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()
