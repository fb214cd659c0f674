"""`metering rebuild` against Azurite: the app's services built directly on tables of their own, the local queue
fed to the aggregator as the dev host feeds it, real time. A mixed run (duplicates, a cancel, a closed period,
a late event carried under policy adjust) rebuilds with no difference; a corrupted total is reported as exactly
that difference, by the function and by the command."""

from __future__ import annotations

import contextlib
import io
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import fastavro
import pytest
from azure.core.exceptions import ResourceExistsError
from typer.testing import CliRunner

from metering.archive.capture import SCHEMA, capture_time_text, window_prefix
from metering.billing.journal import JournalKind
from metering.bootstrap import Services
from metering.cli import app
from metering.connections import build_container
from metering.core.hub import hub_partition
from metering.devhost.feed import HubFeed
from metering.ingest.consumer import HubMessage, consume
from metering.ledger.keys import STATE_ROW, partition_key
from metering.rebuild import RebuildReport, rebuild
from metering.settings import Settings
from metering.stores import Replace
from metering.transport.queue import queue_client
from metering.triggers import hub_messages

CAPTURE_NAMESPACE = "evhns-metering"


@dataclass
class Stack:
    settings: Settings
    services: Services
    feeds: list[HubFeed]
    tenant: str

    def send(self, *events: dict[str, Any]) -> None:
        response = self.services.http.ingest(json.dumps(list(events)).encode(), "application/json")
        assert response.status == 202, response.body

    def deliver(self) -> None:
        for feed in self.feeds:
            while feed.deliver_once():
                pass

    def cancel(self, event_id: str) -> None:
        response = self.services.http.billing.cancel(self.tenant, json.dumps({"event_id": event_id}).encode())
        assert response.status == 200, response.body

    def event(self, event_id: str, quantity: str, at: datetime, metric: str = "api.requests") -> dict[str, Any]:
        return {
            "event_id": event_id,
            "tenant_id": self.tenant,
            "metric": metric,
            "quantity": quantity,
            "timestamp": at.isoformat(),
            "source": "rebuild-test",
        }

    def state(self, period_start: datetime) -> Any:
        period = self.services.schedule.period_at(self.tenant, period_start)
        partition = partition_key(self.tenant, period)
        return partition, self.services.store.usage.read(partition, [STATE_ROW])[STATE_ROW]


@pytest.fixture(params=["table", "cosmos"])
def stack(request, azurite, monkeypatch) -> Iterator[Stack]:
    # "table-review": the table store with late events left for review, as an operator's console acts on them.
    kind, _, policy = request.param.partition("-")
    suffix = uuid.uuid4().hex[:12]
    names = {
        "METERING_USAGE_TABLE": "u",
        "METERING_CONFLICTS_TABLE": "c",
        "METERING_DEADLETTER_TABLE": "d",
        "METERING_TENANTS_TABLE": "t",
        "METERING_STATEMENTS_TABLE": "s",
        "METERING_LATE_EVENTS_TABLE": "l",
        "METERING_CONTROL_TABLE": "k",
        "METERING_JOURNAL_TABLE": "j",
        "METERING_LOCAL_QUEUE": "q",
        "METERING_NOTIFICATIONS_QUEUE": "n",
        "METERING_ARCHIVE_CONTAINER": "a",
        "METERING_DEADLETTER_CONTAINER": "x",
    }
    environment = {name: prefix + suffix for name, prefix in names.items()}
    if kind == "cosmos":
        # The local Cosmos server: its commits are not atomic, which a single writer never notices.
        server = request.getfixturevalue("cosmos_server")
        environment |= {
            "COSMOS__accountEndpoint": server.endpoint,
            "COSMOS_KEY": server.key,
            "COSMOS_NON_ATOMIC_LOCAL": "true",
            "COSMOS_DATABASE": f"t{suffix}",
        }
    environment |= {
        "AzureWebJobsStorage": azurite.connection_string,
        "METERING_STORE": kind,
        # The previous month closes on demand, and a late event of it is carried into this one.
        "METERING_GRACE_HOURS": "0",
        "METERING_LATE_EVENT_POLICY": policy or "adjust",
        # Two local partitions: the archive holds each message under the partition its queue stands for.
        "METERING_LOCAL_PARTITIONS": "2",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = Settings()  # type: ignore[call-arg]
    services = Services(settings)

    def aggregate(events: list[Any]) -> None:
        consume(hub_messages(events), services.ledger, services.dead_letters, services.clock, services.after_apply)

    feeds = [
        HubFeed(
            queue_client(azurite.connection_string, queue),
            aggregate,
            "events",
            hub=settings.event_hub_name,
            consumer_group=settings.event_hub_consumer_group,
            partition_id=f"local-{suffix[:8]}-{index}",
        )
        for index, queue in enumerate(settings.local_queues)
    ]
    for feed in feeds:
        feed.client.create_queue()
    yield Stack(settings, services, feeds, f"t-{suffix}")
    drop = getattr(services.store, "drop", None)
    if drop is not None:
        drop()
    services.store.close()


def line(report: RebuildReport, metric: str, period_start: datetime) -> Any:
    [found] = [t for t in report.totals if t.metric == metric and t.period_start == period_start]
    return found


def test_rebuild_finds_no_difference_after_a_mixed_run_and_exactly_a_corrupted_total(stack: Stack):
    now = datetime.now(UTC)
    this_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    previous = this_start - timedelta(hours=1)  # the previous month, well inside the oldest age ingest takes
    current = max(now - timedelta(seconds=1), this_start)
    window_start = now - timedelta(seconds=1)
    e = stack.event

    # The previous month: two events, one of them sent twice (a client's retry), a level meter too.
    stack.send(e("p1", "1.5", previous), e("p2", "2.25", previous), e("g1", "12", previous, "storage.gb_peak"))
    stack.send(e("p1", "1.5", previous))
    # This month: two events, the second of them cancelled once counted.
    stack.send(e("c1", "4", current), e("c2", "0.5", current))
    stack.deliver()
    stack.cancel("c2")
    # The previous month closes; then a late event of it arrives twice and is carried into this month once.
    report = stack.services.closer.run()
    assert [closed.tenant_id for closed in report.closed] == [stack.tenant]
    stack.send(e("late1", "10", previous))
    stack.deliver()
    stack.send(e("late1", "10", previous), e("c1", "4", current))
    stack.deliver()
    journal = stack.services.journal.list(stack.tenant)
    assert sorted(entry.kind for entry in journal) == [JournalKind.CANCEL, JournalKind.LATE_CARRY]
    window_end = datetime.now(UTC) + timedelta(seconds=1)

    clean = rebuild(stack.settings, window_start, window_end)
    assert clean.problems == []
    assert clean.differences == 0, [t for t in clean.totals if t.differs]
    assert clean.closed_periods == 1
    assert clean.journal_entries == 2
    assert clean.late == 2  # the late event, twice: carried by the journal, not by the replay
    assert clean.duplicates >= 2  # p1 and c1 again
    prev_line = line(clean, "api.requests", _start_of(previous))
    assert (prev_line.ours, prev_line.rebuilt, prev_line.ours_events) == (Decimal("3.75"), Decimal("3.75"), 2)
    level = line(clean, "storage.gb_peak", _start_of(previous))
    assert (level.ours, level.rebuilt) == (Decimal("12"), Decimal("12"))
    this_line = line(clean, "api.requests", this_start)
    # 4 + 0.5 - 0.5 (cancelled) + 10 (carried), two events left.
    assert (this_line.ours, this_line.rebuilt, this_line.rebuilt_events) == (Decimal("14"), Decimal("14"), 2)
    assert this_line.whole_period is False  # the window starts after this month did
    assert not clean.kept

    # Someone rewrites this month's total in the live store.
    partition, state = stack.state(current)
    data = {**state.data, "totals": {**state.data["totals"], "api.requests": ["15", 2]}}
    stack.services.store.usage.commit(partition, [Replace(STATE_ROW, data, state.etag)])

    runner = CliRunner()
    arguments = ["rebuild", "--from", window_start.isoformat(), "--to", window_end.isoformat()]
    saved = dict(os.environ)
    try:
        result = runner.invoke(app, [*arguments, "--json"])
        table = runner.invoke(app, [*arguments, "--differences-only"])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert result.exit_code == 1, result.output
    dirty = RebuildReport.model_validate_json(result.stdout)
    assert dirty.differences == 1
    [differs] = [t for t in dirty.totals if t.differs]
    assert (differs.tenant_id, differs.metric, differs.period_start) == (stack.tenant, "api.requests", this_start)
    assert (differs.ours, differs.rebuilt, differs.difference) == (Decimal("15"), Decimal("14"), Decimal("1"))
    assert table.exit_code == 1, table.output
    assert "1 of 3 totals in 2 periods differ" in table.stdout
    assert "storage.gb_peak" not in table.stdout  # only what differs


@pytest.mark.parametrize("stack", ["table-review"], indirect=True)
def test_rebuild_finds_no_difference_after_an_operator_applied_and_discarded_late_events(stack: Stack):
    now = datetime.now(UTC)
    this_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    previous = this_start - timedelta(hours=1)
    current = max(now - timedelta(seconds=1), this_start)
    window_start = now - timedelta(seconds=1)
    e = stack.event
    stack.send(e("p1", "1.5", previous), e("c1", "4", current))
    stack.deliver()
    stack.services.closer.run()
    stack.send(e("late1", "10", previous), e("late2", "3", previous))
    stack.deliver()
    operations = stack.services.http.operations
    items = operations.late_events({"tenant_id": stack.tenant}).json()["items"]
    ids = {item["event"]["event_id"]: item["id"] for item in items}
    actor = {"x-ms-client-principal-name": "ops@example.com"}
    for _ in range(2):  # a double click
        assert operations.late_apply(stack.tenant, ids["late1"], actor).status == 200
    discard = json.dumps({"reason": "a test event"}).encode()
    assert operations.late_discard(stack.tenant, ids["late2"], discard, actor).status == 200
    kinds = sorted(entry.kind for entry in stack.services.journal.list(stack.tenant))
    assert kinds == [JournalKind.LATE_APPLY, JournalKind.LATE_DISCARD]
    window_end = datetime.now(UTC) + timedelta(seconds=1)

    report = rebuild(stack.settings, window_start, window_end)
    assert report.problems == []
    assert report.differences == 0, [t for t in report.totals if t.differs]
    this_line = line(report, "api.requests", this_start)
    assert (this_line.ours, this_line.rebuilt) == (Decimal("14"), Decimal("14"))  # 4 + the applied 10
    prev_line = line(report, "api.requests", _start_of(previous))
    assert (prev_line.ours, prev_line.rebuilt) == (Decimal("1.5"), Decimal("1.5"))


def _start_of(instant: datetime) -> datetime:
    return instant.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def capture_file(stack: Stack, partition: str, records: list[tuple[int, datetime, bytes]]) -> None:
    """A file as Event Hubs Capture writes it: its own name format, whole-second text times, no annotation."""
    buffer = io.BytesIO()
    rows = [
        {
            "SequenceNumber": sequence,
            "Offset": str(sequence * 512),
            "EnqueuedTimeUtc": capture_time_text(at),
            "SystemProperties": {"x-opt-partition-key": stack.tenant},
            "Properties": {},
            "Body": body,
        }
        for sequence, at, body in records
    ]
    fastavro.writer(buffer, fastavro.parse_schema(SCHEMA), rows)
    name = f"{window_prefix(CAPTURE_NAMESPACE, stack.settings.event_hub_name, partition, records[0][1])}.avro"
    container = build_container(stack.settings, stack.settings.archive_container)
    with contextlib.suppress(ResourceExistsError):
        container.create_container()
    container.upload_blob(name, buffer.getvalue())


@pytest.mark.parametrize("stack", ["table"], indirect=True)
def test_rebuild_reads_captures_files_and_decodes_as_the_aggregator_does(stack: Stack):
    # Producers writing to the hub directly: events without ids (their id comes from the hub position),
    # an undecodable message, a message the trigger delivered twice. Capture archived each message once.
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    e = stack.event
    no_id = {k: v for k, v in e("", "2", at).items() if k != "event_id"}
    first = json.dumps([no_id, no_id, e("d1", "0.25", at)]).encode()
    second = json.dumps(e("d2", "5", at, "compute.seconds")).encode()
    third = json.dumps({**no_id, "quantity": "7"}).encode()
    broken = b'{"tenant_id": '
    # As the trigger names the hub's partitions (from its PartitionContext), and Capture names its files.
    hub = stack.settings.event_hub_name
    three, five = (hub_partition(CAPTURE_NAMESPACE + ".servicebus.windows.net", hub, p) for p in ("3", "5"))
    live = [
        HubMessage(first, three, 100, at),
        HubMessage(broken, three, 101, at + timedelta(seconds=1)),
        HubMessage(second, five, 40, at + timedelta(seconds=1)),
        HubMessage(third, five, 41, at + timedelta(seconds=2)),
    ]
    services = stack.services
    for batch in (live, live[2:]):  # the second delivery: counted once
        consume(batch, services.ledger, services.dead_letters, services.clock, services.after_apply)
    capture_file(stack, "3", [(m.sequence, m.enqueued, m.body) for m in live if m.partition == three])
    capture_file(stack, "5", [(m.sequence, m.enqueued, m.body) for m in live if m.partition == five])

    report = rebuild(stack.settings, at - timedelta(minutes=1), datetime.now(UTC) + timedelta(seconds=1))
    assert report.differences == 0, [t for t in report.totals if t.differs]
    assert (report.messages, report.dead_lettered) == (4, 1)
    totals = {t.metric: (t.rebuilt, t.rebuilt_events) for t in report.totals}
    # Two id-less events of one message are two events (their index tells them apart), as in the live store.
    assert totals == {"api.requests": (Decimal("11.25"), 4), "compute.seconds": (Decimal("5"), 1)}
