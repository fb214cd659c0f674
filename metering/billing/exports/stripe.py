"""Stripe Billing meters as a target: each intent a meter event, through the official SDK.

What Stripe's meter events take (its API reference, and the changelog of 2026-04-22):
- `event_name` (the meter's), `payload[stripe_customer_id]`, `payload[value]` (a number as text), `identifier`
  (at most 100 characters: ours are 35) and `timestamp` (Unix seconds, at most 35 calendar days old and 5
  minutes ahead);
- a value of at most 15 significant digits (more is refused with a 400), a whole number unless Stripe enabled
  decimals for the account (`METERING_STRIPE_DECIMALS`); negative values correct earlier usage;
- an identifier is unique over a rolling period of at least 24 hours: a second event with one answers 400
  "An event already exists with identifier ...", which for an intent sent again means it was delivered. After
  that window Stripe may take the same identifier as a new event, so an intent first sent longer ago (23 hours,
  with a margin) is reconciled against the meter's event summaries instead of being sent again;
- 1,000 calls a second per account in live mode, and one concurrent call per customer and meter: a run sends a
  customer's events for one meter one after the other, customers and meters side by side. A 429 and any 5xx or
  network failure is retried with exponential backoff and full jitter; what still fails waits for a later run.

A meter's hour changes are stamped at the start of their hour (inside the period when it starts or ends within
that hour); increases of a period-to-date figure now, or at the period's last second once it has ended.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import stripe

from metering.billing.exports import values
from metering.billing.exports.port import Answer, Outcome, Stamp
from metering.billing.exports.rows import Intent
from metering.core import decimals
from metering.core.clock import Clock, hour_key
from metering.core.meters import Meter
from metering.core.periods import BillingPeriod
from metering.tenants.records import TenantRecord

log = logging.getLogger(__name__)

NAME = "stripe"
CUSTOMER = "stripe_customer_id"
REUSED_IDENTIFIER = "An event already exists with identifier"
# Stripe takes events at most 35 calendar days old; an hour a little younger than that, so its stamp is too.
MAX_AGE = timedelta(days=35) - timedelta(hours=1)
RESEND_WINDOW = timedelta(hours=23)


class StripeTarget:
    name = NAME
    label = "Stripe"
    resend_window = RESEND_WINDOW
    takes_decreases = True

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        decimals_allowed: bool,
        clock: Clock,
        workers: int = 8,
        attempts: int = 4,
        backoff_seconds: float = 0.25,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self.decimals_allowed = decimals_allowed
        self.clock = clock
        self.workers = workers
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.jitter = jitter
        self._meters: dict[str, str] = {}
        self._meters_lock = threading.Lock()

    # -- what it holds ------------------------------------------------------------------------------------------

    def link(self, record: TenantRecord) -> dict[str, str] | None:
        customer = record.link(CUSTOMER)
        return None if customer is None else {CUSTOMER: customer}

    def metric_name(self, meter: Meter) -> str | None:
        return meter.stripe_event_name

    def hourly(self, meter: Meter) -> bool:
        return values.family(meter) is values.Family.HOURLY

    def exact(self, value: Decimal) -> Decimal:
        return values.stripe_exact(value, whole_numbers=not self.decimals_allowed)

    def billable(self, figure: Decimal, included: Decimal) -> Decimal:
        # Stripe's price applies the plan's included units itself: it is sent the whole figure.
        return figure

    def stamp_hour(self, period: BillingPeriod, hour: str, now: datetime) -> Stamp | None:
        start, _ = values.slot_bounds(period, hour)
        if start < now - MAX_AGE:
            return None
        return Stamp(hour, start)

    def stamp_increase(self, period: BillingPeriod, used: set[str], now: datetime) -> Stamp | None:
        instant = min(max(now, period.start), period.end - timedelta(seconds=1))
        if instant < now - MAX_AGE:
            return None
        instant = instant.replace(microsecond=0)
        return Stamp(hour_key(instant), instant)

    # -- sending --------------------------------------------------------------------------------------------------

    def send(self, intents: Sequence[Intent]) -> list[Outcome]:
        """Every intent, a customer's events for one meter one at a time (Stripe allows one concurrent call per
        customer and meter), the groups side by side."""
        groups: dict[tuple[str, str], list[int]] = {}
        for index, intent in enumerate(intents):
            groups.setdefault((intent.link[CUSTOMER], intent.name), []).append(index)
        outcomes: list[Outcome | None] = [None] * len(intents)

        def send_group(indexes: list[int]) -> None:
            for index in indexes:
                outcomes[index] = self._send_one(intents[index])

        with ThreadPoolExecutor(
            max_workers=max(1, min(self.workers, len(groups))), thread_name_prefix="stripe"
        ) as pool:
            list(pool.map(send_group, groups.values()))
        return [outcome for outcome in outcomes if outcome is not None]

    def _send_one(self, intent: Intent) -> Outcome:
        params: Any = {
            "event_name": intent.name,
            "identifier": intent.identifier,
            "timestamp": int(intent.timestamp.timestamp()),
            "payload": {CUSTOMER: intent.link[CUSTOMER], "value": decimals.to_str(intent.value)},
        }
        return self._call(lambda: self.client.v1.billing.meter_events.create(params=params), intent, _created)

    def _call(self, request: Callable[[], Any], intent: Intent, answer: Callable[[Intent, Any], Outcome]) -> Outcome:
        error = ""
        for attempt in range(self.attempts):
            if attempt:
                # Full jitter: exporters retrying at once spread out rather than meet again.
                time.sleep(self.jitter() * min(self.backoff_seconds * 2**attempt, 8.0))
            try:
                return answer(intent, request())
            except stripe.InvalidRequestError as refused:
                message = _message(refused)
                if REUSED_IDENTIFIER in message:
                    return Outcome(Answer.ACKED, intent.value)  # sent before, and Stripe has it
                if refused.http_status == 429:
                    error = f"429: {message}"
                    continue
                return Outcome(Answer.REFUSED, error=f"{refused.http_status}: {message}")
            except stripe.RateLimitError as throttled:
                error = f"429: {_message(throttled)}"
            except (stripe.AuthenticationError, stripe.PermissionError) as denied:
                # The account's key, not this event: every event would fail alike. Not settled, kept to resend.
                return Outcome(Answer.RETRY, error=f"{denied.http_status}: {_message(denied)}")
            except (stripe.APIConnectionError, stripe.APIError) as failed:
                error = f"{failed.http_status or 'no answer'}: {_message(failed)}"
            except stripe.StripeError as other:
                status = other.http_status or 0
                if 400 <= status < 500 and status not in (408, 409, 429):
                    return Outcome(Answer.REFUSED, error=f"{status}: {_message(other)}")
                error = f"{status or 'no answer'}: {_message(other)}"
        return Outcome(Answer.RETRY, error=error)

    # -- reconciling ------------------------------------------------------------------------------------------------

    def reconcile(self, intents: Sequence[Intent], held: Sequence[Decimal]) -> list[Outcome]:
        """Whether Stripe got each intent, from the meter's event summary of the intent's window for the customer:
        what it held for the key before (`held`) plus the intent's value, or `held` alone (never got it). Any
        other figure is left unresolved for an operator (someone else sent events to that meter, or Stripe has
        not aggregated them yet)."""
        return [self._reconcile_one(intent, before) for intent, before in zip(intents, held, strict=True)]

    def _reconcile_one(self, intent: Intent, before: Decimal) -> Outcome:
        def summary() -> Decimal:
            meter_id = self._meter_id(intent.name)
            if meter_id is None:
                raise LookupError(f"no Stripe meter has event_name {intent.name!r}")
            page = self.client.v1.billing.meters.event_summaries.list(
                meter_id,
                params={
                    "customer": intent.link[CUSTOMER],
                    "start_time": int(intent.window_start.timestamp()),
                    "end_time": int(intent.window_end.timestamp()),
                },
            )
            total = decimals.ZERO
            for item in page.auto_paging_iter():
                total = decimals.add(total, Decimal(repr(float(item.aggregated_value))))
            return total

        def judge(_intent: Intent, found: Decimal) -> Outcome:
            if found == decimals.add(before, intent.value):
                return Outcome(Answer.ACKED, intent.value)
            if found == before:
                return Outcome(Answer.LOST, error="Stripe's meter event summary does not hold it: sent again as new")
            return Outcome(
                Answer.UNRESOLVED,
                error=f"Stripe's meter event summary holds {decimals.to_str(found)} from "
                f"{intent.window_start.isoformat()} to {intent.window_end.isoformat()}: neither "
                f"{decimals.to_str(before)} (not delivered) nor {decimals.to_str(decimals.add(before, intent.value))} "
                "(delivered)",
            )

        try:
            return self._call(summary, intent, judge)
        except LookupError as missing:
            return Outcome(Answer.UNRESOLVED, error=str(missing))

    def _meter_id(self, event_name: str) -> str | None:
        with self._meters_lock:
            if event_name not in self._meters:
                for meter in self.client.v1.billing.meters.list(params={"limit": 100}).auto_paging_iter():
                    self._meters[meter.event_name] = meter.id
            return self._meters.get(event_name)


def _created(intent: Intent, _event: Any) -> Outcome:
    return Outcome(Answer.ACKED, intent.value)


def _message(error: stripe.StripeError) -> str:
    return str(error.user_message or error).splitlines()[0][:300]
