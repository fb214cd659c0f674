"""No batch can stall a partition: the store's failure classes, poison isolation, and the defects that once made
one batch fail the same way on every delivery (each case below failed before its fix).

Faults are either real (what Azurite answers to a request it refuses, a table that does not exist, a wrong key)
or injected at the store boundary (`tests/support.py`: a store that refuses commits holding a given row, as a
store refuses an oversized entity). The ledger, the consumer and the closer are never replaced.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from azure.data.tables import TableServiceClient, TableTransactionError
from azure.storage.blob import ContainerClient

from metering.core.events import UsageEvent
from metering.core.hub import Position
from metering.core.meters import Aggregation, parse_catalog
from metering.ingest.consumer import AfterApply, HubMessage, consume
from metering.ingest.deadletters import DeadLetters
from metering.ledger import rows
from metering.ledger.batch import DayDelta, SourcedEvent
from metering.ledger.cells import Cell
from metering.ledger.keys import STATE_ROW, marker_key, partition_key
from metering.ledger.ledger import Ledger, SystematicRejection, poison_allowance
from metering.notifications.outbox import DiscardSink
from metering.settings import LateEventPolicy
from metering.stores import Create, StoreRejected
from metering.stores.memory import MemoryStore
from metering.stores.table import TableStore, encode, rejected_code, request_bytes
from metering.transport import EmptyBacklog
from tests.integration.test_billing import NOW, build, event
from tests.support import FixedClock, ProbedStore, make_settings, wired

pytestmark = pytest.mark.store

DAY = datetime(2026, 11, 24, 9, tzinfo=UTC)
# Cancels look for events in periods up to now, not ahead of it.
NO_FUTURE = make_settings(max_future_minutes=0)


def usage(i: int | str, metric: str = "api.requests", quantity: Any = "1", **fields: Any) -> UsageEvent:
    fields.setdefault("tenant_id", "acme")
    fields.setdefault("timestamp", DAY)
    return UsageEvent(event_id=f"e{i}", metric=metric, quantity=quantity, source="test", **fields)


def sourced(events: list[UsageEvent], start: int = 0, partition: str = "0") -> list[SourcedEvent]:
    return [SourcedEvent(e, Position(partition, start + i)) for i, e in enumerate(events)]


def wide_catalog(dimensions: int = 1, max_group_values: int = 500) -> Any:
    group_by = [f"d{i}" for i in range(dimensions)]
    meter = {"unit": "count", "aggregation": "sum", "group_by": group_by, "max_group_values": max_group_values}
    return parse_catalog({"version": "t", "meters": {"calls": meter}})


def stored_groups(store: Any, schedule: Any, dimension: str = "d0") -> dict[str, Any]:
    state = store.usage.read(partition_key("acme", schedule.period_at("acme", DAY)), [STATE_ROW])[STATE_ROW]
    return state.data["today"]["m"]["calls"]["g"][dimension]


# -- defect 1: the same late event twice in one batch under `adjust` --------------------------------------------


def test_the_same_late_event_twice_in_one_batch_is_carried_once(store, azurite):
    pipe = build(store, azurite, LateEventPolicy.ADJUST)
    pipe.apply([event(1)])
    pipe.closer.run()
    twice = [event("late", quantity="2"), event("late", quantity="2")]
    pipe.apply(twice, start=10)  # a client retry after a 503, or a repeat inside one request
    assert pipe.total("acme", "api.requests", NOW) == ("2", 1, "open")
    pipe.apply(twice, start=20)  # and the whole batch again
    assert pipe.total("acme", "api.requests", NOW) == ("2", 1, "open")
    assert [item.event["event_id"] for item in pipe.late.list("acme")] == ["elate"]


# -- defect 2: a cancel switched off the group budget -----------------------------------------------------------


def test_a_cancel_leaves_the_group_budget_in_force(store, schedule, clock):
    services = wired(store, settings=NO_FUTURE, clock=clock, schedule=schedule, catalog=wide_catalog())
    ledger = services.ledger
    value = lambda i: f"{i:04d}" + "x" * 252  # noqa: E731 (the longest value a dimension takes)
    ledger.apply(sourced([usage(i, "calls", dimensions={"d0": value(i)}) for i in range(400)]))
    before = stored_groups(store, schedule)
    kept = len(before["v"])
    assert 0 < kept < 400  # the budget, not the per-dimension cap of 500, bounds them
    services.cancels.cancel("acme", "e:e0")
    ledger.apply(sourced([usage(i, "calls", dimensions={"d0": value(i)}) for i in range(400, 450)], start=400))
    after = stored_groups(store, schedule)
    # New values after the cancel still go to the overflow cell: the row does not grow past its budget.
    assert set(after["v"]) == set(before["v"])
    reader = services.usage
    period = schedule.period_at("acme", DAY)
    parts = reader.groups("acme", "calls", "d0", period)
    assert sum(g.total for g in parts) == reader.current("acme", "calls").total == Decimal(449)


# -- defect 3: sizes measured as the store encodes them -----------------------------------------------------


def test_group_values_are_budgeted_by_their_encoded_size():
    # Characters outside the Basic Multilingual Plane take 12 characters each in the row's ASCII JSON.
    meters = wide_catalog().meters
    delta = DayDelta(Aggregation.SUM, Cell(Decimal(300), 300))
    delta.groups["d0"] = {f"{i:03d}" + "\U0001f600" * 253: Cell(Decimal(1), 1) for i in range(300)}
    block = rows.add_to_block(None, day="2026-11-24", per_meter={"calls": delta}, meters=meters)
    group = block["m"]["calls"]["g"]["d0"]
    assert len(json.dumps(group["v"])) <= rows.GROUP_BUDGET
    assert block["gs"] <= rows.GROUP_BUDGET
    counted = sum(Decimal(cell[0]) for cell in group["v"].values()) + Decimal(group["o"][0])
    assert counted == Decimal(300)


def test_a_batch_over_the_request_limit_is_split_not_stalled(store, schedule, clock):
    # Each marker keeps its groups: 16 dimensions of 256 such characters make markers of about 50 KB, so 99 of
    # them are twice Cosmos DB's 2 MB batch and more than Table storage's 4 MiB transaction.
    catalog = wide_catalog(dimensions=16)
    probed = ProbedStore(store)
    ledger = wired(probed, clock=clock, schedule=schedule, catalog=catalog).ledger
    events = [
        usage(i, "calls", dimensions={f"d{d}": f"{i:03d}{d:02d}" + "\U0001f600" * 251 for d in range(16)})
        for i in range(99)
    ]
    result = ledger.apply(sourced(events))
    assert (result.applied, result.rejected) == (99, [])
    assert probed.probe.commits > 1
    reader = wired(store, clock=clock, schedule=schedule, catalog=catalog).usage
    assert reader.current("acme", "calls").total == Decimal(99)


def test_the_store_refuses_a_commit_over_its_limits_before_sending_it(store):
    table = store.usage
    with pytest.raises(StoreRejected) as twice:
        table.commit("p", [Create("k", {"a": 1}), Create("k", {"a": 1})])
    assert twice.value.code == "InvalidDuplicateRow"
    with pytest.raises(StoreRejected) as large:
        table.commit("p", [Create("big", {"x": "y" * table.limits.max_row_bytes})])
    assert large.value.code == "EntityTooLarge"
    share = table.limits.max_request_bytes // 16
    with pytest.raises(StoreRejected) as request:
        table.commit("p", [Create(f"r{i}", {"x": "y" * share}) for i in range(17)])
    assert request.value.code == "RequestBodyTooLarge"
    assert table.read("p", ["k", "big", *(f"r{i}" for i in range(17))]) == {}  # nothing was written


def test_the_table_store_measures_a_commit_at_least_as_the_sdk_sends_it(azurite):
    # What Azurite itself answers for requests it refuses, and the size the SDK really sends.
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    client = service.create_table(f"m{uuid.uuid4().hex}")
    entity = encode("p", "k", {"a": 1})
    with pytest.raises(TableTransactionError) as duplicate:
        client.submit_transaction([("create", entity), ("create", entity)])
    assert rejected_code(duplicate.value) == "InvalidDuplicateRow"
    wide = [("create", encode("q", f"r{i}", {"x": "y" * 63_000})) for i in range(70)]
    with pytest.raises(HttpResponseError) as too_large:
        client.submit_transaction(wide)
    assert rejected_code(too_large.value) == "RequestBodyTooLarge"
    sent: list[int] = []
    client.submit_transaction(
        [("create", encode("z", f"k{i}", {"v": "w" * (i * 997)})) for i in range(40)],
        raw_request_hook=lambda request: sent.append(len(request.http_request.body)),
    )
    counted = sum(request_bytes(encode("z", f"k{i}", {"v": "w" * (i * 997)}), None) for i in range(40))
    assert sent
    assert counted >= sent[0]


# -- defect 4: a cancel of a 30-digit quantity -----------------------------------------------------------------


def test_a_cancel_of_a_thirty_digit_quantity_is_exact(store, schedule, clock):
    services = wired(store, settings=NO_FUTURE, clock=clock, schedule=schedule)
    services.ledger.apply(sourced([usage(1, quantity="123456789012345678.123456789012"), usage(2, quantity="1")]))
    services.cancels.cancel("acme", "e:e1")
    assert services.usage.current("acme", "api.requests").total == Decimal(1)


# -- defect 5: more due periods than one page -------------------------------------------------------------------


def test_a_closer_run_records_as_closed_only_the_periods_it_closed(store, azurite):
    pipe = build(store, azurite)
    tenants = [f"t{i}" for i in range(7)]
    for i, tenant in enumerate(tenants):
        pipe.apply([event(1, tenant=tenant)], start=i)
    pipe.closer.page_size, pipe.closer.max_periods_per_run = 2, 3
    report = pipe.closer.run()
    closed = {c.tenant_id for c in report.closed}
    assert len(closed) == 3
    assert report.waiting == 4
    for tenant in tenants:
        status = pipe.total(tenant, "api.requests")[2]
        assert (status == "closed") == (tenant in closed), tenant
    # An event of a period still open counts in it, whatever a reader of the closer's progress may think.
    still_open = next(t for t in tenants if t not in closed)
    pipe.apply([event(2, tenant=still_open)], start=100)
    assert pipe.total(still_open, "api.requests") == ("3", 2, "grace")
    pipe.closer.run()
    pipe.closer.run()
    for tenant in tenants:
        assert pipe.total(tenant, "api.requests")[2] == "closed"
    assert pipe.statement(still_open, "2026-10-01").lines[0].quantity == Decimal(3)


def test_more_due_periods_than_one_page_are_all_closed_and_only_then_recorded_as_closed():
    # The defect's own size: 1,001 due periods against a page of 1,000 (the memory store keeps it to seconds).
    services = wired(
        MemoryStore(),
        settings=make_settings(grace_hours=24),
        clock=FixedClock(NOW),
        sink=DiscardSink(),
        backlog=EmptyBacklog(),
    )
    tenants = [f"t{i:04d}" for i in range(1001)]
    services.ledger.apply([SourcedEvent(event(1, tenant=t), Position("0", i)) for i, t in enumerate(tenants)])
    report = services.closer.run()
    assert len(report.closed) == 1001
    assert report.waiting == 0
    last = tenants[-1]
    assert services.store.statements.read(last, ["2026-10-01"])
    # A new event of the last period is late, and its closed total stays as it was.
    result = services.ledger.apply([SourcedEvent(event(2, tenant=last), Position("0", 2000))])
    assert (result.applied, len(result.late)) == (0, 1)
    period = services.schedule.period_at(last, event(2, tenant=last).timestamp)
    aggregate = services.usage.for_period(last, "api.requests", period)
    assert (aggregate.total, aggregate.event_count, aggregate.status.value) == (Decimal("1.5"), 1, "closed")


# -- failure classes at the store boundary ---------------------------------------------------------------


def test_a_transient_failure_fails_the_batch_and_its_redelivery_counts_once(store, schedule, clock):
    class Flaky:
        def __init__(self, inner: Any) -> None:
            self.inner, self.failures, self.name, self.limits = inner, 2, inner.name, inner.limits

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def commit(self, partition: str, operations: Any) -> list[str]:
            if self.failures:
                self.failures -= 1
                raise ServiceRequestError("connection refused")
            return self.inner.commit(partition, operations)

    probed = ProbedStore(store)
    probed.usage = Flaky(probed.usage)
    ledger = wired(probed, clock=clock, schedule=schedule).new_ledger(max_ops=8)
    batch = sourced([usage(i) for i in range(20)])
    for _attempt in range(2):
        with pytest.raises(ServiceRequestError):
            ledger.apply(batch)
    result = ledger.apply(batch)
    assert result.rejected == []
    assert wired(store, clock=clock, schedule=schedule).usage.current("acme", "api.requests").event_count == 20


def test_a_missing_table_and_a_wrong_key_are_transient(azurite, schedule, clock):
    name = f"n{uuid.uuid4().hex}"
    missing = TableStore.from_connection_string(azurite.connection_string, usage_table=name, conflicts_table=name + "c")
    with pytest.raises(HttpResponseError) as not_found:
        wired(missing, clock=clock, schedule=schedule).ledger.apply(sourced([usage(1)]))
    assert rejected_code(not_found.value) is None
    wrong_key = azurite.connection_string.replace("AccountKey=", "AccountKey=AAAA")
    forbidden = TableStore.from_connection_string(wrong_key, usage_table=name, conflicts_table=name + "c")
    with pytest.raises(HttpResponseError) as denied:
        forbidden.usage.commit("p", [Create("k", {"a": 1})])
    assert denied.value.status_code in (401, 403)
    assert rejected_code(denied.value) is None


def pipeline(store: Any, azurite: Any) -> tuple[Ledger, DeadLetters, AfterApply]:
    container = ContainerClient.from_connection_string(azurite.connection_string, f"dl{uuid.uuid4().hex[:20]}")
    services = build(store, azurite, dead_letter_container=lambda: container).services
    return services.ledger, services.dead_letters, services.after_apply


def messages(events: list[UsageEvent], start: int = 0) -> list[HubMessage]:
    return [
        HubMessage(e.model_dump_json().encode(), "ns|usage|0", start + i, NOW - timedelta(minutes=1))
        for i, e in enumerate(events)
    ]


def test_a_refused_event_is_dead_lettered_alone_and_the_partition_moves_on(store, azurite, clock):
    probed = ProbedStore(store)
    ledger, dead, after = pipeline(probed, azurite)
    ledger.clock = clock
    events = [usage(i, quantity="1.5") for i in range(120)]
    probed.probe.refuse = {marker_key("acme", "e:e37")}
    for delivery in range(2):  # the batch, then its redelivery: the same end state
        report = consume(messages(events), ledger, dead, clock, after)
        assert (delivery, report.dead_lettered) == (delivery, 1)
        reader = wired(store, clock=clock, schedule=ledger.schedule).usage
        assert reader.current("acme", "api.requests").total == Decimal("178.5")
    [letter] = store.dead_letters.partition("ns|usage|0")
    assert "EntityTooLarge" in letter.data["reason"]
    assert json.loads(letter.data["body"])["event_id"] == "e37"
    assert wired(store).progress.positions()["ns|usage|0"].sequence == 119


def test_refusals_beyond_the_allowance_fail_the_batch_as_systematic(store, azurite, clock):
    probed = ProbedStore(store)
    ledger, dead, after = pipeline(probed, azurite)
    ledger.clock = clock
    events = [usage(i) for i in range(300)]
    assert poison_allowance(300) == 3
    probed.probe.refuse = {marker_key("acme", f"e:e{i}") for i in (3, 100, 150, 299)}
    with pytest.raises(SystematicRejection):
        consume(messages(events), ledger, dead, clock, after)
    assert store.dead_letters.partition("ns|usage|0") == []
    probed.probe.refuse = set()  # the fault is mended: the retried batch counts everything, once
    consume(messages(events), ledger, dead, clock, after)
    aggregate = wired(store, clock=clock, schedule=ledger.schedule).usage.current("acme", "api.requests")
    assert (aggregate.total, aggregate.event_count) == (Decimal(300), 300)
