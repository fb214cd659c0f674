"""Serving a function app's HTTP triggers as an ASGI application, the way the Functions host does.

Routes come from the functions' bindings; requests become `func.HttpRequest`s and the functions'
`func.HttpResponse`s become responses. Keys are enforced by auth level: a function key (or the admin key) for
FUNCTION routes, the admin key only for ADMIN routes, in the `x-functions-key` header or the `code` parameter.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

import azure.functions as func

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

ROUTE_PREFIX = "/api/"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpRoute:
    name: str
    pattern: re.Pattern[str]
    methods: frozenset[str]
    auth_level: str
    handler: Callable[..., Any]
    arg_name: str


def route_pattern(template: str) -> re.Pattern[str]:
    """`usage/{tenant_id}/{metric}` as a regex with one named group per parameter (constraints ignored)."""
    parts = re.split(r"(\{[^}]+\})", template.strip("/"))
    regex = "".join(
        f"(?P<{part[1:-1].split(':')[0].rstrip('?')}>[^/]+)" if part.startswith("{") else re.escape(part)
        for part in parts
    )
    return re.compile(f"^{regex}$")


def trigger_of(function: Any) -> dict[str, Any]:
    """The trigger binding as the Functions host reads it: from the function's generated function.json."""
    bindings = json.loads(function.get_function_json())["bindings"]
    return next(b for b in bindings if str(b["type"]).endswith("Trigger"))


def http_routes(functions: list[Any]) -> list[HttpRoute]:
    routes = []
    for function in functions:
        data = trigger_of(function)
        if data["type"] != "httpTrigger":
            continue
        routes.append(
            HttpRoute(
                name=function.get_function_name(),
                pattern=route_pattern(data.get("route") or function.get_function_name()),
                methods=frozenset(m.upper() for m in (data.get("methods") or ["GET", "POST"])),
                auth_level=str(data.get("authLevel", "FUNCTION")).upper(),
                handler=function.get_user_function(),
                arg_name=data["name"],
            )
        )
    return routes


class FunctionKeysError(ValueError):
    pass


def parse_function_keys(text: str | None, names: Collection[str]) -> dict[str, list[str]]:
    """METERING_FUNCTION_KEYS: a JSON object from function name to the keys that open that function alone, as
    Azure's per-function keys do (`{"ingest": ["k-gw"], "usage": ["k-ro"]}`)."""
    if not text:
        return {}
    try:
        decoded = json.loads(text)
    except ValueError as error:
        raise FunctionKeysError(f"METERING_FUNCTION_KEYS is not JSON: {error}") from None
    if not isinstance(decoded, dict):
        raise FunctionKeysError("METERING_FUNCTION_KEYS must be a JSON object from function name to a list of keys")
    keys: dict[str, list[str]] = {}
    for name, value in decoded.items():
        if name not in names:
            raise FunctionKeysError(
                f"METERING_FUNCTION_KEYS names {name!r}, which is no HTTP function of the app "
                f"(they are: {', '.join(sorted(names))})"
            )
        if not isinstance(value, list) or not all(isinstance(k, str) and len(k) >= 8 for k in value):
            raise FunctionKeysError(f"METERING_FUNCTION_KEYS[{name!r}] must be a list of keys of 8 characters or more")
        keys[name] = list(value)
    return keys


# What App Service Authentication puts in a request for its signed-in user; it strips a client's own copy.
PRINCIPAL_HEADERS = ("x-ms-client-principal-name", "x-ms-client-principal-id", "x-ms-client-principal")
LOCAL_ACTOR = "local-admin"


class HttpHost:
    def __init__(
        self,
        routes: list[HttpRoute],
        function_key: str,
        admin_key: str,
        base_url: str = "",
        function_keys: Mapping[str, list[str]] | None = None,
    ) -> None:
        self.routes = routes
        self.function_key = function_key
        self.admin_key = admin_key
        self.base_url = base_url
        self.function_keys = dict(function_keys or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, headers, content = await self.respond(scope, bytes(body))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    async def respond(self, scope: Scope, body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        path: str = scope["path"]
        method: str = scope["method"].upper()
        params = dict(parse_qsl(scope.get("query_string", b"").decode(), keep_blank_values=True))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not path.startswith(ROUTE_PREFIX):
            return _problem(404, "Not found", f"no function serves {path}")
        relative = path[len(ROUTE_PREFIX) :]
        matched = [(route, route.pattern.match(relative)) for route in self.routes]
        candidates = [(route, match) for route, match in matched if match is not None]
        if not candidates:
            return _problem(404, "Not found", f"no function serves {path}")
        allowed = [(route, match) for route, match in candidates if method in route.methods]
        if not allowed:
            return _problem(405, "Method not allowed", f"{path} takes {', '.join(sorted(candidates[0][0].methods))}")
        route, match = allowed[0]
        key = headers.get("x-functions-key") or params.get("code")
        if not self.authorised(route, key):
            return _problem(401, "Unauthorized", "a valid key is required in the x-functions-key header or ?code=")
        # The dev host stands in for App Service Authentication too: the operator is the local one.
        for name in PRINCIPAL_HEADERS:
            headers.pop(name, None)
        if route.auth_level == "ADMIN":
            headers[PRINCIPAL_HEADERS[0]] = LOCAL_ACTOR
        query = scope.get("query_string", b"").decode()
        request = func.HttpRequest(
            method,
            f"{self.base_url}{path}" + (f"?{query}" if query else ""),
            headers=headers,
            params=params,
            route_params={name: unquote(value) for name, value in match.groupdict().items()},
            body=body,
        )
        try:
            response = await asyncio.to_thread(route.handler, **{route.arg_name: request})
        except Exception as error:  # the host answers 500 for a function that raised, and so do we
            log.exception("%s raised %s; answered 500", route.name, type(error).__name__)
            return _problem(500, "Function failed", f"{route.name} raised {type(error).__name__}")
        out_headers = [(k.lower().encode(), v.encode()) for k, v in response.headers.items()]
        if response.mimetype and not any(k == b"content-type" for k, _ in out_headers):
            content_type = response.mimetype + (f"; charset={response.charset}" if response.charset else "")
            out_headers.append((b"content-type", content_type.encode()))
        return response.status_code, out_headers, response.get_body() or b""

    def authorised(self, route: HttpRoute, key: str | None) -> bool:
        level = route.auth_level
        if level == "ANONYMOUS":
            return True
        if key is None:
            return False
        if hmac.compare_digest(key, self.admin_key):
            return True
        if level != "FUNCTION":
            return False
        own = self.function_keys.get(route.name, [])
        # Every candidate is compared, so the time taken says nothing of which one matched.
        matches = [hmac.compare_digest(key, candidate) for candidate in [self.function_key, *own]]
        return any(matches)


def _problem(status: int, title: str, detail: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()
    return status, [(b"content-type", b"application/problem+json")], body
