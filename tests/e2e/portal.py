"""Tenants with usage for the portal's tests, seeded once per session through the dev host's public routes: a
priced tenant (pro from the start of the previous period, a limit override it is between the soft and the hard
mark of, a closed previous period with its statement, a dimension value that is an HTML tag) and an unpriced one
(the default plan). Tokens are minted through the admin route, or forged with PyJWT as a SaaS backend would."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import jwt

from metering.devhost.host import DevHost
from tests.e2e.conftest import ADMIN_KEY, FUNCTION_KEY, PORTAL_SECRET, eventually

HOSTILE = "<img src=x onerror=alert(1)>"
REGIONS = ("eu-west", "us-east", None, "ap-south")
ENDPOINTS = ("/v1/search", "/v1/items", "/v1/orders")
# Days before now with API calls (a gap on some days, so "a point per day with usage" means something).
DAYS = (0, 0, 0, 1, 1, 2, 3, 5, 6, 8, 9, 11, 13, 14, 16, 19, 22, 26, 30)


@dataclass(frozen=True)
class PortalTenants:
    priced: str
    unpriced: str
    base_url: str

    def page(self, tenant: str, token: str) -> str:
        return f"{self.base_url}/portal/{tenant}#token={token}"


def mint(base_url: str, tenant: str, ttl_seconds: int = 3600) -> dict[str, Any]:
    response = httpx.post(
        f"{base_url}/manage/portal-tokens",
        headers={"x-functions-key": ADMIN_KEY},
        json={"tenant_id": tenant, "ttl_seconds": ttl_seconds},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


def forge(
    tenant: str,
    *,
    issued: datetime | None = None,
    ttl: timedelta = timedelta(hours=1),
    key: str = PORTAL_SECRET,
    **claims: Any,
) -> str:
    """A token as a SaaS backend mints it with the secret (README "Portal tokens")."""
    at = issued or datetime.now(UTC)
    body = {"sub": tenant, "aud": "metering-portal", "iat": at, "exp": at + ttl, "jti": uuid.uuid4().hex, **claims}
    return jwt.encode(body, key, algorithm="HS256")


def _stamp(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def _events(tenant: str, now: datetime) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for i, days in enumerate(DAYS):
        at = now - timedelta(days=days, minutes=7 + 11 * i)
        region = REGIONS[i % len(REGIONS)]
        dimensions = {"endpoint": ENDPOINTS[i % len(ENDPOINTS)], "method": "GET" if i % 3 else "POST"}
        if region is not None:
            dimensions["region"] = region
        events.append(
            {"event_id": f"r{i}", "metric": "api.requests", "quantity": 900 + 173 * i, "timestamp": _stamp(at),
             "dimensions": dimensions}
        )  # fmt: skip
        if i % 2 == 0:
            events.append(
                {"event_id": f"c{i}", "metric": "compute.seconds", "quantity": f"{120 + 37 * i}.25",
                 "timestamp": _stamp(at), "dimensions": {"instance_type": "large" if i % 4 else "small"}}
            )  # fmt: skip
        if i % 3 == 0:
            events.append(
                {"event_id": f"s{i}", "metric": "storage.gb_peak", "quantity": str(40 + (i * 7) % 23),
                 "timestamp": _stamp(at), "dimensions": {"tier": "hot" if i % 2 else "archive"}}
            )  # fmt: skip
    # A tenant string that is HTML: the page must show it as text, and run nothing.
    hostile = {"endpoint": "/v1/items", "region": HOSTILE}
    at = _stamp(now - timedelta(minutes=3))
    events.append(
        {"event_id": "hostile", "metric": "api.requests", "quantity": 42, "timestamp": at, "dimensions": hostile}
    )
    return [{"tenant_id": tenant, "source": "portal-e2e", **event} for event in events]


def write(devhost: DevHost) -> PortalTenants:
    """The portal tenants' usage, the previous period's included: written before the session's one close of the
    previous period (conftest `previous_period`), since after it an event of that period is late."""
    base = devhost.base_url
    suffix = uuid.uuid4().hex[:4]
    tenants = PortalTenants(priced=f"acme-{suffix}", unpriced=f"globex-{suffix}", base_url=base)
    now = datetime.now(UTC).replace(microsecond=0)
    with (
        httpx.Client(base_url=base, headers={"x-functions-key": FUNCTION_KEY}, timeout=30) as api,
        httpx.Client(base_url=base, headers={"x-functions-key": ADMIN_KEY}, timeout=30) as admin,
    ):
        # Pro from the start of the previous period, which is still open: its statement is rated as pro too.
        previous_start = (now.replace(day=1, hour=0, minute=0, second=0) - timedelta(days=1)).replace(day=1)
        response = admin.put(
            f"/manage/tenants/{tenants.priced}",
            json={"plan": "pro", "plan_effective_from": _stamp(previous_start)},
        )
        assert response.status_code == 200, response.text
        sent = _events(tenants.priced, now)
        unpriced = [{**event, "tenant_id": tenants.unpriced} for event in sent[:6]]
        for batch in (sent, unpriced):
            assert api.post("/events", json=batch).status_code == 202
        for tenant, events in ((tenants.priced, sent), (tenants.unpriced, unpriced)):
            for metric in {event["metric"] for event in events}:
                expected = sum(1 for event in events if event["metric"] == metric)
                eventually(lambda t=tenant, m=metric, n=expected: _counted(api, t, m) == n)
    return tenants


def finish(devhost: DevHost, tenants: PortalTenants) -> PortalTenants:
    """After the close: a limit the priced tenant is between the soft and the hard mark of."""
    with (
        httpx.Client(base_url=devhost.base_url, headers={"x-functions-key": FUNCTION_KEY}, timeout=30) as api,
        httpx.Client(base_url=devhost.base_url, headers={"x-functions-key": ADMIN_KEY}, timeout=30) as admin,
    ):
        statements = api.get(f"/statements/{tenants.priced}").json()["items"]
        assert statements, "the previous period was closed into a statement"
        current = Decimal(api.get(f"/usage/{tenants.priced}/api.requests").json()["total"])
        limits = {"soft": str((current * Decimal("0.6")).to_integral_value()), "hard": str(current * 2)}
        response = admin.put(f"/manage/tenants/{tenants.priced}", json={"limits": {"api.requests": limits}})
        assert response.status_code == 200, response.text
    return tenants


def _counted(api: httpx.Client, tenant: str, metric: str) -> int:
    today = datetime.now(UTC).date()
    params = {"start": (today - timedelta(days=40)).isoformat(), "end": today.isoformat(), "granularity": "period"}
    items = api.get(f"/usage/{tenant}/{metric}/history", params=params).json()["items"]
    return sum(item["event_count"] for item in items)
