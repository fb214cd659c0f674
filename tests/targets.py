"""Billing targets for tests: threaded HTTP servers on free loopback ports that behave as Stripe's meter events
API and the Azure Marketplace metering API do, as far as exporting relies on it.

`StripeServer`: `POST /v1/billing/meter_events` (form fields as the official SDK sends them) dedupes on
`identifier` for 24 hours by the test's clock, answering a reuse with Stripe's 400 ("An event already exists with
identifier ..."), and afterwards takes it as a new event (as Stripe may); it refuses values of more than 15
significant digits (and fractions, for an account without decimals), timestamps older than 35 days or more than
5 minutes ahead, unknown meters, and a second concurrent call for one customer and meter (429).
`GET /v1/billing/meters` lists the meters; `GET /v1/billing/meters/{id}/event_summaries` sums a customer's
events in a window, as the meter event summaries do.

`MarketplaceServer`: `POST /api/batchUsageEvent` takes at most 25 events, keeps the first per resource,
dimension and hour (a second answers `Duplicate` with the accepted event in its 409 body), answers `Expired` for
an hour more than 24 hours old, and `InvalidQuantity` for a quantity not above 0.

Both take a list of faults, one consumed per request: a status to answer instead, a hold longer than the client
waits, or the request applied and its answer lost (a 500 after it took effect).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

STRIPE_KEY = "sk_test_exports"
MARKETPLACE_TOKEN = "marketplace-test-token"


@dataclass(frozen=True)
class Fault:
    """What one request meets instead of a plain answer: `status` answered without applying anything, `hold`
    seconds of silence first (a timeout), `applied`: the request takes effect and then its answer is `status`."""

    status: int = 500
    hold: float = 0.0
    applied: bool = False


class _Server:
    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.faults: list[Fault] = []
        self.requests = 0
        self.lock = threading.Lock()
        self.released = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fault(self) -> Fault | None:
        with self.lock:
            self.requests += 1
            return self.faults.pop(0) if self.faults else None

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        raise NotImplementedError

    def start(self) -> _Server:
        server = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as the real services offer: a client reuses its connections.
            protocol_version = "HTTP/1.1"

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                parts = urlsplit(self.path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                fault = server.fault()
                status, document = 0, None
                if fault is not None and fault.applied:
                    server.handle(method, parts.path, parse_qs(parts.query), headers, body)
                if fault is not None:
                    if fault.hold:
                        server.released.wait(fault.hold)
                    status, document = fault.status, {"error": {"type": "api_error", "message": "injected failure"}}
                else:
                    status, document = server.handle(method, parts.path, parse_qs(parts.query), headers, body)
                encoded = json.dumps(document, default=str).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(encoded)))
                    self.end_headers()
                    self.wfile.write(encoded)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@dataclass
class MeterEvent:
    identifier: str
    event_name: str
    customer: str
    value: Decimal
    timestamp: int
    received: datetime


def _significant_digits(value: Decimal) -> int:
    digits = value.normalize().as_tuple().digits
    return max(1, len(digits)) if value else 1


def _stripe_error(status: int, message: str, kind: str = "invalid_request_error") -> tuple[int, Any]:
    return status, {"error": {"type": kind, "message": message}}


class StripeServer(_Server):
    """Stripe's meter events, meters and meter event summaries."""

    def __init__(self, clock: Callable[[], datetime], *, decimals: bool = False, hold_each: float = 0.0) -> None:
        super().__init__(clock)
        self.decimals = decimals
        self.hold_each = hold_each  # every create takes this long: concurrent calls overlap
        self.meters: dict[str, str] = {}
        self.events: list[MeterEvent] = []
        self.creates = 0
        self.refusals: list[str] = []
        self._identifiers: dict[str, datetime] = {}
        self._in_flight: set[tuple[str, str]] = set()

    def meter(self, *event_names: str) -> StripeServer:
        for name in event_names:
            self.meters[name] = f"mtr_{len(self.meters) + 1:04d}"
        return self

    def total(self, customer: str, event_name: str) -> Decimal:
        with self.lock:
            return sum(
                (e.value for e in self.events if (e.customer, e.event_name) == (customer, event_name)), Decimal(0)
            )

    def identifiers(self) -> list[str]:
        with self.lock:
            return [e.identifier for e in self.events]

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        if headers.get("authorization") != f"Bearer {STRIPE_KEY}":
            return _stripe_error(401, "Invalid API Key provided", "invalid_request_error")
        if method == "POST" and path == "/v1/billing/meter_events":
            return self._create(parse_qs(body.decode()))
        if method == "GET" and path == "/v1/billing/meters":
            data = [
                {"id": mid, "object": "billing.meter", "event_name": name, "status": "active"}
                for name, mid in self.meters.items()
            ]
            return 200, {"object": "list", "data": data, "has_more": False, "url": "/v1/billing/meters"}
        if method == "GET" and path.startswith("/v1/billing/meters/") and path.endswith("/event_summaries"):
            return self._summaries(path.split("/")[4], query)
        return _stripe_error(404, f"Unrecognized request URL ({method}: {path})")

    def _create(self, form: dict[str, list[str]]) -> tuple[int, Any]:
        field_of = {key: values[0] for key, values in form.items()}
        name = field_of.get("event_name", "")
        customer = field_of.get("payload[stripe_customer_id]", "")
        identifier = field_of.get("identifier", "")
        text = field_of.get("payload[value]", "")
        now = self.clock()
        key = (customer, name)
        with self.lock:
            self.creates += 1
            if key in self._in_flight:
                return _stripe_error(
                    429, "Too many concurrent requests for this customer and meter", "rate_limit_error"
                )
            self._in_flight.add(key)
        try:
            if self.hold_each:
                time.sleep(self.hold_each)
            with self.lock:
                refusal = self._refusal(name, identifier, text, int(field_of.get("timestamp", "0")), now)
                if refusal is not None:
                    self.refusals.append(refusal[1]["error"]["message"])
                    return refusal
                self._identifiers[identifier] = now
                event = MeterEvent(identifier, name, customer, Decimal(text), int(field_of["timestamp"]), now)
                self.events.append(event)
            return 200, {
                "object": "billing.meter_event",
                "created": int(now.timestamp()),
                "event_name": name,
                "identifier": identifier,
                "livemode": False,
                "payload": {"stripe_customer_id": customer, "value": text},
                "timestamp": event.timestamp,
            }
        finally:
            with self.lock:
                self._in_flight.discard(key)

    def _refusal(self, name: str, identifier: str, text: str, timestamp: int, now: datetime) -> tuple[int, Any] | None:
        seen = self._identifiers.get(identifier)
        if seen is not None and now - seen < timedelta(hours=24):
            return _stripe_error(400, f"An event already exists with identifier {identifier}.")
        if name not in self.meters:
            return _stripe_error(400, f"No active meter was found for event_name {name!r}.")
        try:
            value = Decimal(text)
        except ArithmeticError:
            return _stripe_error(400, f"Invalid value {text!r}.")
        if _significant_digits(value) > 15:
            return _stripe_error(400, f"The value in the event payload can have at most 15 digits. Received {text}.")
        if not self.decimals and value != value.to_integral_value():
            return _stripe_error(400, f"The value in the event payload must be a whole number. Received {text}.")
        instant = datetime.fromtimestamp(timestamp, UTC)
        if instant < now - timedelta(days=35) or instant > now + timedelta(minutes=5):
            return _stripe_error(400, "The timestamp must be within the past 35 calendar days or 5 minutes ahead.")
        return None

    def _summaries(self, meter_id: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        name = next((n for n, mid in self.meters.items() if mid == meter_id), None)
        if name is None:
            return _stripe_error(404, f"No such billing meter: {meter_id}")
        customer = query["customer"][0]
        start, end = int(query["start_time"][0]), int(query["end_time"][0])
        with self.lock:
            total = sum(
                (
                    e.value
                    for e in self.events
                    if (e.customer, e.event_name) == (customer, name) and start <= e.timestamp < end
                ),
                Decimal(0),
            )
        summary = {
            "id": f"mtrusg_{meter_id}_{start}",
            "object": "billing.meter_event_summary",
            "aggregated_value": float(total),
            "start_time": start,
            "end_time": end,
            "livemode": False,
            "meter": meter_id,
        }
        return 200, {
            "object": "list",
            "data": [summary],
            "has_more": False,
            "url": f"/v1/billing/meters/{meter_id}/event_summaries",
        }


@dataclass
class UsageEvent:
    resource: str
    dimension: str
    hour: str
    plan: str
    quantity: Decimal
    received: datetime


class MarketplaceServer(_Server):
    """The Marketplace metering service's batch usage events."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        super().__init__(clock)
        self.accepted: dict[tuple[str, str, str], UsageEvent] = {}
        self.batches: list[int] = []
        self.statuses: list[str] = []

    def total(self, resource: str, dimension: str) -> Decimal:
        with self.lock:
            return sum(
                (e.quantity for (r, d, _), e in self.accepted.items() if (r, d) == (resource.lower(), dimension)),
                Decimal(0),
            )

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        if headers.get("authorization") != f"Bearer {MARKETPLACE_TOKEN}":
            return 401, {"code": "Unauthorized", "message": "The authorization token is invalid."}
        if method != "POST" or path != "/api/batchUsageEvent" or query.get("api-version") != ["2018-08-31"]:
            return 404, {"code": "NotFound", "message": f"{method} {path}"}
        request = json.loads(body, parse_float=Decimal, parse_int=Decimal)["request"]
        if len(request) > 25:
            return 400, {"code": "BadArgument", "message": "The batch contained more than 25 usage events."}
        now = self.clock()
        results = []
        with self.lock:
            self.batches.append(len(request))
            for item in request:
                result = self._one(item, now)
                self.statuses.append(result["status"])
                results.append(result)
        return 200, {"count": len(results), "result": results}

    def _one(self, item: dict[str, Any], now: datetime) -> dict[str, Any]:
        start = datetime.fromisoformat(str(item["effectiveStartTime"]).replace("Z", "+00:00"))
        hour = start.astimezone(UTC).isoformat(timespec="hours")[:13]
        key = (str(item["resourceId"]).lower(), str(item["dimension"]), hour)
        echo = {k: item[k] for k in ("resourceId", "quantity", "dimension", "effectiveStartTime", "planId")}
        found = self.accepted.get(key)
        if found is not None:
            accepted = {
                **echo,
                "status": "Duplicate",
                "quantity": found.quantity,
                "messageTime": found.received.isoformat(),
            }
            return {
                **echo,
                "status": "Duplicate",
                "messageTime": "0001-01-01T00:00:00",
                "error": {
                    "additionalInfo": {"acceptedMessage": accepted},
                    "message": "This usage event already exist.",
                    "code": "Conflict",
                },
            }
        if start < now - timedelta(hours=24):
            return {
                **echo,
                "status": "Expired",
                "error": {"code": "Expired", "message": "Usage is older than 24 hours."},
            }
        quantity = Decimal(item["quantity"])
        if quantity <= 0:
            return {
                **echo,
                "status": "InvalidQuantity",
                "error": {"code": "InvalidQuantity", "message": "The quantity must be above 0."},
            }
        self.accepted[key] = UsageEvent(key[0], key[1], hour, str(item["planId"]), quantity, now)
        return {
            **echo,
            "status": "Accepted",
            "usageEventId": f"evt-{len(self.accepted)}",
            "messageTime": now.isoformat(),
        }


class IdentityEndpoint:
    """The managed identity endpoint App Service and Functions give an app (IDENTITY_ENDPOINT, IDENTITY_HEADER):
    the one part of the Marketplace's sign-in that is Azure's, served here as Azure serves it. It issues the token
    MarketplaceServer takes, and records each request's query and identity header."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, list[str]], str | None]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.requests.append((parse_qs(urlsplit(self.path).query), self.headers.get("X-IDENTITY-HEADER")))
                body = json.dumps(
                    {
                        "access_token": MARKETPLACE_TOKEN,
                        "expires_on": str(int(time.time()) + 3600),
                        "resource": "20e940b3-4c77-4b0b-9a53-9e16a1b010a7",
                        "token_type": "Bearer",
                    }
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/msi/token"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
