"""The Azure Marketplace metering service as a target: usage above a plan's included units, as usage events.

What the metering service takes (Microsoft's "Marketplace metered billing APIs"):
- `POST /api/batchUsageEvent?api-version=2018-08-31` with at most 25 events, each `resourceId` (the SaaS
  subscription id, or a managed application's resource usage id), `quantity` (above 0), `dimension` (a custom
  dimension of the plan), `effectiveStartTime` (UTC, at most 24 hours old) and `planId`, under a bearer token
  for the resource `20e940b3-4c77-4b0b-9a53-9e16a1b010a7` (connections.py gets it);
- one event per resource, dimension and hour: the first is kept, and a second gets `Duplicate` (a 409 whose
  body holds the accepted event, its quantity included). So an intent sent again, unchanged, is either taken or
  answered with what the Marketplace holds for its hour: nothing is sent twice, and an intent whose answer was
  lost is reconciled by sending it again;
- a 200 with a status per event: `Accepted`, `Duplicate` (already accepted), `Expired` (its hour is more than
  24 hours old: its value goes in the next intent, stamped with the current hour), and refusals
  (`ResourceNotFound`, `ResourceNotAuthorized`, `InvalidDimension`, `InvalidQuantity`, `BadArgument`, `Error`).

It takes no negative quantities: a fall of the billable figure (a cancel) is reported as a difference. Its
plans bill in their own terms, so a tenant's Marketplace plan must include what its plan here includes, and
bill in the same periods (README, "Selling through the Azure Marketplace").
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from metering.billing.exports import values
from metering.billing.exports.port import Answer, Outcome, Stamp
from metering.billing.exports.rows import Intent
from metering.core import decimals
from metering.core.clock import Clock, hour_key
from metering.core.meters import Meter
from metering.core.periods import BillingPeriod
from metering.tenants.records import TenantRecord

log = logging.getLogger(__name__)

NAME = "marketplace"
RESOURCE = "marketplace_resource_id"
PLAN = "marketplace_plan_id"
PATH = "/api/batchUsageEvent"
API_VERSION = "2018-08-31"
# The Entra resource the metering service's tokens are issued for.
RESOURCE_APP = "20e940b3-4c77-4b0b-9a53-9e16a1b010a7"
MAX_BATCH = 25
# The metering service takes hours at most 24 hours old: an hour a little younger than that, for a stamp.
MAX_AGE = timedelta(hours=23)
_REFUSALS = {"ResourceNotFound", "ResourceNotAuthorized", "InvalidDimension", "InvalidQuantity", "BadArgument", "Error"}


class MarketplaceTarget:
    name = NAME
    label = "Azure Marketplace"
    # An hour is kept for good once taken, so sending an intent again is how it is reconciled: a window of its own
    # is the hours the service still takes.
    resend_window = timedelta(hours=24)
    takes_decreases = False

    def __init__(
        self,
        http: httpx.Client,
        base_url: str,
        token: Callable[[], str],
        *,
        clock: Clock,
        attempts: int = 4,
        backoff_seconds: float = 0.25,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.http = http
        self.url = base_url.rstrip("/") + PATH
        self.token = token
        self.clock = clock
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.jitter = jitter

    # -- what it holds ------------------------------------------------------------------------------------------

    def link(self, record: TenantRecord) -> dict[str, str] | None:
        resource, plan = record.link(RESOURCE), record.link(PLAN)
        return None if resource is None or plan is None else {RESOURCE: resource, PLAN: plan}

    def metric_name(self, meter: Meter) -> str | None:
        return meter.marketplace_dimension

    def hourly(self, meter: Meter) -> bool:
        return False  # the period-to-date figure above what the plan includes, whatever the kind

    def exact(self, value: Decimal) -> Decimal:
        return value

    def billable(self, figure: Decimal, included: Decimal) -> Decimal:
        return values.marketplace_billable(figure, included)

    def stamp_hour(self, period: BillingPeriod, hour: str, now: datetime) -> Stamp | None:
        return None  # no meter is sent by the hour here

    def stamp_increase(self, period: BillingPeriod, used: set[str], now: datetime) -> Stamp | None:
        """The current hour; once the period has ended, its latest hour the service still takes and that this key
        has not used (so the usage lands in the term it belongs to), else the current hour. None when the one
        hour to use is taken already: the next hour takes it."""
        current = hour_key(now)
        if now >= period.end:
            for hour in reversed(values.hours_between(max(period.start, now - MAX_AGE), period.end)):
                start = values.hour_start(hour)
                if start >= now - MAX_AGE and hour not in used:
                    return Stamp(hour, start)
        if current in used:
            return None
        return Stamp(current, values.hour_start(current))

    # -- sending --------------------------------------------------------------------------------------------------

    def send(self, intents: Sequence[Intent]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for start in range(0, len(intents), MAX_BATCH):
            outcomes += self._batch(intents[start : start + MAX_BATCH])
        return outcomes

    def reconcile(self, intents: Sequence[Intent], held: Sequence[Decimal]) -> list[Outcome]:
        # The hour an intent is stamped with is kept for good: sent again, unchanged, it is accepted now, or
        # answered Duplicate with what the service holds for it, or Expired (never held). Nothing is blind here.
        return self.send(intents)

    def _batch(self, intents: Sequence[Intent]) -> list[Outcome]:
        body = _body(intents)
        error = ""
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.jitter() * min(self.backoff_seconds * 2**attempt, 8.0))
            try:
                response = self.http.post(
                    self.url,
                    params={"api-version": API_VERSION},
                    content=body,
                    headers={"content-type": "application/json", "authorization": f"Bearer {self.token()}"},
                )
            except httpx.HTTPError as failed:
                error = f"no answer: {type(failed).__name__}: {failed}"
                continue
            except Exception as failed:  # the token's credential: an outage of Entra, or a setting to fix
                error = f"no token: {type(failed).__name__}: {str(failed).splitlines()[0][:300]}"
                break
            if response.status_code == 200:
                return _outcomes(intents, response)
            error = f"{response.status_code}: {response.text[:300]}"
            if response.status_code == 400:
                return [Outcome(Answer.REFUSED, error=error) for _ in intents]
            if response.status_code in (401, 403):
                break  # the token: every batch would fail alike; kept to send again
        return [Outcome(Answer.RETRY, error=error) for _ in intents]


def _body(intents: Sequence[Intent]) -> bytes:
    """The request, with each quantity written as the exact decimal it is (a float would not be)."""
    items = []
    for intent in intents:
        fields = {
            "resourceId": intent.link[RESOURCE],
            "dimension": intent.name,
            "effectiveStartTime": intent.timestamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "planId": intent.link[PLAN],
        }
        encoded = json.dumps(fields, separators=(",", ":"))
        items.append(encoded[:-1] + f',"quantity":{decimals.to_str(intent.value)}}}')
    return ('{"request":[' + ",".join(items) + "]}").encode()


def _key(resource: Any, dimension: Any, start: Any) -> tuple[str, str, str]:
    text = str(start or "")
    return (str(resource or "").lower(), str(dimension or ""), text[:13])


def _outcomes(intents: Sequence[Intent], response: httpx.Response) -> list[Outcome]:
    try:
        document = json.loads(response.content, parse_float=Decimal, parse_int=Decimal)
        results = {
            _key(item.get("resourceId"), item.get("dimension"), item.get("effectiveStartTime")): item
            for item in document.get("result", [])
        }
    except (ValueError, AttributeError, TypeError) as unreadable:
        return [Outcome(Answer.RETRY, error=f"an answer that does not read: {unreadable}") for _ in intents]
    outcomes = []
    for intent in intents:
        item = results.get(_key(intent.link[RESOURCE], intent.name, intent.timestamp.isoformat()))
        outcomes.append(_outcome(intent, item))
    return outcomes


def _outcome(intent: Intent, item: dict[str, Any] | None) -> Outcome:
    if item is None:
        return Outcome(Answer.RETRY, error="the answer has no status for this event")
    status = str(item.get("status"))
    if status == "Accepted":
        return Outcome(Answer.ACKED, _quantity(item.get("quantity"), intent.value))
    if status == "Duplicate":
        # Its hour was taken before: by this very intent (its first answer was lost), or by another send. The
        # 409 body holds what the service keeps for it.
        accepted = ((item.get("error") or {}).get("additionalInfo") or {}).get("acceptedMessage") or {}
        return Outcome(Answer.ACKED, _quantity(accepted.get("quantity", item.get("quantity")), intent.value))
    if status == "Expired":
        return Outcome(Answer.EXPIRED, error="Expired: its hour is more than 24 hours old; sent again in a later hour")
    message = ((item.get("error") or {}).get("message")) or ""
    if status in _REFUSALS:
        return Outcome(Answer.REFUSED, error=f"{status}: {message}".strip(": "))
    return Outcome(Answer.RETRY, error=f"status {status!r}: {message}")


def _quantity(value: Any, sent: Decimal) -> Decimal:
    try:
        return decimals.from_str(str(value))
    except (ValueError, ArithmeticError):
        return sent
