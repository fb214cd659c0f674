"""MeteringClient and AsyncMeteringClient against the dev host: every call over real HTTP, typed results and
typed errors."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from metering.client import (
    Accepted,
    AsyncMeteringClient,
    BadRequest,
    ConnectionFailed,
    Decision,
    GroupTotal,
    InvalidEvent,
    MeteringClient,
    NotFound,
    QuotaDecision,
    Unauthorized,
    UsageBucket,
    UsageResponse,
    ValidationFailed,
    new_event,
)
from metering.core.meters import Aggregation, GroupKind
from metering.core.periods import PeriodStatus
from tests.e2e.conftest import FUNCTION_KEY, eventually, run_async


@pytest.fixture
def client(devhost) -> Iterator[MeteringClient]:
    with MeteringClient(devhost.base_url, FUNCTION_KEY, source="e2e-client") as client:
        yield client


def settle(client: MeteringClient, tenant: str, total: str, count: int, metric: str = "api.requests") -> UsageResponse:
    def check() -> UsageResponse:
        usage = client.current_usage(tenant, metric)
        assert (usage.total, usage.event_count) == (Decimal(total), count)
        return usage

    return eventually(check)


def closed_port() -> socket.socket:
    """A port bound but not listening: connecting to it is refused, as when the service is down."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def test_record_fixes_the_id_and_a_resend_counts_once(client, tenant):
    when = datetime.now(UTC) - timedelta(minutes=1)
    first = client.record(tenant, "api.requests", "2.5", event_id="r-1", timestamp=when, dimensions={"region": "eu"})
    assert first == Accepted(accepted=1, event_ids=["r-1"])
    # The same event again, as a retry sends it: accepted, counted once.
    client.record(tenant, "api.requests", "2.5", event_id="r-1", timestamp=when, dimensions={"region": "eu"})
    generated = client.record(tenant, "api.requests", Decimal("0.000000000001"))
    assert len(generated.event_ids[0]) == 32
    usage = settle(client, tenant, "2.500000000001", 2)
    assert usage.unit == "count"
    assert usage.aggregation is Aggregation.SUM
    assert usage.status is PeriodStatus.OPEN
    assert usage.period_start <= datetime.now(UTC) < usage.period_end
    assert usage.last_updated is not None


def test_record_batch_splits_at_the_request_limit_and_keeps_the_order(client, tenant):
    events = [new_event(tenant, "api.requests", "0.1", source="batch") for _ in range(1000)]
    # Fields are accepted too, and more than 15 digits stay exact as text.
    events.append({"tenant_id": tenant, "metric": "api.requests", "quantity": "123456789012.000000000001"})
    accepted = client.record_batch(events)
    assert accepted.accepted == 1001
    assert accepted.event_ids[:1000] == [e.event_id for e in events[:1000]]
    assert len(set(accepted.event_ids)) == 1001
    settle(client, tenant, "123456789112.000000000001", 1001)


def test_current_usage_with_groups(client, tenant):
    client.record_batch(
        [
            new_event(tenant, "api.requests", 2, source="g", dimensions={"region": "eu"}),
            new_event(tenant, "api.requests", 3, source="g", dimensions={"region": "us"}),
            new_event(tenant, "api.requests", 4, source="g", dimensions={"region": "eu"}),
        ]
    )
    settle(client, tenant, "9", 3)
    usage = client.current_usage(tenant, "api.requests", group_by="region")
    assert usage.groups == [
        GroupTotal(key="eu", total=Decimal(6), event_count=2),
        GroupTotal(key="us", total=Decimal(3), event_count=1),
    ]
    period = client.current_usage(tenant, "api.requests", period=usage.period_start.date())
    assert (period.total, period.groups) == (Decimal(9), None)


def test_usage_history_by_day_and_hour(client, tenant):
    client.record(tenant, "api.requests", "1.5")
    settle(client, tenant, "1.5", 1)
    today = datetime.now(UTC).date()
    days = client.usage_history(tenant, "api.requests", today - timedelta(days=2), today)
    assert [bucket.start.date() for bucket in days] == [today - timedelta(days=i) for i in (2, 1, 0)]
    assert [(b.total, b.event_count) for b in days] == [(Decimal(0), 0), (Decimal(0), 0), (Decimal("1.5"), 1)]
    assert all(isinstance(bucket, UsageBucket) for bucket in days)
    hours = client.usage_history(tenant, "api.requests", today, today, granularity="hour")
    assert len(hours) == 24
    assert sum(bucket.total for bucket in hours) == Decimal("1.5")


def test_check_quota(client, tenant):
    client.record(tenant, "api.requests", "7")
    settle(client, tenant, "7", 1)
    decision = client.check_quota(tenant, "api.requests", requested=Decimal("2.5"))
    assert isinstance(decision, QuotaDecision)
    assert decision.decision is Decision.UNLIMITED
    assert (decision.current, decision.requested, decision.projected) == (Decimal(7), Decimal("2.5"), Decimal("9.5"))
    assert decision.remaining is None


def test_tenant_ids_with_every_allowed_character_reach_their_routes(client, tenant):
    odd = f"org:{tenant}.eu_1-x"
    client.record(odd, "api.requests", "4")
    settle(client, odd, "4", 1)
    assert client.check_quota(odd, "api.requests").current == Decimal(4)
    assert client.current_usage(tenant, "api.requests").event_count == 0


def test_an_invalid_event_is_a_422_naming_the_field(client, tenant):
    with pytest.raises(ValidationFailed) as raised:
        client.record(tenant, "no.such.meter", 1)
    error = raised.value
    assert error.status == 422
    assert not error.transient
    assert [(e.index, e.field) for e in error.errors] == [(0, "metric")]
    assert "not a meter of the catalog" in error.errors[0].message


def test_a_malformed_event_is_refused_before_sending(client, tenant):
    with pytest.raises(InvalidEvent) as raised:
        client.record(tenant, "api.requests", "twelve", dimensions={"Bad Key": "x"})
    assert {e.field for e in raised.value.errors} == {"quantity", "dimensions.Bad Key"}
    good = new_event(tenant, "api.requests", 1, source="s")
    with pytest.raises(InvalidEvent) as raised:
        client.record_batch([good, good, {"tenant_id": tenant, "metric": "api.requests", "quantity": "1e999"}])
    assert [(e.index, e.field) for e in raised.value.errors] == [(2, "quantity")]
    with pytest.raises(BadRequest) as bad:
        client.check_quota(tenant, "api.requests", "lots")
    assert bad.value.errors[0].field == "requested"
    assert client.current_usage(tenant, "api.requests").event_count == 0


def test_errors_carry_the_problem_details(client, devhost, tenant):
    with pytest.raises(NotFound, match="not a meter"):
        client.current_usage(tenant, "no.such.meter")
    today = datetime.now(UTC).date()
    with pytest.raises(BadRequest) as raised:
        client.usage_history(tenant, "api.requests", today, today - timedelta(days=1))
    assert raised.value.errors[0].field == "start"
    assert "end must not be before start" in raised.value.detail
    with MeteringClient(devhost.base_url, "wrong-key") as stranger, pytest.raises(Unauthorized) as denied:
        stranger.check_quota(tenant, "api.requests")
    assert denied.value.status == 401
    with pytest.raises(ValueError, match="key is required"):
        MeteringClient(devhost.base_url, "")


def test_no_service_is_a_transient_connection_failure(tenant):
    sock = closed_port()
    try:
        with MeteringClient(f"http://127.0.0.1:{sock.getsockname()[1]}/api", "k") as client:
            with pytest.raises(ConnectionFailed) as raised:
                client.record(tenant, "api.requests", 1)
            assert raised.value.transient
    finally:
        sock.close()


def test_async_client_every_call(devhost, tenant):
    async def scenario() -> None:
        async with AsyncMeteringClient(devhost.base_url, FUNCTION_KEY, source="e2e-async") as client:
            one = await client.record(tenant, "api.requests", "1", event_id="a-1", dimensions={"region": "eu"})
            assert one.event_ids == ["a-1"]
            batch = [new_event(tenant, "api.requests", "2", source="s") for _ in range(3)]
            assert (await client.record_batch(batch)).event_ids == [e.event_id for e in batch]
            deadline = time.monotonic() + 20
            while (usage := await client.current_usage(tenant, "api.requests")).event_count < 4:
                assert time.monotonic() < deadline, "usage did not arrive"
                await asyncio.sleep(0.05)
            assert usage.total == Decimal(7)
            grouped = await client.current_usage(tenant, "api.requests", group_by="region")
            # The three events without a region are a group of their own: the groups add up to the total.
            assert grouped.groups == [
                GroupTotal(key="eu", total=Decimal(1), event_count=1),
                GroupTotal(key=None, total=Decimal(6), event_count=3, kind=GroupKind.ABSENT),
            ]
            today = datetime.now(UTC).date()
            [day] = await client.usage_history(tenant, "api.requests", today, today)
            assert (day.total, day.event_count) == (Decimal(7), 4)
            decision = await client.check_quota(tenant, "api.requests", 3)
            assert (decision.decision, decision.projected) == (Decision.UNLIMITED, Decimal(10))
            with pytest.raises(ValidationFailed):
                await client.record(tenant, "api.requests", "-1")

    run_async(scenario())
