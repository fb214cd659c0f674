"""`MeteringClient` and `AsyncMeteringClient`: the HTTP contract (docs/api.md) as typed Python calls.

Both clients share one description of each call (`_Call`: method, path, parameters, body, how to read the answer),
so the synchronous and the asynchronous client cannot drift apart. Results are the service's own pydantic models;
an error status raises the typed `ProblemError` for it (see errors.py), a dropped connection `ConnectionFailed`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from metering.api.contract import (
    DEV_HOST_URL,
    MAX_BODY_BYTES,
    MAX_EVENTS,
    Accepted,
    HistoryResponse,
    QuotaDecision,
    UsageBucket,
    UsageResponse,
)
from metering.client.errors import ConnectionFailed, problem_from_response
from metering.client.exports import ExportReconciliation, ExportRun
from metering.client.invoices import InvoicePreview, Statement, Statements
from metering.client.manage import (
    ClosedPeriods,
    HealthReport,
    MetricLimits,
    PortalLink,
    TenantSettings,
    WebhookDeliveries,
    WebhookRedrive,
    tenant_update,
)
from metering.client.recording import QuantityLike, encode, recorded, to_events
from metering.core.decimals import to_str
from metering.core.events import UsageEvent
from metering.core.periods import Granularity

DEFAULT_URL = DEV_HOST_URL
DEFAULT_SOURCE = "metering-client"
KEY_HEADER = "x-functions-key"
USER_AGENT = "metering-client/0.1"


T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[bytes], T]
    params: Mapping[str, str] | None = None
    body: bytes | None = None
    admin: bool = False
    accept: str | None = None


def _path(*parts: str) -> str:
    # Quote every segment so no character of an id is read as URL syntax ('/', '?', '#'); ':' may stay.
    return "/" + "/".join(quote(part, safe=":") for part in parts)


def _model(model: type[M]) -> Callable[[bytes], M]:
    return model.model_validate_json


def _history_items(content: bytes) -> list[UsageBucket]:
    return HistoryResponse.model_validate_json(content).items


def _statement_items(content: bytes) -> list[Statement]:
    return Statements.model_validate_json(content).items


def _text(content: bytes) -> str:
    return content.decode("utf-8")


def events_body(encoded: Sequence[bytes]) -> bytes:
    return b"[" + b",".join(encoded) + b"]"


def request_slices(encoded: Sequence[bytes]) -> list[slice]:
    """Consecutive runs of encoded events that each fit one request (1000 events, 1 MiB), in order."""
    slices: list[slice] = []
    start, size = 0, 2
    for index, item in enumerate(encoded):
        extra = len(item) + (1 if index > start else 0)
        if index > start and (index - start >= MAX_EVENTS or size + extra > MAX_BODY_BYTES):
            slices.append(slice(start, index))
            start, size, extra = index, 2, len(item)
        size += extra
    if start < len(encoded):
        slices.append(slice(start, len(encoded)))
    return slices


def _merge(results: Iterable[Accepted]) -> Accepted:
    ids: list[str] = []
    for result in results:
        ids.extend(result.event_ids)
    return Accepted(accepted=len(ids), event_ids=ids)


def _post_events(encoded: Sequence[bytes]) -> _Call[Accepted]:
    return _Call("POST", "/events", _model(Accepted), body=events_body(encoded))


def _usage(tenant_id: str, metric: str, period: date | None, group_by: str | None) -> _Call[UsageResponse]:
    params = {}
    if period is not None:
        params["period"] = period.isoformat()
    if group_by is not None:
        params["group_by"] = group_by
    return _Call("GET", _path("usage", tenant_id, metric), _model(UsageResponse), params=params)


def _history(
    tenant_id: str, metric: str, start: date, end: date, granularity: Granularity | str
) -> _Call[list[UsageBucket]]:
    params = {"start": start.isoformat(), "end": end.isoformat(), "granularity": str(Granularity(granularity))}
    return _Call("GET", _path("usage", tenant_id, metric, "history"), _history_items, params=params)


def _quota(tenant_id: str, metric: str, requested: QuantityLike) -> _Call[QuotaDecision]:
    # Text goes as given, for the service to judge (a 400 naming `requested`); numbers as exact decimal text.
    amount = requested if isinstance(requested, str) else to_str(Decimal(str(requested)))
    return _Call("GET", _path("quota", tenant_id, metric), _model(QuotaDecision), params={"requested": amount})


def _preview(tenant_id: str) -> _Call[InvoicePreview]:
    return _Call("GET", _path("invoices", tenant_id, "preview"), _model(InvoicePreview))


def _statement(tenant_id: str, period: date) -> _Call[Statement]:
    return _Call("GET", _path("statements", tenant_id), _model(Statement), params={"period": period.isoformat()})


def _statements(tenant_id: str) -> _Call[list[Statement]]:
    return _Call("GET", _path("statements", tenant_id), _statement_items)


def _invoice_csv(tenant_id: str, period: date | None) -> _Call[str]:
    if period is None:
        return _Call("GET", _path("invoices", tenant_id, "preview"), _text, accept="text/csv")
    params = {"period": period.isoformat()}
    return _Call("GET", _path("statements", tenant_id), _text, params=params, accept="text/csv")


def _get_tenant(tenant_id: str) -> _Call[TenantSettings]:
    return _Call("GET", _path("manage", "tenants", tenant_id), _model(TenantSettings), admin=True)


def _set_tenant(tenant_id: str, body: dict[str, Any]) -> _Call[TenantSettings]:
    content = json.dumps(body).encode()
    return _Call("PUT", _path("manage", "tenants", tenant_id), _model(TenantSettings), body=content, admin=True)


def _close_periods() -> _Call[ClosedPeriods]:
    return _Call("POST", "/manage/periods/close", _model(ClosedPeriods), body=b"{}", admin=True)


def _health() -> _Call[HealthReport]:
    return _Call("GET", "/manage/health", _model(HealthReport), admin=True)


def _webhook_deliveries(status: str, after: str | None, limit: int | None) -> _Call[WebhookDeliveries]:
    params = {"status": status}
    if after is not None:
        params["after"] = after
    if limit is not None:
        params["limit"] = str(limit)
    return _Call("GET", "/manage/webhooks", _model(WebhookDeliveries), params=params, admin=True)


def _portal_token(tenant_id: str, ttl_seconds: int) -> _Call[PortalLink]:
    body = json.dumps({"tenant_id": tenant_id, "ttl_seconds": ttl_seconds}).encode()
    return _Call("POST", "/manage/portal-tokens", _model(PortalLink), body=body, admin=True)


def _redrive_webhook(delivery_id: str) -> _Call[WebhookRedrive]:
    path = _path("manage", "webhooks", delivery_id, "redrive")
    return _Call("POST", path, _model(WebhookRedrive), body=b"{}", admin=True)


# The operator's actions and lists (admin key): plain JSON, as docs/api.md describes them.
def _json(content: bytes) -> dict[str, Any]:
    decoded = json.loads(content)
    assert isinstance(decoded, dict)
    return decoded


def _late_events(tenant_id: str | None, status: str | None, limit: int, offset: int) -> _Call[dict[str, Any]]:
    params = {"limit": str(limit), "offset": str(offset)}
    params |= {"tenant_id": tenant_id} if tenant_id else {}
    params |= {"status": status} if status else {}
    return _Call("GET", "/manage/late-events", _json, params=params, admin=True)


def _late_action(tenant_id: str, late_id: str, action: str, reason: str | None) -> _Call[dict[str, Any]]:
    body = json.dumps({"reason": reason} if reason is not None else {}).encode()
    path = _path("manage", "late-events", tenant_id, late_id, action)
    return _Call("POST", path, _json, body=body, admin=True)


def _dead_letters(status: str | None, limit: int, offset: int) -> _Call[dict[str, Any]]:
    params = {"limit": str(limit), "offset": str(offset)} | ({"status": status} if status else {})
    return _Call("GET", "/manage/dead-letters", _json, params=params, admin=True)


def _redrive_dead_letter(letter_id: str) -> _Call[dict[str, Any]]:
    path = _path("manage", "dead-letters", letter_id, "redrive")
    return _Call("POST", path, _json, body=b"{}", admin=True)


def _journal(tenant_id: str, limit: int, offset: int) -> _Call[dict[str, Any]]:
    params = {"tenant_id": tenant_id, "limit": str(limit), "offset": str(offset)}
    return _Call("GET", "/manage/journal", _json, params=params, admin=True)


def _run_exports() -> _Call[ExportRun]:
    return _Call("POST", "/manage/exports/run", _model(ExportRun), body=b"{}", admin=True)


def _exports(tenant_id: str, period: date | None) -> _Call[ExportReconciliation]:
    params = {} if period is None else {"period": period.isoformat()}
    return _Call("GET", _path("manage", "exports", tenant_id), _model(ExportReconciliation), params=params, admin=True)


class _Base:
    def __init__(self, base_url: str, key: str, admin_key: str | None, source: str) -> None:
        if not key:
            raise ValueError("a function key is required (x-functions-key); set METERING_KEY or pass key=")
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.admin_key = admin_key
        self.source = source

    def _headers(self, call: _Call[Any]) -> dict[str, str]:
        headers = {KEY_HEADER: (self.admin_key or self.key) if call.admin else self.key}
        if call.body is not None:
            headers["content-type"] = "application/json"
        if call.accept is not None:
            headers["accept"] = call.accept
        return headers

    def _encoded(self, events: Iterable[UsageEvent | Mapping[str, Any]]) -> list[bytes]:
        return [encode(event) for event in to_events(events, default_source=self.source)]


def env_settings() -> dict[str, Any]:
    """Where to find the service and its keys: METERING_URL (the dev host by default), METERING_KEY and
    METERING_ADMIN_KEY."""
    return {
        "base_url": os.environ.get("METERING_URL") or DEFAULT_URL,
        "key": os.environ.get("METERING_KEY", ""),
        "admin_key": os.environ.get("METERING_ADMIN_KEY") or None,
    }


class MeteringClient(_Base):
    """Synchronous client; safe to share between threads (httpx pools the connections)."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        admin_key: str | None = None,
        source: str = DEFAULT_SOURCE,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, key, admin_key, source)
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, transport=transport, headers={"user-agent": USER_AGENT}
        )

    @classmethod
    def from_env(cls, **options: Any) -> Self:
        return cls(**{**env_settings(), **options})

    def record(self, tenant_id: str, metric: str, quantity: QuantityLike, **fields: Any) -> Accepted:
        """Send one event now. Keyword fields: source, timestamp, event_id, unit, user_id, resource_id,
        dimensions, idempotency_key, count, sample_weight. Its id and timestamp are fixed first, so retrying this
        call with the same event_id is safe."""
        return self.send_encoded([encode(recorded(tenant_id, metric, quantity, fields, default_source=self.source))])

    def record_batch(self, events: Iterable[UsageEvent | Mapping[str, Any]]) -> Accepted:
        """Send events (models or their fields), in as many requests as the limits need, in order. If one
        request fails, the error is raised; sending the same events again is safe, as they keep their ids."""
        encoded = self._encoded(events)
        return _merge(self.send_encoded(encoded[part]) for part in request_slices(encoded))

    def send_encoded(self, encoded: Sequence[bytes]) -> Accepted:
        """One POST /api/events of already encoded events (at most 1000, 1 MiB in all)."""
        return self._call(_post_events(encoded))

    def current_usage(
        self, tenant_id: str, metric: str, *, period: date | None = None, group_by: str | None = None
    ) -> UsageResponse:
        return self._call(_usage(tenant_id, metric, period, group_by))

    def usage_history(
        self, tenant_id: str, metric: str, start: date, end: date, granularity: Granularity | str = Granularity.DAY
    ) -> list[UsageBucket]:
        return self._call(_history(tenant_id, metric, start, end, granularity))

    def check_quota(self, tenant_id: str, metric: str, requested: QuantityLike = 0) -> QuotaDecision:
        return self._call(_quota(tenant_id, metric, requested))

    def invoice_preview(self, tenant_id: str) -> InvoicePreview:
        """The open period rated as if it closed now, with the forecast to its end."""
        return self._call(_preview(tenant_id))

    def statement(self, tenant_id: str, period: date) -> Statement:
        """The statement of the closed period starting on `period` (NotFound while it is open)."""
        return self._call(_statement(tenant_id, period))

    def statements(self, tenant_id: str) -> list[Statement]:
        return self._call(_statements(tenant_id))

    def invoice_csv(self, tenant_id: str, period: date | None = None) -> str:
        """The preview (or, with `period`, that period's statement) as CSV, one row per line with its amount."""
        return self._call(_invoice_csv(tenant_id, period))

    def get_tenant(self, tenant_id: str) -> TenantSettings:
        return self._call(_get_tenant(tenant_id))

    def set_tenant(
        self,
        tenant_id: str,
        *,
        plan: str | None = None,
        limits: dict[str, MetricLimits] | None = None,
        billing_anchor_day: int | None = None,
        timezone: str | None = None,
        plan_effective_from: datetime | None = None,
        tokens_not_before: datetime | Literal["now"] | None = None,
        links: Mapping[str, str] | None = None,
    ) -> TenantSettings:
        body = tenant_update(
            plan=plan,
            limits=limits,
            billing_anchor_day=billing_anchor_day,
            timezone=timezone,
            plan_effective_from=plan_effective_from,
            tokens_not_before=tokens_not_before,
            links=links,
        )
        return self._call(_set_tenant(tenant_id, body))

    def close_periods(self) -> ClosedPeriods:
        return self._call(_close_periods())

    def health(self) -> HealthReport:
        return self._call(_health())

    def webhook_deliveries(
        self, status: str = "failed", *, after: str | None = None, limit: int | None = None
    ) -> WebhookDeliveries:
        return self._call(_webhook_deliveries(status, after, limit))

    def redrive_webhook(self, delivery_id: str) -> WebhookRedrive:
        return self._call(_redrive_webhook(delivery_id))

    def late_events(
        self, tenant_id: str | None = None, *, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        return self._call(_late_events(tenant_id, status, limit, offset))

    def apply_late_event(self, tenant_id: str, late_id: str) -> dict[str, Any]:
        return self._call(_late_action(tenant_id, late_id, "apply", None))

    def discard_late_event(self, tenant_id: str, late_id: str, reason: str) -> dict[str, Any]:
        return self._call(_late_action(tenant_id, late_id, "discard", reason))

    def dead_letters(self, *, status: str | None = None, limit: int = 100, offset: int = 0) -> dict[str, Any]:
        return self._call(_dead_letters(status, limit, offset))

    def redrive_dead_letter(self, letter_id: str) -> dict[str, Any]:
        return self._call(_redrive_dead_letter(letter_id))

    def journal(self, tenant_id: str, *, limit: int = 100, offset: int = 0) -> dict[str, Any]:
        return self._call(_journal(tenant_id, limit, offset))

    def portal_token(self, tenant_id: str, *, ttl_seconds: int = 3600) -> PortalLink:
        """A portal token for the tenant (1 s to 24 h), and its portal page's URL carrying it (admin key)."""
        return self._call(_portal_token(tenant_id, ttl_seconds))

    def run_exports(self) -> ExportRun:
        return self._call(_run_exports())

    def exports(self, tenant_id: str, period: date | None = None) -> ExportReconciliation:
        """The tenant's reconciliation with each billing target, for the period starting `period` (else the
        current one)."""
        return self._call(_exports(tenant_id, period))

    def _call(self, call: _Call[T]) -> T:
        try:
            response = self._http.request(
                call.method, call.path, params=call.params, content=call.body, headers=self._headers(call)
            )
        except httpx.TransportError as error:
            raise ConnectionFailed(f"{call.method} {self.base_url}{call.path}: {error!r}") from error
        if not response.is_success:
            raise problem_from_response(response)
        return call.parse(response.content)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


class AsyncMeteringClient(_Base):
    """The same calls for asyncio applications."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        admin_key: str | None = None,
        source: str = DEFAULT_SOURCE,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, key, admin_key, source)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, transport=transport, headers={"user-agent": USER_AGENT}
        )

    @classmethod
    def from_env(cls, **options: Any) -> Self:
        return cls(**{**env_settings(), **options})

    async def record(self, tenant_id: str, metric: str, quantity: QuantityLike, **fields: Any) -> Accepted:
        return await self.send_encoded(
            [encode(recorded(tenant_id, metric, quantity, fields, default_source=self.source))]
        )

    async def record_batch(self, events: Iterable[UsageEvent | Mapping[str, Any]]) -> Accepted:
        encoded = self._encoded(events)
        return _merge([await self.send_encoded(encoded[part]) for part in request_slices(encoded)])

    async def send_encoded(self, encoded: Sequence[bytes]) -> Accepted:
        return await self._call(_post_events(encoded))

    async def current_usage(
        self, tenant_id: str, metric: str, *, period: date | None = None, group_by: str | None = None
    ) -> UsageResponse:
        return await self._call(_usage(tenant_id, metric, period, group_by))

    async def usage_history(
        self, tenant_id: str, metric: str, start: date, end: date, granularity: Granularity | str = Granularity.DAY
    ) -> list[UsageBucket]:
        return await self._call(_history(tenant_id, metric, start, end, granularity))

    async def check_quota(self, tenant_id: str, metric: str, requested: QuantityLike = 0) -> QuotaDecision:
        return await self._call(_quota(tenant_id, metric, requested))

    async def invoice_preview(self, tenant_id: str) -> InvoicePreview:
        return await self._call(_preview(tenant_id))

    async def statement(self, tenant_id: str, period: date) -> Statement:
        return await self._call(_statement(tenant_id, period))

    async def statements(self, tenant_id: str) -> list[Statement]:
        return await self._call(_statements(tenant_id))

    async def invoice_csv(self, tenant_id: str, period: date | None = None) -> str:
        return await self._call(_invoice_csv(tenant_id, period))

    async def get_tenant(self, tenant_id: str) -> TenantSettings:
        return await self._call(_get_tenant(tenant_id))

    async def set_tenant(
        self,
        tenant_id: str,
        *,
        plan: str | None = None,
        limits: dict[str, MetricLimits] | None = None,
        billing_anchor_day: int | None = None,
        timezone: str | None = None,
        plan_effective_from: datetime | None = None,
        tokens_not_before: datetime | Literal["now"] | None = None,
        links: Mapping[str, str] | None = None,
    ) -> TenantSettings:
        body = tenant_update(
            plan=plan,
            limits=limits,
            billing_anchor_day=billing_anchor_day,
            timezone=timezone,
            plan_effective_from=plan_effective_from,
            tokens_not_before=tokens_not_before,
            links=links,
        )
        return await self._call(_set_tenant(tenant_id, body))

    async def close_periods(self) -> ClosedPeriods:
        return await self._call(_close_periods())

    async def health(self) -> HealthReport:
        return await self._call(_health())

    async def webhook_deliveries(
        self, status: str = "failed", *, after: str | None = None, limit: int | None = None
    ) -> WebhookDeliveries:
        return await self._call(_webhook_deliveries(status, after, limit))

    async def redrive_webhook(self, delivery_id: str) -> WebhookRedrive:
        return await self._call(_redrive_webhook(delivery_id))

    async def late_events(
        self, tenant_id: str | None = None, *, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        return await self._call(_late_events(tenant_id, status, limit, offset))

    async def apply_late_event(self, tenant_id: str, late_id: str) -> dict[str, Any]:
        return await self._call(_late_action(tenant_id, late_id, "apply", None))

    async def discard_late_event(self, tenant_id: str, late_id: str, reason: str) -> dict[str, Any]:
        return await self._call(_late_action(tenant_id, late_id, "discard", reason))

    async def dead_letters(self, *, status: str | None = None, limit: int = 100, offset: int = 0) -> dict[str, Any]:
        return await self._call(_dead_letters(status, limit, offset))

    async def redrive_dead_letter(self, letter_id: str) -> dict[str, Any]:
        return await self._call(_redrive_dead_letter(letter_id))

    async def journal(self, tenant_id: str, *, limit: int = 100, offset: int = 0) -> dict[str, Any]:
        return await self._call(_journal(tenant_id, limit, offset))

    async def portal_token(self, tenant_id: str, *, ttl_seconds: int = 3600) -> PortalLink:
        return await self._call(_portal_token(tenant_id, ttl_seconds))

    async def run_exports(self) -> ExportRun:
        return await self._call(_run_exports())

    async def exports(self, tenant_id: str, period: date | None = None) -> ExportReconciliation:
        return await self._call(_exports(tenant_id, period))

    async def _call(self, call: _Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method, call.path, params=call.params, content=call.body, headers=self._headers(call)
            )
        except httpx.TransportError as error:
            raise ConnectionFailed(f"{call.method} {self.base_url}{call.path}: {error!r}") from error
        if not response.is_success:
            raise problem_from_response(response)
        return call.parse(response.content)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()
