"""Billing over HTTP: tenant settings, quotas, ingest rate limits, closing periods into statements, late events
and cancels, end to end through the dev host (real HTTP, the local transport, real Azurite).

Closing periods closes every tenant's due periods on the shared dev host, so each test asserts only about its own
tenants. The previous calendar month is closable once it has ended (the e2e host runs with no grace window), and
its last two days are at most 33 days ago on any day of a month: inside the 35-day ingest window.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from azure.core.exceptions import ResourceExistsError

from metering.core.meters import load_catalog
from metering.quotas.plans import load_plans
from metering.transport.queue import queue_client
from tests.e2e.conftest import ADMIN_KEY, FUNCTION_KEY, eventually
from tests.e2e.test_api import problem_of

NOW = datetime.now(UTC).replace(microsecond=0)
THIS_START = NOW.replace(day=1, hour=0, minute=0, second=0)
PREV_START = (THIS_START - timedelta(days=1)).replace(day=1)
NEXT_START = (THIS_START + timedelta(days=32)).replace(day=1)
PREV_KEY = PREV_START.date().isoformat()
THIS_KEY = THIS_START.date().isoformat()
# The last hour of the previous calendar-month period (the default terms).
LATE_TS = THIS_START - timedelta(hours=1)
NOTIFICATIONS_QUEUE = "meteringnotifications"


def stamp(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def event(
    tenant: str,
    event_id: str,
    quantity: str = "1",
    metric: str = "api.requests",
    timestamp: datetime = NOW,
    **fields: Any,
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "tenant_id": tenant,
        "metric": metric,
        "quantity": quantity,
        "timestamp": stamp(timestamp),
        "source": "e2e-billing",
        **fields,
    }


def usage(api: httpx.Client, tenant: str, metric: str = "api.requests", period: str | None = None) -> dict[str, Any]:
    params = {"period": period} if period else {}
    response = api.get(f"/usage/{tenant}/{metric}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def totals(api: httpx.Client, tenant: str, metric: str = "api.requests", period: str | None = None) -> tuple[str, int]:
    body = usage(api, tenant, metric, period)
    return body["total"], body["event_count"]


def settle(
    api: httpx.Client, tenant: str, expected: tuple[str, int], metric: str = "api.requests", period: str | None = None
) -> None:
    def check() -> bool:
        assert totals(api, tenant, metric, period) == expected
        return True

    eventually(check)


def accepted(api: httpx.Client, events: list[dict[str, Any]]) -> None:
    response = api.post("/events", json=events)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(events)


def quota(api: httpx.Client, tenant: str, requested: str, metric: str = "api.requests") -> dict[str, Any]:
    response = api.get(f"/quota/{tenant}/{metric}", params={"requested": requested})
    assert response.status_code == 200, response.text
    return response.json()


def close(admin: httpx.Client) -> dict[str, Any]:
    response = admin.post("/manage/periods/close")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"closed", "waiting", "sent"}
    return body


def closed_for(report: dict[str, Any], tenant: str) -> list[tuple[datetime, datetime]]:
    return [
        (instant(c["period_start"]), instant(c["period_end"])) for c in report["closed"] if c["tenant_id"] == tenant
    ]


def late_items(api: httpx.Client, tenant: str) -> list[dict[str, Any]]:
    response = api.get(f"/late-events/{tenant}")
    assert response.status_code == 200, response.text
    return response.json()["items"]


def statement(api: httpx.Client, tenant: str, period: str, **headers: str) -> httpx.Response:
    return api.get(f"/statements/{tenant}", params={"period": period}, headers=headers)


def cancel(api: httpx.Client, tenant: str, body: Any) -> httpx.Response:
    return api.post(f"/events/{tenant}/cancel", json=body)


@pytest.fixture
def admin(devhost: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=devhost.base_url, headers={"x-functions-key": ADMIN_KEY}, timeout=30) as client:
        yield client


@pytest.fixture
def on_free(admin: httpx.Client) -> Any:
    """Puts a tenant on the free plan (limits and an ingest rate; the default plan has neither)."""

    def assign(tenant: str) -> str:
        assert admin.put(f"/manage/tenants/{tenant}", json={"plan": "free"}).status_code == 200
        return tenant

    return assign


@pytest.fixture
def other_tenant(tenant: str, on_free: Any) -> str:
    return on_free(tenant + "-b")


class Notifications:
    """What the app sent to the notifications queue. Only these tests read the queue, so each read takes the
    messages off it and keeps them, and a test looks for its own tenant's."""

    def __init__(self, connection: str) -> None:
        self.client = queue_client(connection, NOTIFICATIONS_QUEUE)
        # The app creates the queue with its first message; reading may come first.
        with contextlib.suppress(ResourceExistsError):
            self.client.create_queue()
        self.seen: list[dict[str, Any]] = []

    def about(self, tenant: str) -> list[dict[str, Any]]:
        if self.client.get_queue_properties().approximate_message_count:
            for message in self.client.receive_messages(messages_per_page=32, visibility_timeout=60):
                self.seen.append(json.loads(message.content))
                self.client.delete_message(message)
        return [m for m in self.seen if m.get("tenant_id") == tenant]


@pytest.fixture(scope="session")
def notifications(devhost: Any) -> Iterator[Notifications]:
    sent = Notifications(os.environ["AzureWebJobsStorage"])
    with sent.client:
        yield sent


# -- operator routes -----------------------------------------------------------------------------------------


def test_operator_routes_take_only_the_admin_key(devhost, api, admin, tenant, previous_month):
    with httpx.Client(base_url=devhost.base_url, timeout=30) as bare:
        refused = [
            (api, {}),  # the function key
            (bare, {}),  # no key
            (bare, {"x-functions-key": "wrong"}),
        ]
        for client, headers in refused:
            problem_of(client.get(f"/manage/tenants/{tenant}", headers=headers), 401)
            problem_of(client.put(f"/manage/tenants/{tenant}", json={"plan": "pro"}, headers=headers), 401)
            problem_of(client.post("/manage/periods/close", headers=headers), 401)
        problem_of(bare.put(f"/manage/tenants/{tenant}", params={"code": FUNCTION_KEY}, json={"plan": "pro"}), 401)
        assert bare.get(f"/manage/tenants/{tenant}", params={"code": ADMIN_KEY}).json()["plan"] == "unlimited"
    # None of the refused changes happened; the admin key's does. (This closes periods: `previous_month` has
    # closed its own first.)
    assert admin.get(f"/manage/tenants/{tenant}").json()["plan"] == "unlimited"
    assert admin.put(f"/manage/tenants/{tenant}", json={"plan": "pro"}).status_code == 200
    assert admin.get(f"/manage/tenants/{tenant}").json()["plan"] == "pro"
    close(admin)


# -- tenant settings -----------------------------------------------------------------------------------------


def boundary_after(moment: datetime) -> datetime:
    """The first calendar-month (UTC) boundary at or after `moment`."""
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start if start == moment else (start + timedelta(days=32)).replace(day=1)


def test_tenant_settings_round_trip(api, admin, tenant):
    path = f"/manage/tenants/{tenant}"
    default = {
        "tenant_id": tenant,
        "plan": "unlimited",
        "limits": {},
        "billing_anchor_day": 1,
        "timezone": "UTC",
        "terms_effective_from": None,
        "current_period": {"start": stamp(THIS_START), "end": stamp(NEXT_START)},
        "terms": [{"billing_anchor_day": 1, "timezone": "UTC", "effective_from": None}],
        "plan_history": [],
        "tokens_not_before": None,
        "stripe_customer_id": None,
        "marketplace_resource_id": None,
        "marketplace_plan_id": None,
        "shards": 1,
        "shards_effective_from": None,
        "shard_history": [{"shards": 1, "effective_from": None}],
    }
    assert admin.get(path).json() == default

    assigned = datetime.now(UTC)
    put = admin.put(
        path,
        json={
            "plan": "pro",
            "limits": {"api.requests": {"soft": "80", "hard": "100"}, "storage.gb_peak": {"hard": 2.5}},
        },
    )
    assert put.status_code == 200, put.text
    limits = {"api.requests": {"soft": "80", "hard": "100"}, "storage.gb_peak": {"soft": None, "hard": "2.5"}}
    [change] = put.json()["plan_history"]
    assert change["plan"] == "pro"
    assert assigned <= instant(change["effective_from"]) <= datetime.now(UTC)
    assert put.json() == {**default, "plan": "pro", "limits": limits, "plan_history": [change]}
    assert admin.get(path).json() == put.json()

    # Every field is optional: what is left out stays; a metric's limits set to null remove its override.
    assert admin.put(path, json={}).json() == put.json()
    removed = admin.put(path, json={"limits": {"storage.gb_peak": None}}).json()
    assert (removed["plan"], removed["limits"]) == ("pro", {"api.requests": {"soft": "80", "hard": "100"}})

    # New terms wait for the first period boundary at least 10 minutes away; the current period stays.
    before = datetime.now(UTC)
    changed = admin.put(path, json={"billing_anchor_day": 15, "timezone": "Europe/Berlin"})
    after = datetime.now(UTC)
    assert changed.status_code == 200, changed.text
    body = changed.json()
    start = instant(body["terms_effective_from"])
    assert start in {boundary_after(before + timedelta(minutes=10)), boundary_after(after + timedelta(minutes=10))}
    assert (body["billing_anchor_day"], body["timezone"]) == (15, "Europe/Berlin")
    assert body["current_period"] == default["current_period"]
    assert body["terms"] == [
        {"billing_anchor_day": 1, "timezone": "UTC", "effective_from": None},
        {"billing_anchor_day": 15, "timezone": "Europe/Berlin", "effective_from": body["terms_effective_from"]},
    ]
    assert admin.get(path).json() == body
    # The schedule follows: the period from the boundary ends at local midnight of the 15th in Berlin, and the
    # next one runs from that midnight to the next month's.
    berlin = ZoneInfo("Europe/Berlin")
    fifteenth = datetime(start.year, start.month, 15, tzinfo=berlin).astimezone(UTC)
    following = datetime(start.year + start.month // 12, start.month % 12 + 1, 15, tzinfo=berlin).astimezone(UTC)
    first = usage(api, tenant, period=start.date().isoformat())
    assert (instant(first["period_start"]), instant(first["period_end"])) == (start, fifteenth)
    second = usage(api, tenant, period=fifteenth.astimezone(berlin).date().isoformat())
    assert (instant(second["period_start"]), instant(second["period_end"])) == (fifteenth, following)

    # Changing back before the new terms apply cancels them.
    back = admin.put(path, json={"billing_anchor_day": 1, "timezone": "UTC"}).json()
    assert back["terms"] == default["terms"]
    assert back["terms_effective_from"] is None
    restored = usage(api, tenant, period=start.date().isoformat())
    assert instant(restored["period_end"]) == (start + timedelta(days=32)).replace(day=1)

    # Shards too wait for a period boundary: the current period keeps one.
    sharded = admin.put(path, json={"shards": 4}).json()
    assert (sharded["shards"], instant(sharded["shards_effective_from"])) == (4, start)
    assert sharded["shard_history"] == [
        {"shards": 1, "effective_from": None},
        {"shards": 4, "effective_from": sharded["shards_effective_from"]},
    ]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"plan": "gold"}, {"plan"}),
        ({"plan": "pro", "limits": {"no.such.meter": {"hard": "1"}}}, {"limits.no.such.meter"}),
        ({"plan": "pro", "limits": {"api.requests": {"soft": "100", "hard": "80"}}}, {"limits.api.requests.soft"}),
        ({"plan": "pro", "limits": {"api.requests": {"hard": "-1"}}}, {"limits.api.requests.hard"}),
        ({"plan": "pro", "limits": {"api.requests": {"hard": "lots"}}}, {"limits.api.requests.hard"}),
        ({"plan": "pro", "limits": {"api.requests": {"hard": "1e30"}}}, {"limits.api.requests.hard"}),
        ({"plan": "pro", "limits": {"api.requests": {}}}, {"limits.api.requests"}),
        ({"plan": "pro", "limits": {"api.requests": {"hard": "5", "max": "6"}}}, {"limits.api.requests.max"}),
        ({"plan": "pro", "timezone": "Mars/Olympus_Mons"}, {"timezone"}),
        ({"plan": "pro", "billing_anchor_day": 0}, {"billing_anchor_day"}),
        ({"plan": "pro", "billing_anchor_day": 29}, {"billing_anchor_day"}),
        ({"plan": "pro", "billing_anchor_day": "5"}, {"billing_anchor_day"}),
        ({"shards": 0}, {"shards"}),
        ({"shards": 17}, {"shards"}),
        ({"shards": "4"}, {"shards"}),
        ({"plan": "pro", "colour": "red"}, {"colour"}),
        ({"plan": "gold", "timezone": "Nowhere/Else"}, {"plan", "timezone"}),
        ({"plan": "pro", "plan_effective_from": stamp(NOW + timedelta(days=1))}, {"plan_effective_from"}),
        ({"plan": "pro", "plan_effective_from": "2026-01-01T00:00:00"}, {"plan_effective_from"}),
        ({"plan_effective_from": stamp(THIS_START)}, {"plan_effective_from"}),
    ],
)
def test_tenant_settings_that_break_a_rule_are_422_and_change_nothing(admin, tenant, body, fields):
    path = f"/manage/tenants/{tenant}"
    baseline = admin.put(path, json={"plan": "enterprise", "limits": {"api.requests": {"hard": "7"}}}).json()
    problem = problem_of(admin.put(path, json=body), 422)
    assert {e["field"] for e in problem["errors"]} == fields
    assert all(e["message"] for e in problem["errors"])
    assert admin.get(path).json() == baseline


def test_tenant_settings_bad_requests_are_400(admin):
    problem_of(admin.put("/manage/tenants/acme", content=b"{not json"), 400)
    problem_of(admin.put("/manage/tenants/acme", json=["plan", "pro"]), 400)
    body = problem_of(admin.get("/manage/tenants/bad%20tenant"), 400)
    assert body["errors"][0]["field"] == "tenant_id"


# -- quotas --------------------------------------------------------------------------------------------------


def test_quota_at_and_around_both_limits(api, admin, tenant, on_free):
    on_free(tenant)
    accepted(api, [event(tenant, "q1", "2.5"), event(tenant, "q2", "3.5")])
    settle(api, tenant, ("6", 2))

    # The plan's pair (free: soft 8000, hard 10000).
    def decision(requested: str) -> str:
        return quota(api, tenant, requested)["decision"]

    assert [decision(r) for r in ("7994", "7995", "9994", "9995", "9994.000000000001")] == [
        "allowed",
        "warning",
        "warning",
        "denied",
        "denied",
    ]
    at_hard = quota(api, tenant, "9994")
    assert (at_hard["current"], at_hard["projected"], at_hard["remaining"]) == ("6", "10000", "0")
    assert (at_hard["soft_limit"], at_hard["hard_limit"]) == ("8000", "10000")
    assert instant(at_hard["period_end"]) == NEXT_START

    # An override's pair replaces the plan's.
    path = f"/manage/tenants/{tenant}"
    assert admin.put(path, json={"limits": {"api.requests": {"soft": "8", "hard": "10"}}}).status_code == 200
    assert [decision(r) for r in ("0", "2", "2.000000000001", "4", "4.000000000001", "5")] == [
        "allowed",
        "allowed",
        "warning",
        "warning",  # exactly at the hard limit is not denied
        "denied",
        "denied",
    ]
    assert quota(api, tenant, "2")["remaining"] == "2"
    assert quota(api, tenant, "5")["remaining"] == "0"

    # A hard-only override does not inherit the plan's soft limit: no warning at 8500.
    assert admin.put(path, json={"limits": {"api.requests": {"hard": "9000"}}}).status_code == 200
    hard_only = quota(api, tenant, "8494")
    assert (hard_only["decision"], hard_only["soft_limit"], hard_only["hard_limit"]) == ("allowed", None, "9000")
    assert [decision(r) for r in ("8994", "8995")] == ["allowed", "denied"]

    # A soft-only limit warns and never denies.
    assert admin.put(path, json={"limits": {"api.requests": {"soft": "5"}}}).status_code == 200
    soft_only = quota(api, tenant, "999999999999999999")
    assert (soft_only["decision"], soft_only["hard_limit"], soft_only["remaining"]) == ("warning", None, None)
    assert decision("0") == "warning"  # 6 is already above 5

    # Removing the override brings the plan's pair back; another plan brings its own.
    assert admin.put(path, json={"limits": {"api.requests": None}}).status_code == 200
    assert (quota(api, tenant, "0")["soft_limit"], decision("9995")) == ("8000", "denied")
    assert admin.put(path, json={"plan": "unlimited"}).status_code == 200
    assert decision("9995") == "unlimited"
    assert admin.put(path, json={"plan": "pro"}).status_code == 200
    assert [decision(r) for r in ("999994", "999995")] == ["warning", "denied"]


def test_quota_of_a_time_weighted_meter_compares_its_level_plus_the_request(api, admin, tenant):
    assert admin.put(f"/manage/tenants/{tenant}", json={"plan": "pro"}).status_code == 200  # storage.gb hard 500
    accepted(
        api,
        [
            event(tenant, "s1", "300", metric="storage.gb", resource_id="vol-a"),
            event(tenant, "s2", "120", metric="storage.gb", resource_id="vol-b"),
        ],
    )
    eventually(lambda: totals(api, tenant, "storage.gb")[1] == 2)
    small = quota(api, tenant, "50", metric="storage.gb")
    assert (small["decision"], small["current"], small["projected"], small["remaining"]) == (
        "allowed",
        "420",
        "470",
        "30",
    )
    assert quota(api, tenant, "80", metric="storage.gb")["decision"] == "allowed"
    assert quota(api, tenant, "80.5", metric="storage.gb")["decision"] == "denied"
    # The free plan does not limit storage.gb.
    assert admin.put(f"/manage/tenants/{tenant}", json={"plan": "free"}).status_code == 200
    assert quota(api, tenant, "100000", metric="storage.gb")["decision"] == "unlimited"


def test_threshold_alerts_are_sent_once_per_threshold(api, admin, tenant, notifications):
    assert admin.put(f"/manage/tenants/{tenant}", json={"limits": {"api.requests": {"hard": "10"}}}).status_code == 200
    first = [event(tenant, f"a{i}", "1") for i in range(8)]
    accepted(api, first)
    settle(api, tenant, ("8", 8))

    def ids() -> list[str]:
        return sorted(m["id"] for m in notifications.about(tenant))

    prefix = f"quota.threshold_crossed:{tenant}:api.requests:{THIS_KEY}:"
    eventually(lambda: ids() == [prefix + "80"])
    accepted(api, first)  # a replay crosses nothing again
    accepted(api, [event(tenant, "a8", "1.5"), event(tenant, "a9", "0.5")])
    settle(api, tenant, ("10", 10))
    eventually(lambda: ids() == [prefix + "100", prefix + "80"])
    [alert] = [m for m in notifications.about(tenant) if m["id"] == prefix + "100"]
    assert alert["type"] == "quota.threshold_crossed"
    assert (alert["metric"], alert["threshold_percent"], alert["hard_limit"]) == ("api.requests", "100", "10")
    assert instant(alert["period_start"]) == THIS_START
    assert alert["usage"] == "10"  # 8 -> 10 in one message: the batch that crossed

    # Usage that drops below a threshold and crosses it again sends nothing new.
    assert cancel(api, tenant, {"event_id": "a8"}).status_code == 200
    assert totals(api, tenant) == ("8.5", 9)
    accepted(api, [event(tenant, "a10", "1.5")])
    settle(api, tenant, ("10", 10))
    # The feed runs a batch's alert checks before it takes the next batch: once this later event counts, the
    # batch that crossed again has been checked.
    accepted(api, [event(tenant, "a11", "0.5")])
    settle(api, tenant, ("10.5", 11))
    assert ids() == [prefix + "100", prefix + "80"]


# -- ingest rate limits --------------------------------------------------------------------------------------


def test_over_the_burst_is_429_and_the_refused_request_is_not_counted(api, tenant, on_free):
    on_free(tenant)
    # free plan: 50 events/s, burst 500. The first request empties the bucket; refilling 500 takes 10 s.
    accepted(api, [event(tenant, f"ok{i}") for i in range(500)])
    refused = api.post("/events", json=[event(tenant, f"no{i}", "1000") for i in range(500)])
    body = problem_of(refused, 429)
    assert "retry" in body["detail"].lower()
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 10

    # One event is admitted again as soon as one token is back (about 20 ms).
    def probe() -> bool:
        response = api.post("/events", json=event(tenant, "probe", "0.5"))
        assert response.status_code == 202, response.text
        return True

    eventually(probe)
    # Had any of the refused events been forwarded, it would count 1000.
    settle(api, tenant, ("500.5", 501))


def test_a_request_over_any_tenants_rate_is_refused_whole(api, tenant, other_tenant, on_free):
    on_free(tenant)
    accepted(api, [event(tenant, f"fill{i}") for i in range(500)])
    mixed = [event(other_tenant, f"b{i}") for i in range(300)] + [event(tenant, f"a{i}") for i in range(500)]
    problem_of(api.post("/events", json=mixed), 429)
    # Nothing was taken from the other tenant's allowance either: its whole burst still goes through.
    accepted(api, [event(other_tenant, f"c{i}") for i in range(500)])
    settle(api, other_tenant, ("500", 500))
    settle(api, tenant, ("500", 500))


def test_more_events_of_a_tenant_than_its_burst_in_one_request_is_413(api, tenant, on_free):
    on_free(tenant)
    body = problem_of(api.post("/events", json=[event(tenant, f"e{i}") for i in range(501)]), 413)
    assert "500" in body["detail"]
    accepted(api, [event(tenant, "after", "2")])
    settle(api, tenant, ("2", 1))


@pytest.mark.parametrize("plan", ["unlimited", "enterprise"])
def test_plans_without_a_rate_are_not_limited(api, admin, tenant, plan):
    assert admin.put(f"/manage/tenants/{tenant}", json={"plan": plan}).status_code == 200
    accepted(api, [event(tenant, f"x{i}") for i in range(501)])
    accepted(api, [event(tenant, f"y{i}") for i in range(501)])
    settle(api, tenant, ("1002", 1002))


# -- closing periods, statements, late events ----------------------------------------------------------------

CLOSING_EXPECTED = {
    "api.requests": ("3.75", 2),
    "compute.seconds": ("30.125", 1),
    "storage.gb_peak": ("12", 2),
    "reports.generated": ("1", 1),
}


def closing_events(tenant: str) -> list[dict[str, Any]]:
    return [
        event(tenant, "p1", "1.5", timestamp=LATE_TS, dimensions={"region": "eu"}),
        event(tenant, "p2", "2.25", timestamp=LATE_TS - timedelta(hours=5), idempotency_key="order-p2"),
        event(tenant, "p3", "30.125", metric="compute.seconds", timestamp=LATE_TS),
        event(tenant, "p4", "12", metric="storage.gb_peak", timestamp=LATE_TS - timedelta(hours=2)),
        event(tenant, "p5", "7", metric="storage.gb_peak", timestamp=LATE_TS),
        event(tenant, "p6", "9", metric="reports.generated", timestamp=LATE_TS),
    ]


def cancelling_events(tenant: str) -> list[dict[str, Any]]:
    return [
        event(tenant, "k1", "10", timestamp=LATE_TS),
        # A day earlier: its cells have moved from the period's state row to their day row.
        event(tenant, "k2", "0.25", timestamp=LATE_TS - timedelta(days=1), dimensions={"region": "us"}),
    ]


@dataclass
class PreviousMonth:
    """Two tenants' usage in the previous period, what was read of it in its grace window, and the one close
    that closed it. (`cancel_in_grace` and `after_cancel` belong to the cancelling tenant.)"""

    closing: str
    cancelling: str
    in_grace: dict[str, dict[str, Any]]
    statement_in_grace: httpx.Response
    cancel_in_grace: httpx.Response
    after_cancel: dict[str, Any]
    report: dict[str, Any]
    closed_between: tuple[datetime, datetime]
    # On pro from the previous period's start (a change backdated while it was in grace), so rated with it.
    priced: str


def priced_events(tenant: str) -> list[dict[str, Any]]:
    return [
        event(tenant, "r1", "250000", timestamp=LATE_TS),
        event(tenant, "r2", "12.5", metric="storage.gb_peak", timestamp=LATE_TS),
        event(tenant, "r3", "150000000001", metric="transfer.bytes", timestamp=LATE_TS),
    ]


@pytest.fixture
def previous_month(previous_period: Any) -> PreviousMonth:
    """The session's previous period, written, read and corrected, then closed by one close (conftest)."""
    return previous_period[1]


def build_previous_month(devhost: Any) -> PreviousMonth:
    """Once a close has run, every period that ended before it is closed for every tenant, and an event of it
    is late even for a tenant that had no usage in it. So this module's usage of the previous period is all
    written, read and corrected first, and closed by one close (conftest `previous_period` calls this after the
    other modules' writes)."""
    closing, cancelling, priced = (f"t-{uuid.uuid4().hex[:12]}" for _ in range(3))
    with (
        httpx.Client(base_url=devhost.base_url, headers={"x-functions-key": FUNCTION_KEY}, timeout=30) as api,
        httpx.Client(base_url=devhost.base_url, headers={"x-functions-key": ADMIN_KEY}, timeout=30) as admin,
    ):
        backdated = admin.put(
            f"/manage/tenants/{priced}", json={"plan": "pro", "plan_effective_from": PREV_KEY + "T00:00:00Z"}
        )
        assert backdated.status_code == 200, backdated.text
        accepted(
            api,
            [
                *closing_events(closing),
                event(closing, "c1", "4"),
                *cancelling_events(cancelling),
                *priced_events(priced),
            ],
        )
        settle(api, priced, ("150000000001", 1), metric="transfer.bytes", period=PREV_KEY)
        for metric, pair in CLOSING_EXPECTED.items():
            settle(api, closing, pair, metric=metric, period=PREV_KEY)
        settle(api, closing, ("4", 1))
        settle(api, cancelling, ("10.25", 2), period=PREV_KEY)
        in_grace = {metric: usage(api, closing, metric, PREV_KEY) for metric in CLOSING_EXPECTED}
        statement_in_grace = statement(api, closing, PREV_KEY)
        cancel_in_grace = cancel(api, cancelling, {"event_id": "k2"})
        days = (LATE_TS - timedelta(days=1)).date().isoformat(), LATE_TS.date().isoformat()
        after_cancel = {
            "totals": totals(api, cancelling, period=PREV_KEY),
            "days": api.get(
                f"/usage/{cancelling}/api.requests/history", params={"start": days[0], "end": days[1]}
            ).json()["items"],
            "groups": api.get(
                f"/usage/{cancelling}/api.requests", params={"period": PREV_KEY, "group_by": "region"}
            ).json()["groups"],
        }
        before = datetime.now(UTC).replace(microsecond=0)
        report = close(admin)
        after = datetime.now(UTC)
    return PreviousMonth(
        closing,
        cancelling,
        in_grace,
        statement_in_grace,
        cancel_in_grace,
        after_cancel,
        report,
        (before, after),
        priced,
    )


def test_a_period_closes_into_a_statement_and_stays_closed(api, admin, previous_month, notifications):
    tenant = previous_month.closing
    # In the grace window: the totals of every meter kind, and no statement yet.
    for metric, pair in CLOSING_EXPECTED.items():
        body = previous_month.in_grace[metric]
        assert (body["status"], body["total"], body["event_count"]) == ("grace", *pair)
        assert (instant(body["period_start"]), instant(body["period_end"])) == (PREV_START, THIS_START)
    problem_of(previous_month.statement_in_grace, 404)

    # The close closed the ended period, not the open one.
    assert closed_for(previous_month.report, tenant) == [(PREV_START, THIS_START)]
    assert previous_month.report["sent"] >= 1

    response = statement(api, tenant, PREV_KEY)
    assert response.status_code == 200, response.text
    closed = response.json()
    before, after = previous_month.closed_between
    assert before <= instant(closed["closed_at"]) <= after
    lines = [
        {
            "metric": metric,
            "kind": "usage",
            "unit": previous_month.in_grace[metric]["unit"],
            "aggregation": previous_month.in_grace[metric]["aggregation"],
            "quantity": CLOSING_EXPECTED[metric][0],
            "event_count": CLOSING_EXPECTED[metric][1],
            # The default plan prices nothing: rated, at zero.
            "amount": "0.00",
            "tiers": None,
        }
        for metric in sorted(CLOSING_EXPECTED)
    ]
    assert [(line["unit"], line["aggregation"]) for line in lines] == [
        ("count", "sum"),
        ("second", "sum"),
        ("report", "count"),
        ("GB", "max"),
    ]
    assert closed == {
        "tenant_id": tenant,
        "period_start": stamp(PREV_START),
        "period_end": stamp(THIS_START),
        "closed_at": closed["closed_at"],
        "catalog_version": load_catalog().version,
        "currency": "USD",
        "plan": "unlimited",
        "plan_version": load_plans().version,
        "lines": lines,
        "subtotal": "0.00",
    }
    # The same as CSV.
    as_csv = statement(api, tenant, PREV_KEY, accept="text/csv")
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [
        (r["tenant_id"], instant(r["period_start"]), instant(r["period_end"]), r["catalog_version"]) for r in rows
    ] == [(tenant, PREV_START, THIS_START, load_catalog().version)] * len(lines)
    assert [
        {
            "metric": r["metric"],
            "kind": r["kind"],
            "unit": r["unit"],
            "aggregation": r["aggregation"],
            "quantity": r["quantity"],
            "event_count": int(r["event_count"]),
            "amount": r["amount"],
            "tiers": None,
        }
        for r in rows
    ] == lines
    assert {(r["currency"], r["plan"], r["plan_version"]) for r in rows} == {("USD", "unlimited", load_plans().version)}
    # All of the tenant's statements; the open period and bad dates.
    assert api.get(f"/statements/{tenant}").json() == {"items": [closed]}
    problem_of(statement(api, tenant, THIS_KEY), 404)
    problem_of(statement(api, tenant, "2026-13-01"), 400)
    problem_of(statement(api, tenant, "last-month"), 400)

    # Usage reads say closed, with the same totals; the open period goes on.
    for metric, pair in CLOSING_EXPECTED.items():
        body = usage(api, tenant, metric, PREV_KEY)
        assert (body["status"], body["total"], body["event_count"]) == ("closed", *pair)
    current = usage(api, tenant)
    assert (current["status"], current["total"], current["event_count"]) == ("open", "4", 1)

    # period.closed went out with a stable id and the statement.
    def sent() -> list[dict[str, Any]]:
        return [m for m in notifications.about(tenant) if m["type"] == "period.closed"]

    [message] = eventually(sent)
    assert message["id"] == f"period.closed:{tenant}:{PREV_KEY}"
    assert message["statement"] == closed

    # Closing again closes nothing of this tenant and changes nothing.
    assert closed_for(close(admin), tenant) == []
    assert statement(api, tenant, PREV_KEY).json() == closed

    # A replay of an event counted before the close is a duplicate, not a late event; a new event of the
    # closed period is late. They travel in one message, so once the late one is recorded the replay was seen.
    assert late_items(api, tenant) == []
    accepted(api, [closing_events(tenant)[0], event(tenant, "late1", "100", timestamp=LATE_TS)])
    [late] = eventually(lambda: late_items(api, tenant))
    assert late["event"]["event_id"] == "late1"
    assert late["event"]["quantity"] == "100"
    assert late["period_start"] == PREV_KEY
    assert "closed" in late["reason"]
    assert late["carried_to"] is None  # policy review: it waits for an operator
    assert instant(late["detected"]) >= after.replace(microsecond=0)

    # A late event sent again is recorded once.
    accepted(api, [event(tenant, "late1", "100", timestamp=LATE_TS), event(tenant, "late2", "5", timestamp=LATE_TS)])
    eventually(lambda: len(late_items(api, tenant)) == 2)
    assert sorted(item["event"]["event_id"] for item in late_items(api, tenant)) == ["late1", "late2"]

    # The closed period's totals and statement never changed, and the late events were not counted now.
    for metric, pair in CLOSING_EXPECTED.items():
        assert totals(api, tenant, metric, PREV_KEY) == pair
    assert statement(api, tenant, PREV_KEY).json() == closed
    assert totals(api, tenant) == ("4", 1)
    assert closed_for(close(admin), tenant) == []


def test_a_statement_is_rated_with_the_plan_in_force_at_the_period_end(api, admin, previous_month):
    tenant = previous_month.priced
    response = statement(api, tenant, PREV_KEY)
    assert response.status_code == 200, response.text
    rated = response.json()
    assert (rated["currency"], rated["plan"], rated["plan_version"]) == ("USD", "pro", load_plans().version)
    assert [(line["metric"], line["kind"], line["quantity"], line["amount"]) for line in rated["lines"]] == [
        (None, "fee", "1", "49.00"),
        ("api.requests", "usage", "250000", "60.00"),  # 100K included, then 150 thousands at 0.40
        ("storage.gb_peak", "usage", "12.5", "0.00"),  # the peak is not priced: storage.gb is, per GB-month
        ("transfer.bytes", "usage", "150000000001", "4.59"),  # 100 GB included, 51 started GB at 0.09
    ]
    assert rated["lines"][1]["tiers"] == [
        {"up_to": "900000", "quantity": "150000", "unit_price": "0.4", "flat_fee": "0", "amount": "60"}
    ]
    assert rated["subtotal"] == "113.59"
    rows = list(csv.DictReader(io.StringIO(statement(api, tenant, PREV_KEY, accept="text/csv").text)))
    assert [(r["kind"], r["amount"]) for r in rows] == [
        ("fee", "49.00"),
        ("usage", "60.00"),
        ("usage", "0.00"),
        ("usage", "4.59"),
    ]

    # A plan change after the close changes nothing in it; one backdated into it is refused.
    assert admin.put(f"/manage/tenants/{tenant}", json={"plan": "enterprise"}).status_code == 200
    refused = problem_of(
        admin.put(f"/manage/tenants/{tenant}", json={"plan": "free", "plan_effective_from": stamp(PREV_START)}), 422
    )
    assert refused["errors"][0]["field"] == "plan_effective_from"
    assert "closed" in refused["errors"][0]["message"]
    assert statement(api, tenant, PREV_KEY).json() == rated
    # The open period is previewed with the plan now: enterprise's fee and nothing used yet.
    preview = api.get(f"/invoices/{tenant}/preview").json()
    assert (preview["plan"], preview["subtotal"], preview["period_start"]) == (
        "enterprise",
        "2000.00",
        stamp(THIS_START),
    )


def test_an_event_of_a_passed_period_is_late_for_a_tenant_without_usage_in_it(api, tenant, previous_month):
    # The close in `previous_month` passed the previous period for every tenant, including this new one.
    accepted(api, [event(tenant, "first", "3", timestamp=LATE_TS), event(tenant, "now", "1")])
    [late] = eventually(lambda: late_items(api, tenant))
    assert (late["event"]["event_id"], late["period_start"], late["carried_to"]) == ("first", PREV_KEY, None)
    settle(api, tenant, ("1", 1))
    assert totals(api, tenant, period=PREV_KEY) == ("0", 0)
    problem_of(statement(api, tenant, PREV_KEY), 404)


def test_an_operator_applies_or_discards_a_late_event_as_local_admin_whatever_the_client_claims(
    api, admin, tenant, previous_month
):
    accepted(api, [event(tenant, "l-apply", "3", timestamp=LATE_TS), event(tenant, "l-drop", "5", timestamp=LATE_TS)])
    eventually(lambda: len(late_items(api, tenant)) == 2)
    listed = admin.get("/manage/late-events", params={"tenant_id": tenant, "status": "waiting"}).json()["items"]
    ids = {item["event"]["event_id"]: item["id"] for item in listed}
    # App Service Authentication strips a client's principal headers; the dev host, standing in for it, too.
    spoofed = {"x-ms-client-principal-name": "mallory"}
    for _ in range(2):  # a double click counts once
        applied = admin.post(f"/manage/late-events/{tenant}/{ids['l-apply']}/apply", headers=spoofed)
        assert applied.status_code == 200, applied.text
    assert applied.json()["late_event"]["resolved_by"] == "local-admin"
    assert totals(api, tenant) == ("3", 1)
    dropped = admin.post(
        f"/manage/late-events/{tenant}/{ids['l-drop']}/discard", json={"reason": "duplicate upload"}, headers=spoofed
    )
    assert dropped.status_code == 200, dropped.text
    assert totals(api, tenant) == ("3", 1)
    journal = admin.get("/manage/journal", params={"tenant_id": tenant}).json()["items"]
    assert [(e["kind"], e["actor"]) for e in journal] == [
        ("late.discard", "local-admin"),
        ("late.apply", "local-admin"),
    ]
    assert api.get("/manage/journal", params={"tenant_id": tenant}).status_code == 401  # the function key cannot


def test_a_period_the_closer_passed_reads_closed_for_a_tenant_without_usage_in_it(api, tenant, previous_month):
    # Its events are late (above), so its usage is final: a reader waiting for "closed" must get it.
    assert usage(api, tenant, period=PREV_KEY)["status"] == "closed"


def test_statements_of_a_tenant_without_any(api, tenant):
    assert api.get(f"/statements/{tenant}").json() == {"items": []}
    problem_of(statement(api, tenant, PREV_KEY), 404)
    assert late_items(api, tenant) == []
    body = problem_of(api.get("/statements/bad%20tenant"), 400)
    assert body["errors"][0]["field"] == "tenant_id"


# -- cancels -------------------------------------------------------------------------------------------------


def test_a_cancel_subtracts_an_event_exactly_once(api, tenant):
    accepted(
        api,
        [
            event(tenant, "a", "5", idempotency_key="order-a"),
            event(tenant, "b", "2", dimensions={"region": "eu"}),
            event(tenant, "r", "7", metric="reports.generated"),
            event(tenant, "s", "3", metric="storage.gb_peak"),
        ],
    )
    settle(api, tenant, ("7", 2))
    settle(api, tenant, ("1", 1), metric="reports.generated")
    settle(api, tenant, ("3", 1), metric="storage.gb_peak")

    first = cancel(api, tenant, {"event_id": "b"})
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["tenant_id"], body["dedupe_key"], body["event_id"], body["metric"], body["quantity"]) == (
        tenant,
        "e:b",
        "b",
        "api.requests",
        "2",
    )
    assert (instant(body["period_start"]), instant(body["period_end"])) == (THIS_START, NEXT_START)
    assert totals(api, tenant) == ("5", 1)
    # Sent again: the same answer, and nothing more is subtracted.
    for _ in range(2):
        again = cancel(api, tenant, {"event_id": "b"})
        assert (again.status_code, again.json()) == (200, body)
    assert totals(api, tenant) == ("5", 1)
    groups = api.get(f"/usage/{tenant}/api.requests", params={"group_by": "region"}).json()["groups"]
    assert [(g["total"], g["event_count"]) for g in groups if g["key"] == "eu"] in ([], [("0", 0)])
    day = NOW.date().isoformat()
    history = api.get(f"/usage/{tenant}/api.requests/history", params={"start": day, "end": day}).json()
    assert [(i["total"], i["event_count"]) for i in history["items"]] == [("5", 1)]

    # By idempotency key; a count meter's event subtracts one, whatever its quantity.
    by_key = cancel(api, tenant, {"idempotency_key": "order-a"})
    assert (by_key.status_code, by_key.json()["quantity"], by_key.json()["dedupe_key"]) == (200, "5", "k:order-a")
    assert totals(api, tenant) == ("0", 0)
    counted = cancel(api, tenant, {"event_id": "r"})
    assert (counted.status_code, counted.json()["quantity"]) == (200, "1")
    assert totals(api, tenant, "reports.generated") == ("0", 0)

    # A level cannot be subtracted.
    problem_of(cancel(api, tenant, {"event_id": "s"}), 422)
    assert totals(api, tenant, "storage.gb_peak") == ("3", 1)
    # Unknown, and another tenant's.
    problem_of(cancel(api, tenant, {"event_id": "nope"}), 404)
    problem_of(cancel(api, tenant + "-other", {"event_id": "a"}), 404)

    # A replay of a cancelled event stays cancelled: its marker still says it was counted.
    accepted(api, [event(tenant, "b", "2", dimensions={"region": "eu"}), event(tenant, "d", "1")])
    settle(api, tenant, ("1", 1))


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ({}, "event_id"),
        ({"event_id": "a", "idempotency_key": "b"}, "event_id"),
        ({"event_id": ""}, "event_id"),
        ({"event_id": 5}, "event_id"),
        ({"event_id": "tab\there"}, "event_id"),
        ({"idempotency_key": "k" * 129}, "idempotency_key"),
        ({"event": "a"}, "event"),
        (["a"], None),
        (b"{not json", None),
    ],
)
def test_bad_cancels_are_400(api, tenant, content, field):
    if isinstance(content, bytes):
        response = api.post(f"/events/{tenant}/cancel", content=content, headers={"content-type": "application/json"})
    else:
        response = cancel(api, tenant, content)
    body = problem_of(response, 400)
    if field is not None:
        assert body["errors"][0]["field"] == field


def test_a_cancel_in_a_closed_period_is_409(api, previous_month):
    tenant = previous_month.cancelling
    # Until it closed, the period's events could be cancelled: from the total, the day and the group.
    assert previous_month.cancel_in_grace.status_code == 200, previous_month.cancel_in_grace.text
    assert previous_month.cancel_in_grace.json()["quantity"] == "0.25"
    after = previous_month.after_cancel
    assert after["totals"] == ("10", 1)
    assert [(i["total"], i["event_count"]) for i in after["days"]] == [("0", 0), ("10", 1)]
    assert [(g["total"], g["event_count"]) for g in after["groups"] if g["key"] == "us"] in ([], [("0", 0)])
    assert closed_for(previous_month.report, tenant) == [(PREV_START, THIS_START)]
    [line] = statement(api, tenant, PREV_KEY).json()["lines"]
    assert (line["quantity"], line["event_count"]) == ("10", 1)

    body = problem_of(cancel(api, tenant, {"event_id": "k1"}), 409)
    assert PREV_KEY in body["detail"]
    assert totals(api, tenant, period=PREV_KEY) == ("10", 1)
    [line] = statement(api, tenant, PREV_KEY).json()["lines"]
    assert (line["quantity"], line["event_count"]) == ("10", 1)
    # The cancel made before the close is still answered the same way.
    again = cancel(api, tenant, {"event_id": "k2"})
    assert (again.status_code, again.json()) == (200, previous_month.cancel_in_grace.json())
