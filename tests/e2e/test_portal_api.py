"""The portal's routes through the dev host: minting tokens (route, client, command line), the data routes giving
what the keyed routes give, every way a token is refused (401 from every data route), the page's security
headers, and no token in the dev host's logs."""

from __future__ import annotations

import base64
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urljoin

import httpx
import pytest
from typer.testing import CliRunner

from metering.cli import app
from metering.client import MeteringClient
from tests.e2e.conftest import ADMIN_KEY, FUNCTION_KEY, PORTAL_FRAME_ANCESTORS, PORTAL_SECRET_PREVIOUS
from tests.e2e.portal import PortalTenants, forge, mint

SECURITY_HEADERS = {
    "content-security-policy": f"default-src 'self'; frame-ancestors {PORTAL_FRAME_ANCESTORS}",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}


def data_routes(tenant: str, period: str) -> list[tuple[str, dict[str, str], str | None]]:
    """Each portal data route with parameters it answers 200 to, and the keyed route it mirrors."""
    day = datetime.now(UTC).date().isoformat()
    return [
        ("overview", {}, None),
        ("usage/api.requests", {"group_by": "region"}, f"/usage/{tenant}/api.requests"),
        (
            "usage/api.requests/history",
            {"start": day, "end": day, "granularity": "hour"},
            f"/usage/{tenant}/api.requests/history",
        ),
        ("quota/api.requests", {"requested": "10"}, f"/quota/{tenant}/api.requests"),
        ("invoices/preview", {}, f"/invoices/{tenant}/preview"),
        ("statements", {}, f"/statements/{tenant}"),
        ("statements", {"period": period}, f"/statements/{tenant}"),
    ]


@pytest.fixture
def tenants(portal_tenants) -> PortalTenants:
    return portal_tenants


@pytest.fixture
def bare(devhost):
    with httpx.Client(base_url=devhost.base_url, timeout=30) as client:
        yield client


def previous_period(api: httpx.Client, tenant: str) -> str:
    [statement, *_] = api.get(f"/statements/{tenant}").json()["items"]
    return statement["period_start"][:10]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_data_routes_give_what_the_keyed_routes_give(api, bare, tenants):
    tenant = tenants.priced
    token = mint(tenants.base_url, tenant)["token"]
    period = previous_period(api, tenant)
    for route, params, keyed in data_routes(tenant, period)[1:]:
        ours = bare.get(f"/portal/{tenant}/data/{route}", params=params, headers=bearer(token))
        theirs = api.get(str(keyed), params=params)
        assert (ours.status_code, theirs.status_code) == (200, 200), (route, ours.text)
        body, expected = ours.json(), theirs.json()
        if route == "invoices/preview":
            # Rated a moment apart: the instant differs, and so does the forecast's projection to the period end.
            for volatile in ("as_of", "forecast"):
                assert (body.pop(volatile) is None) == (expected.pop(volatile) is None)
        assert body == expected, route
        assert ours.headers["cache-control"] == "no-store"
    csv = bare.get(f"/portal/{tenant}/data/statements", headers={**bearer(token), "accept": "text/csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text == api.get(f"/statements/{tenant}", headers={"accept": "text/csv"}).text


def test_the_overview_lists_the_meters_used_with_the_usage_routes_figures(api, bare, tenants):
    tenant = tenants.priced
    overview = bare.get(f"/portal/{tenant}/data/overview", headers=bearer(mint(tenants.base_url, tenant)["token"]))
    assert overview.status_code == 200
    body = overview.json()
    assert (body["tenant_id"], body["plan"], body["currency"], body["priced"]) == (tenant, "pro", "USD", True)
    assert len(body["previous_periods"]) == 2
    assert body["period"]["first_day"] == api.get(f"/usage/{tenant}/api.requests").json()["period_start"][:10]
    for meter in body["meters"]:
        usage = api.get(f"/usage/{tenant}/{meter['metric']}").json()
        assert (meter["total"], meter["event_count"], meter["unit"]) == (
            usage["total"],
            usage["event_count"],
            usage["unit"],
        )
    assert {m["metric"] for m in body["meters"]} <= {"api.requests", "compute.seconds", "storage.gb_peak"}
    unpriced = bare.get(
        f"/portal/{tenants.unpriced}/data/overview", headers=bearer(mint(tenants.base_url, tenants.unpriced)["token"])
    ).json()
    assert (unpriced["plan"], unpriced["priced"]) == ("unlimited", False)
    assert not any(meter["priced"] for meter in unpriced["meters"])


def test_every_data_route_refuses_every_token_that_does_not_open_the_tenant(api, bare, tenants):
    tenant, other = tenants.priced, tenants.unpriced
    good = mint(tenants.base_url, tenant)["token"]
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    altered = base64.urlsafe_b64encode(json.dumps({**claims, "exp": claims["exp"] + 86400}).encode()).rstrip(b"=")
    refused = {
        "no token": {},
        "the function key instead": {"x-functions-key": FUNCTION_KEY},
        "the admin key instead": {"x-functions-key": ADMIN_KEY},
        "not a bearer token": {"Authorization": f"Basic {good}"},
        "another tenant's token": bearer(mint(tenants.base_url, other)["token"]),
        "expired": bearer(forge(tenant, issued=datetime.now(UTC) - timedelta(hours=3), ttl=timedelta(hours=1))),
        "altered": bearer(f"{header}.{altered.decode()}.{signature}"),
        "another key": bearer(forge(tenant, key="some-other-secret-that-is-long-enough-0000")),
        "another audience": bearer(forge(tenant, aud="metering-console")),
        "garbage": bearer("not.a.token"),
    }
    period = previous_period(api, tenant)
    for route, params, _ in data_routes(tenant, period):
        assert bare.get(f"/portal/{tenant}/data/{route}", params=params, headers=bearer(good)).status_code == 200
        for name, headers in refused.items():
            response = bare.get(f"/portal/{tenant}/data/{route}", params=params, headers=headers)
            assert response.status_code == 401, (route, name, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.headers["www-authenticate"].startswith('Bearer realm="metering-portal"')
            assert tenant not in response.text.replace(f"/portal/{tenant}", "")  # nothing of the tenant's data


def test_a_revocation_refuses_every_earlier_token_on_every_route_at_once(api, bare, devhost):
    tenant = f"rev-{time.time_ns()}"
    assert api.post(
        "/events",
        json={"event_id": "x", "tenant_id": tenant, "metric": "api.requests", "quantity": 1,
              "timestamp": datetime.now(UTC).isoformat(), "source": "e2e"},
    ).status_code == 202  # fmt: skip
    early = mint(devhost.base_url, tenant)["token"]
    self_minted = forge(tenant)
    admin = {"x-functions-key": ADMIN_KEY}
    settings = bare.put(f"/manage/tenants/{tenant}", headers=admin, json={"tokens_not_before": "now"})
    assert settings.status_code == 200, settings.text
    assert settings.json()["tokens_not_before"] is not None
    later = mint(devhost.base_url, tenant)["token"]  # minted in the same second: still valid
    day = datetime.now(UTC).date().isoformat()
    for route, params, _ in data_routes(tenant, day)[:-1]:
        for token in (early, self_minted):
            response = bare.get(f"/portal/{tenant}/data/{route}", params=params, headers=bearer(token))
            assert response.status_code == 401, route
            assert "revoked" in response.json()["detail"]
        assert bare.get(f"/portal/{tenant}/data/{route}", params=params, headers=bearer(later)).status_code == 200
    # A revocation cannot be undone.
    back = bare.put(f"/manage/tenants/{tenant}", headers=admin, json={"tokens_not_before": "2020-01-01T00:00:00Z"})
    assert back.status_code == 422
    assert back.json()["errors"][0]["field"] == "tokens_not_before"


def test_tokens_of_the_previous_secret_are_accepted_during_a_rotation(bare, tenants):
    tenant = tenants.priced
    old = forge(tenant, key=PORTAL_SECRET_PREVIOUS)
    assert bare.get(f"/portal/{tenant}/data/overview", headers=bearer(old)).status_code == 200


def test_minting_through_the_route_the_client_and_the_command_line(bare, devhost, tenants):
    tenant = tenants.priced
    minted = mint(devhost.base_url, tenant, ttl_seconds=600)
    assert minted["url"] == f"{devhost.base_url}/portal/{tenant}#token={minted['token']}"
    expires = datetime.fromisoformat(minted["expires_at"])
    assert timedelta(seconds=590) < expires - datetime.now(UTC) <= timedelta(seconds=601)
    for body, field in (
        ({"tenant_id": tenant, "ttl_seconds": 86401}, "ttl_seconds"),
        ({"tenant_id": tenant, "ttl_seconds": "60"}, "ttl_seconds"),
        ({"tenant_id": "a b"}, "tenant_id"),
        ({"tenant_id": tenant, "scope": "all"}, "scope"),
    ):
        response = bare.post("/manage/portal-tokens", headers={"x-functions-key": ADMIN_KEY}, json=body)
        assert response.status_code == 422, body
        assert [e["field"] for e in response.json()["errors"]] == [field]
    assert bare.post("/manage/portal-tokens", headers={"x-functions-key": FUNCTION_KEY}, json={}).status_code == 401
    with MeteringClient(devhost.base_url, FUNCTION_KEY, admin_key=ADMIN_KEY) as client:
        link = client.portal_token(tenant, ttl_seconds=120)
    assert link.url.endswith(f"/portal/{tenant}#token={link.token}")
    assert bare.get(f"/portal/{tenant}/data/overview", headers=bearer(link.token)).status_code == 200
    runner = CliRunner(env={"METERING_URL": devhost.base_url, "METERING_ADMIN_KEY": ADMIN_KEY})
    result = runner.invoke(app, ["portal-url", tenant, "--ttl", "300"])
    assert result.exit_code == 0, result.output
    url = result.stdout.strip()
    assert url.startswith(f"{devhost.base_url}/portal/{tenant}#token=")
    token = url.split("#token=", 1)[1]
    assert bare.get(f"/portal/{tenant}/data/overview", headers=bearer(token)).status_code == 200


def test_the_page_and_its_assets_carry_the_security_headers(bare, tenants):
    page = bare.get(f"/portal/{tenants.priced}")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert {name: page.headers[name] for name in SECURITY_HEADERS} == SECURITY_HEADERS
    # The page is a shell: nothing of the tenant's data or id is in it, and every script is this origin's.
    assert tenants.priced not in page.text
    assert "<script>" not in page.text
    assert "://" not in page.text
    for bad in (f"/portal/{'x' * 129}", "/portal/a%20b"):
        refused = bare.get(bad)
        assert refused.status_code == 400
        assert refused.headers["content-security-policy"] == SECURITY_HEADERS["content-security-policy"]
    scripts = [part.split('"')[0] for part in page.text.split('src="')[1:]]
    assert len(scripts) == 3
    for src in scripts:
        asset = bare.get(urljoin(str(page.url), src))
        assert asset.status_code == 200, src
        assert asset.headers["content-type"] == "text/javascript; charset=utf-8"
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert asset.headers["x-content-type-options"] == "nosniff"
    unversioned = bare.get("/assets/portal.js")
    assert unversioned.headers["cache-control"] == "no-cache"
    assert bare.get("/assets/..%2Fpages.py").status_code == 404


def test_no_token_reaches_the_dev_hosts_log(bare, tenants, caplog):
    caplog.set_level(logging.DEBUG)
    token = mint(tenants.base_url, tenants.priced)["token"]
    for path in ("overview", "usage/no.such.meter", "usage/api.requests/history", "statements?period=bad"):
        bare.get(f"/portal/{tenants.priced}/data/{path}", headers=bearer(token))
        bare.get(f"/portal/{tenants.unpriced}/data/{path}", headers=bearer(token))
    signature = token.rsplit(".", 1)[1]
    assert caplog.records, "the dev host logs nothing at all?"
    assert signature not in caplog.text
    assert token.split(".")[1] not in caplog.text
