"""The portal's handlers on the memory store: a deployment without a portal secret has no portal (404 from the
page, the data routes and minting), a package without its vendored assets answers 503 saying how to build
them, and the frame-ancestors setting reaches the page's CSP."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from metering.api.portal import PortalApi
from metering.stores.memory import MemoryStore
from metering.web.pages import VENDORED, Pages
from tests.support import make_settings, wired

SECRET = "unit-portal-secret-" + "0123456789abcdef" * 2


def portal(**settings: object) -> PortalApi:
    return wired(MemoryStore(), settings=make_settings(**settings)).http.portal


def test_without_a_secret_there_is_no_portal():
    off = portal()
    for response in (
        off.page("acme"),
        off.overview("acme", "Bearer x"),
        off.usage("acme", "api.requests", {}, "Bearer x"),
        off.mint(b'{"tenant_id": "acme"}', "http://127.0.0.1:7071/api/manage/portal-tokens"),
    ):
        assert response.status == 404
        assert response.json()["title"] == "Portal not enabled"
    # Its assets are still served: they are the console's too.
    assert off.asset("ui.js", {}).status == 200


def test_the_page_names_its_assets_by_version_and_carries_the_frame_ancestors():
    page = portal(portal_secret=SECRET, portal_frame_ancestors="https://app.example.com self").page("acme")
    assert page.status == 200
    assert (
        page.headers["Content-Security-Policy"] == "default-src 'self'; frame-ancestors https://app.example.com 'self'"
    )
    html = page.body.decode()
    pages = Pages()
    for name in ("ui.js", "portal.js", "base.css", "portal.css", *VENDORED[:2]):
        assert f"../assets/{name}?v={pages.asset(name).version}" in html  # type: ignore[union-attr]


def test_without_the_vendored_assets_the_page_says_how_to_build_them(tmp_path: Path):
    root = tmp_path / "web"
    shutil.copytree(str(resources.files("metering.web")), root, ignore=shutil.ignore_patterns("vendor"))
    pages = Pages(root)  # type: ignore[arg-type]
    assert pages.missing() == list(VENDORED)
    api = portal(portal_secret=SECRET)
    api.pages = pages
    response = api.page("acme")
    assert response.status == 503
    assert "run bin/web-assets" in response.json()["detail"]
    assert response.headers["Retry-After"] == "60"
