"""The local hub's feeds: one per partition (queue), in threads of the dev host or in worker processes.

In Azure every Event Hub partition is read by one aggregator at a time, and a busy hub's partitions are spread
over several Function instances, each its own process. Counting costs CPU in the SDK's code (its entity
encoding: FACTS.md), so threads of one Python process share one core however many partitions they read; worker
processes use every core, as instances do. A worker imports the function app itself (its settings are the dev
host's environment, inherited), builds its own services (store clients, ledger cache), feeds the Event Hub trigger
from its share of the partitions and stops when the dev host does. In-process feeds (no workers) are for tests
that reach into the running app (the ledger, the feeds' counters).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from metering.devhost.feed import HubFeed

log = logging.getLogger(__name__)

# Spawned, not forked: a fork would copy the dev host's threads' locks and open connections mid-use.
_CONTEXT = multiprocessing.get_context("spawn")


@dataclass(frozen=True, slots=True)
class FeedSpec:
    """One partition of the local hub: its queue and the partition id its feed runs under."""

    queue: str
    partition_id: str


@dataclass(frozen=True, slots=True)
class FeedOptions:
    hub: str
    consumer_group: str
    max_batch: int
    idle_seconds: float
    retry: dict[str, float]


def build_feeds(
    function: Any, trigger: dict[str, Any], specs: Sequence[FeedSpec], options: FeedOptions
) -> list[HubFeed]:
    """The feeds of `specs`, each calling the Event Hub function with its batches."""
    from metering.transport.queue import queue_client  # noqa: PLC0415 (after the settings are in the environment)

    return [
        HubFeed(
            queue_client(os.environ["AzureWebJobsStorage"], spec.queue),
            function.get_user_function(),
            trigger["name"],
            hub=options.hub,
            consumer_group=options.consumer_group,
            max_batch=options.max_batch,
            idle_seconds=options.idle_seconds,
            partition_id=spec.partition_id,
            **options.retry,
        )
        for spec in specs
    ]


def run_feeds(feeds: Sequence[HubFeed], stop: threading.Event) -> list[threading.Thread]:
    threads = [
        threading.Thread(target=feed.run, args=(stop,), name=f"hub feed {feed.partition}", daemon=True)
        for feed in feeds
    ]
    for thread in threads:
        thread.start()
    return threads


class FeedWorkers:
    """Worker processes, each feeding the trigger from some of the partitions (round robin).

    Nothing is shared between the processes but a pipe each way of starting: a worker says it feeds its
    partitions over its pipe, and stops on SIGTERM (or on Ctrl-C, which reaches the whole process group). A lock
    shared between processes (a multiprocessing Event's) would stay taken by a worker that dies holding it, and
    the dev host would hang on it while stopping."""

    def __init__(
        self, app_module: str, root: Path, specs: Sequence[FeedSpec], options: FeedOptions, workers: int
    ) -> None:
        self.app_module = app_module
        self.root = root
        self.options = options
        count = max(1, min(workers, len(specs)))
        self.shares = [list(specs[i::count]) for i in range(count)]
        self._processes: list[Any] = []

    def start(self, timeout: float = 120.0) -> None:
        """Start the workers and wait until each feeds its partitions; raise if one does not."""
        level = logging.getLogger().getEffectiveLevel()
        readers = []
        for index, share in enumerate(self.shares):
            reader, writer = _CONTEXT.Pipe(duplex=False)
            process = _CONTEXT.Process(
                target=_worker,
                args=(_Share(self.app_module, str(self.root), share, self.options, level), writer),
                name=f"feed worker {index}",
                daemon=True,
            )
            process.start()
            writer.close()  # the worker's end: once it is gone, a read here ends instead of waiting
            self._processes.append(process)
            readers.append(reader)
        deadline = time.monotonic() + timeout
        for process, reader in zip(self._processes, readers, strict=True):
            while not reader.poll(0.2):
                if not process.is_alive():
                    raise RuntimeError(f"{process.name} stopped while starting (exit code {process.exitcode})")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{process.name} did not start")
            try:
                reader.recv()
            except EOFError:
                raise RuntimeError(f"{process.name} stopped while starting") from None
            reader.close()

    def stop(self, timeout: float = 15.0) -> None:
        """Ask every worker to stop (SIGTERM: each finishes the batch it is giving the trigger), then wait."""
        for process in self._processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in self._processes:
            process.join(max(deadline - time.monotonic(), 0.1))
            if process.is_alive():
                process.kill()
                process.join(5)


@dataclass(frozen=True, slots=True)
class _Share:
    """What one worker process is given: the app to import, from where, and its partitions."""

    app_module: str
    root: str
    specs: list[FeedSpec]
    options: FeedOptions
    log_level: int


def _worker(share: _Share, ready: Connection) -> None:
    app_module, root, specs, options = share.app_module, share.root, share.specs, share.options
    stop = threading.Event()
    # Both only set the event: the feeds finish the batch in hand and return.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    logging.basicConfig(level=share.log_level, format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from metering.devhost.host import discover  # noqa: PLC0415 (the worker's own import of the app)
    from metering.devhost.http import trigger_of  # noqa: PLC0415

    os.chdir(root)
    functions = discover(app_module)
    feeds: list[HubFeed] = []
    for function in functions:
        trigger = trigger_of(function)
        if trigger["type"] == "eventHubTrigger":
            feeds.extend(build_feeds(function, trigger, specs, options))
    threads = run_feeds(feeds, stop)
    ready.send(True)
    ready.close()
    while not stop.wait(0.5):
        pass
    for thread in threads:
        thread.join(10)
