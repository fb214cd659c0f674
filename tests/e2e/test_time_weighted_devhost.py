"""The default catalog's `storage.gb` through the dev host: levels sent out of order over HTTP come back as
GB-hours, a level and a GB-month average, history buckets hold their own share, and a cancel removes its point.

The points lie in the last half hour and have ended before the reads, so the figures do not move with the clock:
10 GB on vol-1 from 30 minutes ago, 4 GB from 12 minutes ago, 0 from 6 minutes ago; 2 GB on vol-2 from 30 to 6
minutes ago. By hand: 10 x 0.3 h + 4 x 0.1 h + 2 x 0.4 h = 4.2 GB-hours; without the 4 GB point, 10 x 0.4 + 0.8 =
4.8."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import eventually


def _at(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_storage_is_billed_in_gb_hours_and_gb_months(api: httpx.Client, tenant: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0, second=0)
    if now.day == 1 and now.hour == 0 and now.minute < 35:
        pytest.skip("the points would fall in the previous billing period")
    start = now - timedelta(minutes=30)

    def point(event_id: str, minutes: int, gb: str, volume: str) -> dict[str, Any]:
        return {
            "event_id": event_id,
            "tenant_id": tenant,
            "metric": "storage.gb",
            "quantity": gb,
            "resource_id": volume,
            "timestamp": _at(start + timedelta(minutes=minutes)),
            "source": "sizer",
        }

    events = [point("v1-b", 18, "4", "vol-1"), point("v1-c", 24, "0", "vol-1"), point("v2-a", 0, "2", "vol-2")]
    events += [point("v1-a", 0, "10", "vol-1"), point("v2-b", 24, "0", "vol-2"), point("v1-b", 18, "4", "vol-1")]
    response = api.post("/events", json=events)
    assert response.status_code == 202, response.text

    def usage() -> dict[str, Any]:
        body = api.get(f"/usage/{tenant}/storage.gb").json()
        assert body["event_count"] == 5
        return body

    body = eventually(usage)
    assert (body["aggregation"], body["unit"], body["total"], body["level"]) == ("time_weighted", "GB", "4.2", "0")
    elapsed = (datetime.fromisoformat(body["period_end"]) - datetime.fromisoformat(body["period_start"])).days
    assert Decimal(body["average"]) > 0
    assert elapsed >= 28
    hours = api.get(
        f"/usage/{tenant}/storage.gb/history",
        params={"start": start.date().isoformat(), "end": now.date().isoformat(), "granularity": "hour"},
    ).json()["items"]
    assert sum(Decimal(item["total"]) for item in hours) == Decimal("4.2")

    cancelled = api.post(f"/events/{tenant}/cancel", json={"event_id": "v1-b"})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["quantity"] == "4"
    after = api.get(f"/usage/{tenant}/storage.gb").json()
    assert (after["total"], after["event_count"]) == ("4.8", 4)
