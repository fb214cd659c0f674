"""Webhook deliveries against a real receiver (an HTTP server on a free loopback port), on Azurite.

The outbox, its queue (a real Azurite queue) and the delivery rows are the real ones; the schedule's clock is a
FixedClock the tests move through the backoff, while signatures are stamped with real time (one second later at
every read, so that each attempt has a timestamp of its own), as the receiver's verifier checks them against
its own clock. Signatures are checked with the `standardwebhooks` package's own verifier.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from azure.storage.queue import QueueClient
from standardwebhooks import WebhookVerificationError

from metering.api.webhooks import Webhooks
from metering.billing.closing import PeriodClosedNotification, PeriodCloser
from metering.core.periods import BillingPeriod
from metering.ingest.health import HealthCheck
from metering.ledger.control import HubProgress, index_open
from metering.notifications.outbox import Outbox
from metering.notifications.queue import QueueSink
from metering.notifications.webhooks.backoff import RetrySchedule
from metering.notifications.webhooks.dispatcher import Outcome, WebhookDispatcher
from metering.notifications.webhooks.rows import DeliveryStatus, FailureReason, WebhookDeliveries, failed_count
from metering.notifications.webhooks.sender import WebhookSender
from metering.quotas.alerts import ThresholdCrossedNotification, alert_id
from metering.stores import Store
from metering.transport.queue import QueueBacklog, queue_client
from tests.e2e.conftest import eventually
from tests.receiver import Answer, Received, Receiver, receiving, verified
from tests.support import FixedClock

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
NOVEMBER = BillingPeriod(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC), "2026-11-01")


class SigningClock:
    """Real time, one second further at every read: each attempt is stamped with a time of its own, and every
    stamp stays within the receivers' five minutes of tolerance."""

    def __init__(self, offset: timedelta = timedelta()) -> None:
        self.start = datetime.now(UTC) + offset
        self.reads = 0
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            self.reads += 1
            return self.start + timedelta(seconds=self.reads)


@dataclass
class Hooks:
    store: Store
    clock: FixedClock
    deliveries: WebhookDeliveries
    sender: WebhookSender
    dispatcher: WebhookDispatcher
    outbox: Outbox
    queue: QueueClient
    receiver: Receiver

    def alert(self, tenant: str = "acme", threshold: int = 80) -> str:
        """Record a threshold alert as AlertWatch does: once, in one transaction with its delivery."""
        message_id = alert_id(tenant, "api.requests", NOVEMBER, Decimal(threshold))
        notice = ThresholdCrossedNotification(
            id=message_id,
            tenant_id=tenant,
            metric="api.requests",
            period_start=NOVEMBER.start,
            period_end=NOVEMBER.end,
            threshold_percent=Decimal(threshold),
            hard_limit=Decimal(100),
            usage=Decimal(threshold),
            detected=self.clock(),
        )
        assert self.outbox.add(message_id, notice.message(), once=True)
        return message_id

    def pending(self) -> dict[str, Any]:
        return {d.id: d for d in self.deliveries.page(DeliveryStatus.PENDING, None, 1000).items}

    def failed(self) -> dict[str, Any]:
        return {d.id: d for d in self.deliveries.page(DeliveryStatus.FAILED, None, 1000).items}

    def queued(self) -> list[dict[str, Any]]:
        return [json.loads(m.content) for m in self.queue.receive_messages(max_messages=32)]

    def until_settled(self, step: timedelta = timedelta(hours=3), runs: int = 40) -> int:
        """Run the dispatcher at each pending delivery's next attempt until none is pending; returns the runs."""
        for run in range(runs):
            pending = self.pending()
            if not pending:
                return run
            self.clock.now = max(self.clock.now, min(d.next_attempt for d in pending.values()))
            self.dispatcher.run()
        raise AssertionError(f"still pending after {runs} runs: {sorted(self.pending())}")


def build(store: Store, azurite: Any, receiver: Receiver, *, timeout: float = 2.0, **options: Any) -> Hooks:
    clock = FixedClock(NOW)
    deliveries = WebhookDeliveries(store.control, clock)
    sender = WebhookSender(receiver.url, SECRET, timeout=timeout, clock=SigningClock())
    # The longest wait every time (jitter 1): the schedule's bounds, reproducibly.
    dispatcher = WebhookDispatcher(deliveries, sender, clock, jitter=lambda: 0.999, **options)
    queue = queue_client(azurite.connection_string, f"n{uuid.uuid4().hex[:16]}")
    outbox = Outbox(store.control, QueueSink(queue), webhooks=deliveries)
    return Hooks(store, clock, deliveries, sender, dispatcher, outbox, queue, receiver)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from receiving()


@pytest.fixture
def hooks(table_store, azurite, receiver) -> Iterator[Hooks]:
    built = build(table_store, azurite, receiver)
    yield built
    built.sender.close()


def test_a_notification_is_posted_signed_and_verifies_with_the_packages_own_verifier(hooks):
    message_id = hooks.alert()
    report = hooks.dispatcher.run()
    assert report.ids == {message_id: Outcome.DELIVERED}
    [request] = hooks.receiver.requests
    assert request.path == "/hooks"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == message_id
    assert request.headers["webhook-signature"].startswith("v1,")
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 120
    body = verified(SECRET, request)
    # The webhook's body is the queue's message, and the notification's model reads it back.
    assert hooks.outbox.dispatch() == 1
    assert body == hooks.queued()[0]
    assert ThresholdCrossedNotification.model_validate(body).usage == Decimal(80)
    # Acknowledged: nothing is kept.
    assert (hooks.pending(), hooks.failed()) == ({}, {})

    # A body changed on the way, a signature of another secret, or a stale timestamp do not verify.
    tampered = Received(request.path, request.headers, request.body.replace(b'"usage":"80"', b'"usage":"8"'))
    assert tampered.body != request.body
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        verified(SECRET, tampered)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        verified("whsec_" + base64.b64encode(b"another secret of 24 bytes!").decode(), request)
    stale = WebhookSender(hooks.receiver.url, SECRET, timeout=2, clock=SigningClock(timedelta(minutes=-10)))
    assert stale.send(message_id, request.body.decode()).status == 200
    with pytest.raises(WebhookVerificationError, match="too old"):
        verified(SECRET, hooks.receiver.requests[-1])
    stale.close()


def test_a_receiver_down_then_back_gets_every_notification_and_the_queue_never_waits(hooks):
    receiver = hooks.receiver
    receiver.down()
    ids = [hooks.alert(threshold=80), hooks.alert(threshold=100), hooks.alert(tenant="globex")]
    # While the receiver is away the queue gets every message, at once.
    assert hooks.outbox.dispatch() == 3
    assert sorted(m["id"] for m in hooks.queued()) == sorted(ids)
    for _ in range(3):
        report = hooks.dispatcher.run()
        assert (report.retrying, report.delivered) == (3, 0)
        hooks.clock.now += timedelta(hours=2)
    pending = hooks.pending()
    assert {d.attempts for d in pending.values()} == {3}
    assert all(d.last_status is None and "cannot connect" in (d.last_error or "") for d in pending.values())

    # Back, but answering 503 to the first attempt of each: retried, then acknowledged.
    receiver.up()
    answered: set[str] = set()

    def answer(request: Received) -> Answer:
        if request.id in answered:
            return Answer(200)
        answered.add(request.id)
        return Answer(503, body=b"warming up")

    receiver.answer = answer
    hooks.until_settled()
    assert (hooks.pending(), hooks.failed()) == ({}, {})
    for message_id in ids:
        attempts = receiver.of(message_id)
        assert len(attempts) == 2
        # The same id on every attempt, a fresh timestamp and signature each time; each verifies.
        assert {a.headers["webhook-id"] for a in attempts} == {message_id}
        assert len({a.headers["webhook-timestamp"] for a in attempts}) == 2
        assert len({a.headers["webhook-signature"] for a in attempts}) == 2
        assert {verified(SECRET, a)["id"] for a in attempts} == {message_id}  # type: ignore[index]


def test_410_gone_stops_at_once_and_operators_list_and_redrive_the_failed(hooks, azurite):
    gone, fine = hooks.alert(threshold=80), hooks.alert(threshold=100)
    hooks.receiver.answer = lambda r: Answer(410) if r.id == gone else Answer(200)
    report = hooks.dispatcher.run()
    assert report.ids == {gone: Outcome.FAILED, fine: Outcome.DELIVERED}
    [failed] = hooks.failed().values()
    assert (failed.id, failed.reason, failed.attempts, failed.last_status) == (gone, FailureReason.GONE, 1, 410)
    assert hooks.pending() == {}
    # Nothing more is attempted, however long we wait.
    hooks.clock.now += timedelta(hours=30)
    assert hooks.dispatcher.run().ids == {}
    assert len(hooks.receiver.of(gone)) == 1
    assert failed_count(hooks.store.control, 100) == 1
    health = HealthCheck(hooks.store, QueueBacklog(hooks.queue), HubProgress(hooks.store.control), hooks.clock).report()
    assert health.webhooks_failed == 1

    api = Webhooks(hooks.deliveries)
    listed = api.list({"status": "failed"}).json()
    assert [(i["id"], i["status"], i["reason"], i["last_status"]) for i in listed["items"]] == [
        (gone, "failed", "gone", 410)
    ]
    assert listed["next"] is None
    assert api.list({}).json() == listed  # failed is the default
    assert api.list({"status": "pending"}).json() == {"items": [], "next": None}

    hooks.receiver.answer = lambda r: Answer(204)
    redriven = api.redrive(gone)
    assert (redriven.status, redriven.json()["redriven"], redriven.json()["status"]) == (200, True, "pending")
    [pending] = hooks.pending().values()
    assert (pending.attempts, pending.next_attempt, pending.reason) == (0, hooks.clock.now, None)
    assert (hooks.failed(), failed_count(hooks.store.control, 100)) == ({}, 0)
    # Idempotent: a second redrive finds it pending and changes nothing.
    again = api.redrive(gone)
    assert (again.status, again.json()["redriven"]) == (200, False)
    assert hooks.dispatcher.run().ids == {gone: Outcome.DELIVERED}
    assert len(hooks.receiver.of(gone)) == 2
    # Delivered: nothing is kept, so there is nothing to redrive.
    assert (hooks.pending(), hooks.failed()) == ({}, {})
    unknown = api.redrive(gone)
    assert (unknown.status, unknown.content_type) == (404, "application/problem+json")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "delivered"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"after": "a/b"}, "after"),
    ],
)
def test_bad_list_parameters_are_400s_naming_the_parameter(hooks, params, field):
    response = Webhooks(hooks.deliveries).list(params)
    assert (response.status, response.content_type) == (400, "application/problem+json")
    assert response.json()["errors"][0]["field"] == field


def test_a_redrive_of_a_malformed_id_is_a_400(hooks):
    response = Webhooks(hooks.deliveries).redrive("period.closed:acme/../x")
    assert (response.status, response.json()["errors"][0]["field"]) == (400, "id")


def test_pages_of_deliveries_follow_each_other_without_gaps_or_repeats(hooks):
    hooks.receiver.down()
    ids = sorted(hooks.alert(tenant=f"t{i:02d}") for i in range(7))
    api = Webhooks(hooks.deliveries)
    seen: list[str] = []
    after: str | None = None
    while True:
        page = api.list({"status": "pending", "limit": "3", **({"after": after} if after else {})}).json()
        seen += [item["id"] for item in page["items"]]
        after = page["next"]
        if after is None:
            break
    assert seen == ids


def test_a_delivery_failing_for_the_whole_window_is_kept_as_failed_with_its_last_error(hooks):
    message_id = hooks.alert()
    hooks.receiver.answer = lambda r: Answer(500, body=b"the database is on fire")
    started = hooks.clock.now
    runs = hooks.until_settled(runs=60)
    [failed] = hooks.failed().values()
    assert (failed.id, failed.reason, failed.last_status) == (message_id, FailureReason.EXPIRED, 500)
    assert "the database is on fire" in (failed.last_error or "")
    attempts = hooks.receiver.of(message_id)
    assert failed.attempts == len(attempts) == runs
    # Retried for the whole window (26 h, so at least a day), the last attempt at its very end.
    assert failed.last_attempt == started + RetrySchedule().window
    assert failed.last_attempt - started >= timedelta(hours=24)
    assert len({a.headers["webhook-timestamp"] for a in attempts}) == len(attempts)


def test_a_slow_receiver_does_not_hold_back_the_others(table_store, azurite, receiver):
    hooks = build(table_store, azurite, receiver, timeout=0.5)
    slow = hooks.alert(tenant="slow")
    others = [hooks.alert(tenant=f"fast{i}") for i in range(5)]
    receiver.answer = lambda r: Answer(200, hold_seconds=10) if r.id == slow else Answer(200)
    started = time.monotonic()
    report = hooks.dispatcher.run()
    elapsed = time.monotonic() - started
    assert report.ids == {slow: Outcome.RETRYING, **dict.fromkeys(others, Outcome.DELIVERED)}
    assert elapsed < 3, f"the run took {elapsed:.1f} s: the slow receiver held it"
    assert hooks.pending()[slow].last_error == "no answer within 0.5 s"
    hooks.sender.close()


def test_a_run_stops_starting_attempts_once_its_budget_is_spent(table_store, azurite, receiver):
    hooks = build(table_store, azurite, receiver, timeout=0.5, workers=1, budget=timedelta(seconds=0.2))
    ids = [hooks.alert(tenant=f"t{i}") for i in range(4)]
    receiver.answer = lambda r: Answer(200, hold_seconds=10)
    report = hooks.dispatcher.run()
    # One attempt (it times out) fills the budget; the rest wait, untouched, for the next run.
    assert (report.retrying, report.left) == (1, 3)
    assert sorted(d.id for d in hooks.pending().values() if d.attempts == 0) == sorted(set(ids) - {*receiver.ids()})
    hooks.sender.close()


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 502])
def test_a_refusal_other_than_410_is_retried_with_its_status(hooks, status):
    message_id = hooks.alert()
    hooks.receiver.answer = lambda r: Answer(status, body=b"not now")
    assert hooks.dispatcher.run().ids == {message_id: Outcome.RETRYING}
    pending = hooks.pending()[message_id]
    assert (pending.attempts, pending.last_status) == (1, status)
    assert pending.last_error is not None
    assert pending.last_error.startswith(f"{status} ")
    assert pending.last_error.endswith(": not now")
    assert pending.next_attempt > hooks.clock.now


def test_a_redirect_is_not_followed_and_is_retried(hooks):
    message_id = hooks.alert()
    elsewhere = f"http://127.0.0.1:{hooks.receiver.port}/elsewhere"
    hooks.receiver.answer = lambda r: Answer(308, headers={"location": elsewhere}) if r.path == "/hooks" else Answer()
    assert hooks.dispatcher.run().ids == {message_id: Outcome.RETRYING}
    assert [r.path for r in hooks.receiver.requests] == ["/hooks"]
    pending = hooks.pending()[message_id]
    assert pending.last_status == 308
    assert pending.last_error == f"308 redirect to {elsewhere} (redirects are not followed)"


def test_dispatchers_running_at_once_send_each_notification_once(table_store, azurite, receiver):
    first = build(table_store, azurite, receiver)
    second = build(table_store, azurite, receiver)
    ids = [first.alert(tenant=f"t{i}") for i in range(6)]
    receiver.answer = lambda r: Answer(200, hold_seconds=0.2)
    threads = [threading.Thread(target=hooks.dispatcher.run) for hooks in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.id for r in receiver.requests) == sorted(ids)
    assert first.pending() == {}
    first.sender.close()
    second.sender.close()


def test_an_alert_recorded_once_gets_one_delivery_whatever_repeats_it(store, azurite, receiver):
    hooks = build(store, azurite, receiver)
    message_id = hooks.alert()
    assert hooks.dispatcher.run().delivered == 1
    # The alert's record stays: a redelivered batch, or a racing instance, raises it again in vain.
    notice = {"type": "quota.threshold_crossed", "tenant_id": "acme"}
    assert hooks.outbox.add(message_id, notice, once=True) is False
    assert hooks.pending() == {}
    assert hooks.dispatcher.run().ids == {}
    assert len(receiver.of(message_id)) == 1
    hooks.sender.close()


def test_a_closed_period_is_delivered_with_its_statement(hooks, azurite, catalog):
    tenant = "acme"
    october = BillingPeriod(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC), "2026-10-01")
    index_open(hooks.store.control, tenant, october)
    hub = queue_client(azurite.connection_string, f"h{uuid.uuid4().hex[:16]}")
    closer = PeriodCloser(
        hooks.store,
        catalog,
        hooks.outbox,
        QueueBacklog(hub),
        HubProgress(hooks.store.control),
        grace=timedelta(hours=24),
        retention=timedelta(days=35),
        clock=hooks.clock,
    )
    assert [c.tenant_id for c in closer.run().closed] == [tenant]
    assert [m["id"] for m in hooks.queued()] == [f"period.closed:{tenant}:2026-10-01"]
    assert hooks.dispatcher.run().delivered == 1
    [request] = hooks.receiver.requests
    notice = PeriodClosedNotification.model_validate(verified(SECRET, request))
    assert (notice.id, notice.tenant_id, notice.statement.period_start) == (request.id, tenant, october.start)


def test_the_outbox_starts_a_run_after_it_sent_and_does_not_wait_for_it(table_store, azurite, receiver):
    hooks = build(table_store, azurite, receiver)
    hooks.outbox.after_dispatch = hooks.dispatcher.kick
    message_id = hooks.alert()
    receiver.answer = lambda r: Answer(200, hold_seconds=1)
    started = time.monotonic()
    assert hooks.outbox.dispatch() == 1
    assert time.monotonic() - started < 0.5, "the queue's dispatch waited on the webhook"
    eventually(lambda: hooks.pending() == {}, timeout=10)
    assert [r.id for r in receiver.requests] == [message_id]
    hooks.sender.close()


def test_a_delivery_row_that_cannot_be_read_holds_back_no_other(hooks):
    # A row no version of the app could have written: it is logged and passed over, never a jam.
    hooks.store.control.upsert("outbox", "w|quota.threshold_crossed:zz:x:2026-11-01:80", {"status": "pending"})
    message_id = hooks.alert()
    assert hooks.dispatcher.run().ids == {message_id: Outcome.DELIVERED}
    listed = Webhooks(hooks.deliveries).list({"status": "pending"}).json()
    assert listed == {"items": [], "next": None}
