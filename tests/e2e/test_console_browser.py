"""The operator console in a real headless Chromium against the dev host: each list shows what its route holds;
"apply" on a late event changes the open period's total by exactly that event, once even when clicked twice, and
journals it; "discard" journals it and counts nothing; a dead letter that still cannot count is refused with its
reason and nothing is written; a wrong key is refused; the page is never framed and keeps the key out of URLs,
cookies and storage. A screenshot goes to METERING_SCREENSHOTS when set (the README's comes from there)."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from metering.connections import build_store
from metering.core.meters import MeterCatalog, load_catalog
from metering.ingest.consumer import HubMessage, consume
from metering.quotas.plans import Plan, PlanCatalog
from tests.e2e.browser import LOOPBACK_HOSTS, watch
from tests.e2e.conftest import ADMIN_KEY, FUNCTION_KEY, eventually
from tests.support import make_settings, wired

DESKTOP = {"width": 1280, "height": 1000}


def _event(tenant: str, event_id: str, quantity: str, at: datetime) -> dict[str, str]:
    return {
        "event_id": event_id,
        "tenant_id": tenant,
        "metric": "api.requests",
        "quantity": quantity,
        "timestamp": at.isoformat(),
        "source": "console-test",
    }


def _total(api: httpx.Client, tenant: str) -> str:
    return str(api.get(f"/usage/{tenant}/api.requests").json()["total"])


def _open_console(browser: Any, devhost: Any, key: str) -> Any:
    context = browser.new_context(viewport=DESKTOP, locale="en-US")
    watched = watch(context.new_page())
    watched.page.goto(devhost.base_url + "/console")
    watched.page.fill("#key", key)
    watched.page.click("#login button")
    return context, watched


def test_the_console_lists_what_was_set_aside_and_acts_on_it_once(browser, devhost, portal_tenants, tmp_path):
    # portal_tenants closed the previous period: events of it are late from now on.
    tenant = f"ops-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    previous = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) - timedelta(hours=1)
    with (
        httpx.Client(base_url=devhost.base_url, headers={"x-functions-key": FUNCTION_KEY}, timeout=30) as api,
        httpx.Client(base_url=devhost.base_url, headers={"x-functions-key": ADMIN_KEY}, timeout=30) as admin,
    ):
        limits = {"limits": {"api.requests": {"soft": "2", "hard": "5"}}}
        assert admin.put(f"/manage/tenants/{tenant}", json=limits).status_code == 200
        sent = [_event(tenant, "now-1", "4", now), _event(tenant, "late-a", "3", previous)]
        sent.append(_event(tenant, "late-b", "5", previous))
        assert api.post("/events", json=sent).status_code == 202
        # A message a direct producer wrote to the hub, which no catalog change can make count.
        poison = {"tenant_id": tenant, "metric": "api.requests", "quantity": "1", "timestamp": now.isoformat()}
        devhost.feeds[0].client.send_message(json.dumps(poison).encode())

        def waiting() -> dict[str, str] | None:
            items = admin.get("/manage/late-events", params={"tenant_id": tenant, "status": "waiting"}).json()["items"]
            return {i["event"]["event_id"]: i["id"] for i in items} if len(items) == 2 else None

        late = eventually(waiting)
        eventually(lambda: _total(api, tenant) == "4")
        letters = eventually(
            lambda: [
                item
                for item in admin.get("/manage/dead-letters", params={"status": "waiting", "limit": 1000}).json()[
                    "items"
                ]
                if item["tenant_id"] == tenant
            ]
        )

        context, watched = _open_console(browser, devhost, ADMIN_KEY)
        page = watched.page
        try:
            page.wait_for_selector("body[data-loaded]", timeout=20_000)
            # Each list shows what its route holds.
            row = page.locator(f"tr[data-late='{late['late-a']}']")
            assert row.locator("td").nth(2).inner_text() == "3"
            assert page.locator(f"tr[data-late='{late['late-b']}']").count() == 1
            tenant_row = page.locator(f"tr[data-tenant='{tenant}']")
            page.fill("#tenant-search", tenant)
            eventually(lambda: page.locator("#tenants-body tr[data-tenant]").count() == 1)
            assert "api.requests: 4 (soft 2, hard 5)" in tenant_row.inner_text()
            assert tenant_row.locator("td").nth(1).inner_text() == "soft"
            alerts = page.locator(f"tr[data-alert^='quota.threshold_crossed:{tenant}:api.requests:']")
            assert [alerts.nth(i).locator("td").nth(2).inner_text() for i in range(alerts.count())] == ["80 %"]
            health = admin.get("/manage/health").json()
            assert page.locator("#health-body tr[data-partition]").count() == len(health["partitions"])
            assert page.locator(f"tr[data-dead='{letters[0]['id']}']").count() == 1

            # Apply, clicked twice: counted once, journaled once.
            row.locator("[data-action=apply]").dblclick()
            page.wait_for_selector("#journal-body tr[data-journal='late.apply']", timeout=20_000)
            assert _total(api, tenant) == "7"
            # The apply took the tenant over its hard limit: the 100% alert was sent, once, after the 80% one.
            eventually(lambda: page.locator(f"tr[data-alert^='quota.threshold_crossed:{tenant}:']").count() == 2)
            again = admin.post(f"/manage/late-events/{tenant}/{late['late-a']}/apply")
            assert again.json()["repeated"] is True
            assert _total(api, tenant) == "7"
            assert "Applied to the period starting" in page.locator("#notice").inner_text()

            # Discard with a reason: journaled, counted nowhere.
            drop = page.locator(f"tr[data-late='{late['late-b']}']")
            drop.locator("input[data-reason]").fill("a duplicate upload")
            drop.locator("[data-action=discard]").click()
            page.wait_for_selector("#journal-body tr[data-journal='late.discard']", timeout=20_000)
            assert _total(api, tenant) == "7"
            page.locator(f"tr[data-late='{late['late-b']}']").wait_for(state="detached")

            # A dead letter that still cannot count: refused with the reason, nothing written.
            page.locator(f"tr[data-dead='{letters[0]['id']}'] [data-action=redrive]").click()
            page.locator("#notice", has_text="still not valid").wait_for()
            assert "source is required" in page.locator("#notice").inner_text()
            assert _total(api, tenant) == "7"

            journal = admin.get("/manage/journal", params={"tenant_id": tenant}).json()["items"]
            assert sorted((e["kind"], e["actor"]) for e in journal) == [
                ("late.apply", "local-admin"),
                ("late.discard", "local-admin"),
            ]
            # The health line shows what still waits, as health counts it (tests/integration/test_health.py: a
            # late event applied or discarded and a dead letter re-driven wait no more).
            health = admin.get("/manage/health").json()
            assert health["dead_letters"] >= 1
            letter = "dead letter" if health["dead_letters"] == 1 else "dead letters"
            note = page.locator("#health-note")
            note.filter(has_text=f"waiting for an operator: {health['dead_letters']} {letter} · ").wait_for()
            assert f"· {health['late_events']} late event" in note.inner_text()
            shot = Path(os.environ.get("METERING_SCREENSHOTS") or tmp_path) / "console.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.fill("#tenant-search", "")
            page.screenshot(path=str(shot), full_page=True)
            # The key is in no URL, cookie or storage.
            assert all(ADMIN_KEY not in url for url in watched.requests)
            assert context.cookies() == []
            assert page.evaluate("localStorage.length + sessionStorage.length") == 0
        finally:
            context.close()
        assert watched.hosts() <= LOOPBACK_HOSTS
        assert watched.errors == []


def test_a_wrong_key_is_refused_and_the_console_is_never_framed(browser, devhost):
    context, watched = _open_console(browser, devhost, FUNCTION_KEY)
    try:
        watched.page.wait_for_selector("#notice:not([hidden])", timeout=20_000)
        assert "401" in watched.page.locator("#notice").inner_text()
        assert watched.page.locator("#login").is_visible()
    finally:
        context.close()
    response = httpx.get(devhost.base_url + "/console", timeout=30)
    assert response.status_code == 200
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert "api.requests" not in response.text  # a shell: no data without the key


def test_a_dead_letter_whose_cause_was_fixed_is_redriven_from_the_console_and_counted_once(browser, devhost):
    tenant = f"fix-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    # An aggregator of an earlier deployment, whose catalog did not have compute.seconds yet, dead-lettered the
    # event into the dev host's store; the dev host's catalog has it.
    assert devhost.azurite is not None
    connection = devhost.azurite.connection_string
    full = load_catalog()
    earlier = MeterCatalog(
        version=full.version, meters={name: m for name, m in full.meters.items() if name != "compute.seconds"}
    )
    settings = make_settings(storage_connection=connection)
    plans = PlanCatalog(version="earlier", default_plan="free", plans={"free": Plan(name="free")})
    store = build_store(settings)
    store.ensure_ready()  # the tables that deployment had
    services = wired(store, settings=settings, catalog=earlier, plans=plans)
    body = [{**_event(tenant, "fix-1", "12.5", now), "metric": "compute.seconds"}]
    message = HubMessage(json.dumps(body).encode(), "devstoreaccount1|usage|earlier-deployment", 1, now)
    consume([message], services.ledger, services.dead_letters, services.clock, services.after_apply)
    with (
        httpx.Client(base_url=devhost.base_url, headers={"x-functions-key": FUNCTION_KEY}, timeout=30) as api,
        httpx.Client(base_url=devhost.base_url, headers={"x-functions-key": ADMIN_KEY}, timeout=30) as admin,
    ):
        waiting = admin.get("/manage/dead-letters", params={"status": "waiting", "limit": 1000}).json()["items"]
        [letter] = [item for item in waiting if item["tenant_id"] == tenant]
        assert "not a meter of the catalog" in letter["reason"]
        usage = f"/usage/{tenant}/compute.seconds"
        assert api.get(usage).json()["total"] == "0"
        waiting_before = admin.get("/manage/health").json()["dead_letters"]

        context, watched = _open_console(browser, devhost, ADMIN_KEY)
        page = watched.page
        try:
            page.wait_for_selector("body[data-loaded]", timeout=20_000)
            page.locator(f"tr[data-dead='{letter['id']}'] [data-action=redrive]").click()
            page.locator("#notice", has_text="Re-driven: counted (1 event).").wait_for()
            page.locator(f"tr[data-dead='{letter['id']}']").wait_for(state="detached")
            page.wait_for_selector("#journal-body tr[data-journal='deadletter.redrive']", timeout=20_000)
            assert api.get(usage).json()["total"] == "12.5"
            assert admin.get("/manage/health").json()["dead_letters"] == waiting_before - 1
            # A second re-drive (another operator's click, a retry) answers what the first did and counts nothing.
            again = admin.post(f"/manage/dead-letters/{letter['id']}/redrive", json={})
            assert again.status_code == 200, again.text
            assert (again.json()["outcome"], again.json()["repeated"]) == ("counted", True)
            assert api.get(usage).json()["total"] == "12.5"
            journal = admin.get("/manage/journal", params={"tenant_id": tenant}).json()["items"]
            assert [(e["kind"], e["actor"]) for e in journal] == [("deadletter.redrive", "local-admin")]
        finally:
            context.close()
