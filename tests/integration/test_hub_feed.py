"""The dev host's hub feed on a real Azurite queue: a failing batch is delivered again, forever, with capped
exponential backoff, as the Event Hub trigger's retry policy does; nothing is dead-lettered for failing."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from metering.devhost.feed import HubFeed
from metering.transport.queue import queue_client
from tests.e2e.conftest import eventually


class FlakyFunction:
    """The aggregate function during a store outage: it raises `failures` times, then takes the batch."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[list[tuple[bytes, int]]] = []

    def __call__(self, events: list) -> None:
        self.calls.append([(event.get_body(), event.sequence_number) for event in events])
        if len(self.calls) <= self.failures:
            raise ConnectionError("the store is unavailable")


@pytest.fixture
def queue(azurite) -> Iterator:
    client = queue_client(azurite.connection_string, f"feed{uuid.uuid4().hex}")
    client.create_queue()
    yield client
    client.delete_queue()


def run_feed(feed: HubFeed) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=feed.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def test_a_batch_that_keeps_failing_is_delivered_again_until_it_passes(queue):
    bodies = [f'{{"n":{i}}}'.encode() for i in range(3)]
    for body in bodies:
        queue.send_message(body)
    # Many more failures than the 5 attempts after which the feed used to dead-letter the batch.
    function = FlakyFunction(failures=12)
    feed = HubFeed(queue, function, "events", hub="usage", consumer_group="aggregator",
                   min_backoff_seconds=0.01, max_backoff_seconds=0.05, idle_seconds=0.01)  # fmt: skip
    stop, thread = run_feed(feed)
    try:
        eventually(lambda: feed.stats.batches == 1, timeout=30)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert len(function.calls) == 13
    # Every attempt carried the same events at the same positions, as a retried hub batch does.
    assert all(call == function.calls[0] for call in function.calls)
    assert sorted(body for body, _ in function.calls[0]) == sorted(bodies)
    assert (feed.stats.failures, feed.stats.messages) == (12, 3)
    # Deleted once taken, and only then.
    assert queue.get_queue_properties().approximate_message_count == 0


def test_the_wait_between_attempts_doubles_up_to_the_cap_and_never_ends(queue):
    feed = HubFeed(queue, FlakyFunction(0), "events", hub="usage", consumer_group="aggregator",
                   min_backoff_seconds=1, max_backoff_seconds=60)  # fmt: skip
    assert [feed.backoff(attempt) for attempt in range(1, 10)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert feed.backoff(10_000) == 60


def test_stopping_during_the_retries_leaves_the_batch_in_the_queue(queue):
    queue.send_message(b'{"n":1}')
    function = FlakyFunction(failures=1_000_000)
    feed = HubFeed(queue, function, "events", hub="usage", consumer_group="aggregator",
                   visibility_seconds=1, min_backoff_seconds=0.01, max_backoff_seconds=0.02)  # fmt: skip
    stop, thread = run_feed(feed)
    eventually(lambda: len(function.calls) >= 3, timeout=30)
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    # Nothing was taken, so nothing is gone: it reappears for the next run once its visibility ends.
    eventually(lambda: len(queue.peek_messages(max_messages=1)) == 1, timeout=10)
