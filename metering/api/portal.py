"""The tenant portal over HTTP: the page (anonymous), its assets, its read-only data routes (a portal token in
`Authorization: Bearer`), and minting tokens (admin).

The data routes answer what the usage, history, quota, invoice preview and statements routes answer, through
the same handlers, once the token opens the tenant in the path; any other token gets 401, whatever the route.
The token travels in the page's URL fragment, which browsers never send, and in the Authorization header, which
nothing here logs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Annotated
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from metering.api.billing import Billing
from metering.api.http import Response, bad_tenant, json_object, ok, problem
from metering.api.invoices import InvoicesApi
from metering.api.reads import Reads
from metering.core.events import FieldError, TenantId
from metering.portal.overview import PortalOverviews
from metering.portal.tokens import MAX_TTL, PortalTokens, TokenRefused
from metering.web.pages import ASSET_CACHE, HTML, MissingAssets, Pages, security_headers

DEFAULT_TTL_SECONDS = 3600
# The page names its assets relative to itself (/api/portal/<tenant>): the same path under any host or prefix.
ASSET_BASE = "../assets/"
_DATA_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
_CHALLENGE = 'Bearer realm="metering-portal"'


class MintRequest(BaseModel):
    """POST /api/manage/portal-tokens."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: TenantId
    ttl_seconds: Annotated[int, Field(ge=1, le=int(MAX_TTL.total_seconds()), strict=True)] = DEFAULT_TTL_SECONDS


class MintedPortalToken(BaseModel):
    token: str
    url: str = Field(description="The tenant's portal page with the token in its fragment: what an iframe loads")
    expires_at: AwareDatetime
    tenant_id: str
    token_id: str = Field(description="The token's jti")


class PortalApi:
    def __init__(
        self,
        *,
        tokens: PortalTokens | None,
        overviews: PortalOverviews,
        reads: Reads,
        invoices: InvoicesApi,
        billing: Billing,
        pages: Pages,
        frame_ancestors: str,
    ) -> None:
        self.tokens = tokens
        self.overviews = overviews
        self.reads = reads
        self.invoices = invoices
        self.billing = billing
        self.pages = pages
        self.frame_ancestors = frame_ancestors

    # -- the page and its assets (anonymous) -----------------------------------------------------------------

    def page(self, tenant_id: str) -> Response:
        headers = security_headers(self.frame_ancestors)
        refused = bad_tenant(tenant_id) or self._off()
        if refused is not None:
            return replace(refused, headers={**refused.headers, **headers})
        try:
            html = self.pages.page("portal", ASSET_BASE)
        except MissingAssets as error:
            return problem(503, "Portal assets missing", str(error), headers={**headers, "Retry-After": "60"})
        return Response(200, html, HTML, headers)

    def asset(self, name: str, params: Mapping[str, str]) -> Response:
        headers = security_headers(self.frame_ancestors)
        found = self.pages.asset(name)
        if found is None:
            return problem(404, "Not found", f"no asset {name!r}", headers=headers)
        # A versioned URL names these very bytes: cacheable for good. Any other is checked every time.
        headers["Cache-Control"] = ASSET_CACHE if params.get("v") == found.version else "no-cache"
        return Response(200, found.body, found.content_type, headers)

    # -- data (a portal token) -------------------------------------------------------------------------------

    def overview(self, tenant_id: str, authorization: str | None) -> Response:
        return self._data(tenant_id, authorization, lambda: ok(self.overviews.overview(tenant_id)))

    def usage(self, tenant_id: str, metric: str, params: Mapping[str, str], authorization: str | None) -> Response:
        return self._data(tenant_id, authorization, lambda: self.reads.usage(tenant_id, metric, params))

    def history(self, tenant_id: str, metric: str, params: Mapping[str, str], authorization: str | None) -> Response:
        return self._data(tenant_id, authorization, lambda: self.reads.history(tenant_id, metric, params))

    def quota(self, tenant_id: str, metric: str, params: Mapping[str, str], authorization: str | None) -> Response:
        return self._data(tenant_id, authorization, lambda: self.reads.quota(tenant_id, metric, params))

    def preview(self, tenant_id: str, accept: str | None, authorization: str | None) -> Response:
        return self._data(tenant_id, authorization, lambda: self.invoices.preview(tenant_id, accept))

    def statements(
        self, tenant_id: str, params: Mapping[str, str], accept: str | None, authorization: str | None
    ) -> Response:
        return self._data(tenant_id, authorization, lambda: self.billing.statement(tenant_id, params, accept))

    def _data(self, tenant_id: str, authorization: str | None, read: Callable[[], Response]) -> Response:
        refused = bad_tenant(tenant_id) or self._off() or self._unauthorised(tenant_id, authorization)
        response = refused if refused is not None else read()
        return replace(response, headers={**response.headers, **_DATA_HEADERS})

    def _unauthorised(self, tenant_id: str, authorization: str | None) -> Response | None:
        assert self.tokens is not None
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _refused("a portal token is required: Authorization: Bearer <token>", "invalid_request")
        try:
            self.tokens.verify(token.strip(), tenant_id)
        except TokenRefused as error:
            return _refused(f"{error}: ask for a new portal link", "invalid_token")
        return None

    # -- minting (admin) -------------------------------------------------------------------------------------

    def mint(self, body: bytes, request_url: str) -> Response:
        if (off := self._off()) is not None:
            return off
        assert self.tokens is not None
        decoded = json_object(body, '{"tenant_id": ..., "ttl_seconds": ...}')
        if isinstance(decoded, Response):
            return decoded
        try:
            request = MintRequest.model_validate(decoded)
        except ValidationError as error:
            errors = [
                FieldError(0, ".".join(str(p) for p in e["loc"]) or "body", str(e["msg"]).removeprefix("Value error, "))
                for e in error.errors(include_input=False)
            ]
            return problem(422, "Invalid token request", f"{len(errors)} rule(s) broken", errors=errors)
        minted = self.tokens.mint(request.tenant_id, timedelta(seconds=request.ttl_seconds))
        return ok(
            MintedPortalToken(
                token=minted.token,
                url=f"{portal_url(request_url, request.tenant_id)}#token={minted.token}",
                expires_at=minted.claims.expires_at,
                tenant_id=request.tenant_id,
                token_id=minted.claims.token_id,
            )
        )

    def _off(self) -> Response | None:
        if self.tokens is not None:
            return None
        return problem(404, "Portal not enabled", "this deployment has no portal: set METERING_PORTAL_SECRET")


def portal_url(request_url: str, tenant_id: str) -> str:
    """The portal page of `tenant_id` on the host and route prefix the mint request came to."""
    parts = urlsplit(request_url)
    prefix = parts.path.rsplit("/manage/", 1)[0]
    return urlunsplit((parts.scheme, parts.netloc, f"{prefix}/portal/{quote(tenant_id, safe=':')}", "", ""))


def _refused(detail: str, error: str) -> Response:
    return problem(
        401, "Unauthorized", detail, headers={"WWW-Authenticate": f'{_CHALLENGE}, error="{error}"', **_DATA_HEADERS}
    )
