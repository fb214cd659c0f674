"""The operator console: its page (a shell without data, like the portal's) and the tenants' standing.

The page is served without a key (it holds nothing); the operator types the admin key into it, which keeps it in
memory only and sends it in the `x-functions-key` header of each admin route it calls: never in a URL, never in
a cookie, so no other site can act through the operator's browser. It is never framed."""

from __future__ import annotations

from collections.abc import Mapping

from metering.api.http import Response, bad_request, ok, problem
from metering.quotas.overview import TenantOverview
from metering.web.pages import HTML, MissingAssets, Pages, security_headers

ASSET_BASE = "/api/assets/"
MAX_PAGE = 1000
_STATES = ("hard", "soft", "ok", "unlimited")


class Console:
    def __init__(self, overview: TenantOverview, pages: Pages) -> None:
        self.overview = overview
        self.pages = pages

    def page(self) -> Response:
        headers = security_headers("'none'")
        try:
            html = self.pages.page("console", ASSET_BASE)
        except MissingAssets as error:
            return problem(503, "Console assets missing", str(error), headers={**headers, "Retry-After": "60"})
        return Response(200, html, HTML, headers)

    def tenants(self, params: Mapping[str, str]) -> Response:
        search = params.get("q", "")
        if len(search) > 128 or not search.isprintable():
            return bad_request("q", "must be at most 128 printable characters")
        sort = params.get("sort", "state")
        if sort not in {"state", "tenant"}:
            return bad_request("sort", "must be state or tenant")
        limit_text, offset_text = params.get("limit", "100"), params.get("offset", "0")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
            return bad_request("limit", f"must be a whole number from 1 to {MAX_PAGE}")
        if not offset_text.isdigit():
            return bad_request("offset", "must be a whole number")
        standings = self.overview.tenants(search)
        if sort == "state":
            standings.sort(key=lambda s: (_STATES.index(s.state), s.tenant_id))
        else:
            standings.sort(key=lambda s: s.tenant_id)
        limit, offset = int(limit_text), int(offset_text)
        items = [s.to_json() for s in standings[offset : offset + limit]]
        following = offset + limit if offset + limit < len(standings) else None
        return ok({"items": items, "total": len(standings), "next_offset": following})
