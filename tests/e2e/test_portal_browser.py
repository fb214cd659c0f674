"""The portal page in a real headless Chromium against the dev host with seeded usage: each figure is what the
usage route gives, the chart has a bucket per day with usage, the breakdown adds up to the total, the quota bar
reflects the limits, a dimension value that is HTML shows as text and runs nothing, tokens that do not open the
tenant are refused, no request leaves this machine, the page fits a 375-pixel phone, it can be framed only from
the allowed origins, and its statements download as CSV. Screenshots of a desktop and a phone are written to
METERING_SCREENSHOTS when set (the README's come from there), else to the test's temporary folder."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.browser import LOOPBACK_HOSTS, Watched, embedding_server, watch
from tests.e2e.conftest import ADMIN_KEY, eventually
from tests.e2e.portal import HOSTILE, PortalTenants, forge, mint

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}


@pytest.fixture
def tenants(portal_tenants) -> PortalTenants:
    return portal_tenants


@pytest.fixture
def open_page(browser) -> Iterator[Any]:
    """Open a URL in a fresh context (viewport, en-US) and wait until the page has rendered its data; every page
    opened is checked afterwards: no request to any other host, no script error, no dialog."""
    opened: list[Watched] = []
    contexts = []

    def open_(
        url: str,
        viewport: dict[str, int] = DESKTOP,
        *,
        ready: bool = True,
        before: Callable[[Any], None] | None = None,
    ) -> Watched:
        context = browser.new_context(viewport=viewport, locale="en-US", accept_downloads=True)
        contexts.append(context)
        watched = watch(context.new_page())
        opened.append(watched)
        if before is not None:
            before(watched.page)
        watched.page.goto(url)
        if ready:
            watched.page.wait_for_selector("#portal[data-ready=true]", timeout=20_000)
        return watched

    yield open_
    for context in contexts:
        context.close()
    for watched in opened:
        assert watched.hosts() <= LOOPBACK_HOSTS, watched.hosts()
        assert watched.errors == []
        assert watched.dialogs == []


def screenshot(watched: Watched, name: str, tmp_path: Path) -> Path:
    folder = Path(os.environ.get("METERING_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    watched.page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def text_of(page: Any, selector: str) -> str:
    return page.locator(selector).first.text_content().strip()


def plain(shown: str) -> Decimal:
    """A figure as the page shows it (grouped, en-US) back to its exact value."""
    return Decimal(shown.replace(",", ""))


def test_each_meter_shows_what_the_usage_routes_give(open_page, api, tenants, tmp_path):
    tenant = tenants.priced
    watched = open_page(tenants.page(tenant, mint(tenants.base_url, tenant)["token"]))
    page = watched.page
    # The token left the address bar once read.
    assert "token" not in page.url
    overview_metrics = page.eval_on_selector_all("article.meter", "cards => cards.map(c => c.dataset.metric)")
    assert set(overview_metrics) == {"api.requests", "compute.seconds", "storage.gb_peak"}
    for metric in overview_metrics:
        card = f'article.meter[data-metric="{metric}"]'
        usage = api.get(f"/usage/{tenant}/{metric}").json()
        shown = text_of(page, f"{card} .figure__value")
        assert plain(shown) == Decimal(usage["total"]), metric
        assert page.get_attribute(f"{card} .figure__value", "data-value") == usage["total"]
        assert text_of(page, f"{card} .figure__unit") == usage["unit"]
        # The chart: one bucket per day with usage, each with the history route's figure.
        page.wait_for_selector(f'{card} [data-chart][aria-busy="false"]')
        first_day = usage["period_start"][:10]
        today = datetime.now(UTC).date().isoformat()
        history = api.get(f"/usage/{tenant}/{metric}/history", params={"start": first_day, "end": today}).json()
        expected = {item["start"]: item["total"] for item in history["items"] if item["event_count"]}
        rows = page.eval_on_selector_all(
            f"{card} table[data-buckets] tr[data-start]",
            "rows => rows.map(r => [r.dataset.start, r.querySelector('[data-value]').dataset.value])",
        )
        assert {_instant(start): value for start, value in rows} == {_instant(k): v for k, v in expected.items()}
        assert page.locator(f"{card} canvas").count() >= 1  # uPlot drew
    # The breakdown by region adds up to the total, events without a region included.
    card = 'article.meter[data-metric="api.requests"]'
    page.click(f"{card} [data-dimension=region]")
    page.wait_for_selector(f'{card} [data-breakdown][aria-busy="false"] [data-kind=absent]')
    values = page.eval_on_selector_all(
        f"{card} [data-breakdown] li[data-value]", "rows => rows.map(r => r.dataset.value)"
    )
    total = api.get(f"/usage/{tenant}/api.requests").json()["total"]
    assert sum(map(Decimal, values)) == Decimal(total)
    assert text_of(page, f"{card} [data-breakdown] [data-kind=absent] .breakdown__label") == "(no region)"
    # Amounts: the meter's line of the invoice preview.
    preview = api.get(f"/invoices/{tenant}/preview").json()
    [line] = [line for line in preview["lines"] if line["metric"] == "compute.seconds"]
    shown = text_of(page, 'article.meter[data-metric="compute.seconds"] .meter__amount')
    assert Decimal(shown.lstrip("$").replace(",", "")) == Decimal(line["amount"])
    assert text_of(page, "#tile-cost .tile__value") == f"${Decimal(preview['subtotal']):,.2f}"
    # The screenshot shows the calls of the last three periods, by region (the HTML value among them, as text).
    page.click(f"{card} [data-range=periods]")
    page.wait_for_selector(f'{card} [data-range=periods][aria-pressed="true"]')
    page.wait_for_selector(f'{card} [data-chart][aria-busy="false"]')
    screenshot(watched, "portal-desktop", tmp_path)


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_the_quota_bar_reflects_the_limits(open_page, api, tenants):
    tenant = tenants.priced
    page = open_page(tenants.page(tenant, mint(tenants.base_url, tenant)["token"])).page
    quota = api.get(f"/quota/{tenant}/api.requests").json()
    card = 'article.meter[data-metric="api.requests"] .quota'
    page.wait_for_selector(f"{card}[data-decision]")
    assert page.get_attribute(card, "data-decision") == quota["decision"] == "warning"
    track = page.locator(f"{card} .quota__bar").bounding_box()
    fill = page.locator(f"{card} .quota__fill").bounding_box()
    hard, soft, current = (Decimal(quota[k]) for k in ("hard_limit", "soft_limit", "current"))
    # The bar's scale is the hard limit: the fill is current / hard of the track, the marks at soft and hard.
    assert fill["width"] / track["width"] == pytest.approx(float(current / hard), abs=0.01)
    for kind, limit in (("soft", soft), ("hard", hard)):
        mark = page.locator(f"{card} [data-limit={kind}]").bounding_box()
        centre = mark["x"] + mark["width"] / 2 - track["x"]
        assert centre / track["width"] == pytest.approx(float(limit / hard), abs=0.01), kind
    assert page.locator(f"{card} .quota__fill--warn").count() == 1
    # A soft limit alone: its mark, and nothing that could deny.
    compute = 'article.meter[data-metric="compute.seconds"] .quota'
    assert page.locator(f"{compute} [data-limit=soft]").count() == 1
    assert page.locator(f"{compute} [data-limit=hard]").count() == 0
    assert "soft limit only" in text_of(page, compute)


def test_a_dimension_value_that_is_html_shows_as_text_and_runs_nothing(open_page, tenants):
    tenant = tenants.priced
    watched = open_page(tenants.page(tenant, mint(tenants.base_url, tenant)["token"]))
    page = watched.page
    card = 'article.meter[data-metric="api.requests"]'
    page.click(f"{card} [data-dimension=region]")
    label = page.locator(f"{card} [data-breakdown] .breakdown__label", has_text=HOSTILE)
    label.wait_for()
    assert label.text_content() == HOSTILE
    # No element was made of it: there is no image whose error handler could run (the fixture checks that no
    # dialog opened while the page was open).
    assert page.locator("img").count() == 0
    assert page.evaluate("document.querySelectorAll('[onerror]').length") == 0


def test_the_page_fits_a_phone(open_page, tenants, tmp_path):
    tenant = tenants.priced
    watched = open_page(tenants.page(tenant, mint(tenants.base_url, tenant)["token"]), PHONE)
    page = watched.page
    page.wait_for_selector('[data-chart][aria-busy="false"]')
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    for selector in ("article.meter", ".tile", "#statements", "canvas"):
        for box in (page.locator(selector).nth(i).bounding_box() for i in range(page.locator(selector).count())):
            assert box["x"] >= 0
            assert box["x"] + box["width"] <= PHONE["width"] + 0.5, selector
    screenshot(watched, "portal-phone", tmp_path)


def test_the_charts_ranges_show_a_bucket_per_day_or_hour_with_usage(open_page, api, tenants):
    tenant = tenants.priced
    page = open_page(tenants.page(tenant, mint(tenants.base_url, tenant)["token"])).page
    overview = httpx.get(
        f"{tenants.base_url}/portal/{tenant}/data/overview",
        headers={"Authorization": f"Bearer {mint(tenants.base_url, tenant)['token']}"},
    ).json()
    card = 'article.meter[data-metric="api.requests"]'
    oldest = overview["previous_periods"][-1]["first_day"]
    for range_id, params in (
        ("periods", {"start": oldest, "end": overview["today"], "granularity": "day"}),
        ("today", {"start": overview["today"], "end": overview["today"], "granularity": "hour"}),
    ):
        page.click(f"{card} [data-range={range_id}]")
        page.wait_for_selector(f'{card} [data-range={range_id}][aria-pressed="true"]')
        page.wait_for_selector(f'{card} [data-chart][aria-busy="false"]')
        items = api.get(f"/usage/{tenant}/api.requests/history", params=params).json()["items"]
        expected = sorted(_instant(item["start"]) for item in items if item["event_count"])
        rows = page.eval_on_selector_all(
            f"{card} table[data-buckets] tr[data-start]", "rows => rows.map(r => r.dataset.start)"
        )
        assert sorted(map(_instant, rows)) == expected, range_id
        assert len(expected) >= (5 if range_id == "periods" else 1)


@pytest.mark.parametrize("case", ["another tenant's token", "expired", "revoked", "altered", "none"])
def test_a_token_that_does_not_open_the_tenant_shows_a_refusal_and_no_data(open_page, tenants, case):
    tenant = tenants.priced
    if case == "another tenant's token":
        token = mint(tenants.base_url, tenants.unpriced)["token"]
    elif case == "expired":
        token = forge(tenant, issued=datetime.now(UTC) - timedelta(hours=5), ttl=timedelta(hours=2))
    elif case == "revoked":
        tenant = f"revoked-{uuid.uuid4().hex[:6]}"
        token = mint(tenants.base_url, tenant)["token"]
        revoked = httpx.put(
            f"{tenants.base_url}/manage/tenants/{tenant}",
            headers={"x-functions-key": ADMIN_KEY},
            json={"tokens_not_before": "now"},
        )
        assert revoked.status_code == 200
    elif case == "altered":
        good = mint(tenants.base_url, tenant)["token"]
        token = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    else:
        token = ""
    url = tenants.page(tenant, token) if token else f"{tenants.base_url}/portal/{tenant}"
    page = open_page(url).page
    assert page.get_attribute("#portal", "data-state") == "refused"
    notice = text_of(page, "#notice")
    assert ("expired or is not valid" in notice) if token else ("needs its link" in notice)
    if case == "revoked":
        assert "revoked" in notice
    assert page.locator("article.meter[data-metric]").count() == 0
    assert page.locator("#tiles").is_hidden()
    assert page.locator("#meters").is_hidden()
    assert page.locator(".skeleton:visible").count() == 0


def test_it_can_be_framed_from_the_allowed_origins_only(open_page, tenants):
    tenant = tenants.priced
    url = tenants.page(tenant, mint(tenants.base_url, tenant)["token"])
    frame = f'<iframe src="{url}" width="1000" height="700"></iframe>'
    embed = f"<!doctype html><title>A SaaS</title><h1>Your account</h1>{frame}"
    with embedding_server("localhost") as allowed, embedding_server("127.0.0.1") as refused:
        allowed.pages["/"] = refused.pages["/"] = embed.encode()
        framed = open_page(allowed.url("/"), ready=False).page
        frame = framed.frame_locator("iframe")
        frame.locator("#portal[data-ready=true]").wait_for(timeout=20_000)
        assert frame.locator("article.meter[data-metric]").count() == 3
        blocked = open_page(refused.url("/"), ready=False)
        eventually(lambda: any("frame-ancestors" in text for _, text in blocked.console))
        [child] = [f for f in blocked.page.frames if f is not blocked.page.main_frame]
        assert child.query_selector("#portal") is None


def test_an_unpriced_tenant_sees_usage_without_amounts(open_page, api, tenants):
    tenant = tenants.unpriced
    page = open_page(tenants.page(tenant, mint(tenants.base_url, tenant)["token"])).page
    assert text_of(page, "#tile-cost .tile__value") == "No charges"
    assert page.locator(".meter__amount").count() == 0
    assert "$" not in page.locator("#meters").text_content()
    usage = api.get(f"/usage/{tenant}/api.requests").json()
    assert plain(text_of(page, 'article.meter[data-metric="api.requests"] .figure__value')) == Decimal(usage["total"])
    # Its plan limits nothing, and the page says so.
    assert "No limit" in text_of(page, 'article.meter[data-metric="api.requests"] .quota')


def test_a_statement_downloads_as_csv(open_page, api, tenants):
    tenant = tenants.priced
    page = open_page(tenants.page(tenant, mint(tenants.base_url, tenant)["token"])).page
    [statement, *_] = api.get(f"/statements/{tenant}").json()["items"]
    period = statement["period_start"][:10]
    with page.expect_download() as download:
        page.click(f"#statements [data-csv='{period}']")
    saved = Path(download.value.path()).read_bytes()
    assert download.value.suggested_filename == f"statement-{tenant}-{period}.csv"
    csv = api.get(f"/statements/{tenant}", params={"period": period}, headers={"accept": "text/csv"})
    assert saved == csv.content
    amount = text_of(page, f"#statements tr[data-period='{period}'] td.num")
    assert Decimal(amount.lstrip("$").replace(",", "")) == Decimal(statement["subtotal"])


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_nothing_moves_when_the_data_arrives(open_page, tenants, viewport, tmp_path):
    tenant = tenants.priced
    held: list[Any] = []
    holding = [True]

    def hold(route: Any) -> None:
        if holding[0]:
            held.append(route)
        else:
            route.continue_()

    # The data requests are held from the first one: the page shows its loading state until they are let through.
    url = tenants.page(tenant, mint(tenants.base_url, tenant)["token"])
    watched = open_page(url, viewport, ready=False, before=lambda page: page.route("**/data/**", hold))
    page = watched.page
    # The overview, the preview and the statements. The sync API hands a held request to `hold` only inside one
    # of its calls: each poll makes one.
    eventually(lambda: page.evaluate("document.readyState") and len(held) == 3)
    watched_boxes = ("#tile-period", "#tile-cost", "#tile-forecast", "#meters", "#title")
    loading = {selector: page.locator(selector).bounding_box() for selector in watched_boxes}
    assert page.get_attribute("#portal", "aria-busy") == "true"
    assert page.locator("#tiles .skeleton").count() == 6
    if viewport is DESKTOP:
        screenshot(watched, "portal-loading", tmp_path)
    holding[0] = False
    for route in held:
        route.continue_()
    page.wait_for_selector("#portal[data-ready=true]")
    page.wait_for_selector('[data-chart][aria-busy="false"]')
    loaded = {selector: page.locator(selector).bounding_box() for selector in watched_boxes}
    # Nothing moves; the tiles keep their size and the meters their width (the title's box may narrow to its
    # text once the subtitle's skeleton is gone, its text stays where it was).
    for selector in watched_boxes:
        before, after = loading[selector], loaded[selector]
        assert (before["x"], before["y"]) == pytest.approx((after["x"], after["y"]), abs=1), selector
        if selector != "#title":
            assert before["width"] == pytest.approx(after["width"], abs=1), selector
        if selector.startswith("#tile"):
            assert before["height"] == pytest.approx(after["height"], abs=1), selector


def test_a_tenant_without_usage_sees_an_empty_state(open_page, tenants):
    tenant = f"new-{uuid.uuid4().hex[:6]}"
    page = open_page(tenants.page(tenant, mint(tenants.base_url, tenant)["token"])).page
    assert "No usage yet this period" in text_of(page, "#meters")
    assert "No closed periods yet" in text_of(page, "#statements")
    assert text_of(page, "#tile-cost .tile__value") == "No charges"
