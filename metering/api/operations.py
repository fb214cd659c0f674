"""The operator's actions over HTTP (admin key): apply or discard a late event, re-drive a dead letter, read the
journal, list what was set aside across tenants. Every action is idempotent and journaled before it answers.

The actor is the signed-in user App Service Authentication puts in `X-MS-CLIENT-PRINCIPAL-NAME` (it strips a
client's own copy of the header); without it, the admin key is all that is known of who asked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from metering.api.http import Response, bad_request, bad_tenant, json_object, ok, problem
from metering.billing.journal import Journal
from metering.billing.late import LateEvent, LateEvents
from metering.billing.late_actions import (
    LateActionRefused,
    LateActionResult,
    LateActions,
    LateEventNotFound,
    status_of,
)
from metering.ingest.deadletters import DeadLetters
from metering.ingest.redrive import DeadLetterNotFound, Redrive, RedriveRefused, describe
from metering.notifications.outbox import OUTBOX
from metering.stores import RowTable

# The outbox keeps a record of each message sent once (notifications/outbox.py): threshold alerts among them.
SENT = "r|"
ALERT_KIND = "quota.threshold_crossed"
PRINCIPAL_HEADER = "x-ms-client-principal-name"
ADMIN_KEY_ACTOR = "admin key"
MAX_REASON = 500
DEFAULT_PAGE = 100
MAX_PAGE = 1000
SCAN_LIMIT = 10_000  # rows read for a list across tenants: an operator's view, not an export
_DIGEST = re.compile(r"[0-9a-f]{32}")
_LETTER_ID = re.compile(r"[A-Za-z0-9_-]{4,1400}")


def _instant(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("no offset")
    return value


def actor_of(headers: Mapping[str, str]) -> str:
    name = next((v for k, v in headers.items() if k.lower() == PRINCIPAL_HEADER), "").strip()
    return name[:256] if name and name.isprintable() else ADMIN_KEY_ACTOR


def _limit(params: Mapping[str, str]) -> int | Response:
    text = params.get("limit", str(DEFAULT_PAGE))
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        return bad_request("limit", f"must be a whole number from 1 to {MAX_PAGE}")
    return int(text)


def _offset(params: Mapping[str, str]) -> int | Response:
    text = params.get("offset", "0")
    if not text.isdigit() or int(text) > SCAN_LIMIT:
        return bad_request("offset", f"must be a whole number from 0 to {SCAN_LIMIT}")
    return int(text)


def _page(items: list[Any], params: Mapping[str, str]) -> Response:
    limit, offset = _limit(params), _offset(params)
    if isinstance(limit, Response):
        return limit
    if isinstance(offset, Response):
        return offset
    return ok(
        {
            "items": items[offset : offset + limit],
            "total": len(items),
            "next_offset": offset + limit if offset + limit < len(items) else None,
        }
    )


def late_item(late_id: str, tenant_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
    record = LateEvent.model_validate(data)
    return {**record.model_dump(mode="json"), "id": late_id, "tenant_id": tenant_id, "status": status_of(record).value}


def _action(result: LateActionResult, tenant_id: str) -> dict[str, Any]:
    return {
        "late_event": late_item(result.id, tenant_id, result.record.model_dump(mode="json")),
        "journal": result.entry.model_dump(mode="json"),
        "repeated": result.repeated,
    }


class Operations:
    def __init__(
        self,
        *,
        late: LateEvents,
        late_actions: LateActions,
        dead_letters: DeadLetters,
        redrive: Redrive,
        journal: Journal,
        conflicts: RowTable,
        control: RowTable,
    ) -> None:
        self.late = late
        self.late_actions = late_actions
        self.dead_letters = dead_letters
        self.redrive = redrive
        self.journal = journal
        self.conflicts = conflicts
        self.control = control

    # -- late events -------------------------------------------------------------------------------------------

    def late_apply(self, tenant_id: str, late_id: str, headers: Mapping[str, str]) -> Response:
        if (refused := self._late_address(tenant_id, late_id)) is not None:
            return refused
        try:
            result = self.late_actions.apply(tenant_id, late_id, actor_of(headers))
        except LateEventNotFound as error:
            return problem(404, "Unknown late event", str(error))
        except LateActionRefused as error:
            return problem(409, "Cannot apply", f"late event {late_id} of {tenant_id}: {error}")
        return ok(_action(result, tenant_id))

    def late_discard(self, tenant_id: str, late_id: str, body: bytes, headers: Mapping[str, str]) -> Response:
        if (refused := self._late_address(tenant_id, late_id)) is not None:
            return refused
        decoded = json_object(body, '{"reason": "..."}')
        if isinstance(decoded, Response):
            return decoded
        if unknown := sorted(set(decoded) - {"reason"}):
            return bad_request(unknown[0], "is not a field of a discard (reason)")
        reason = decoded.get("reason")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON or not reason.isprintable():
            return bad_request("reason", f"must be 1 to {MAX_REASON} printable characters saying why")
        try:
            result = self.late_actions.discard(tenant_id, late_id, reason.strip(), actor_of(headers))
        except LateEventNotFound as error:
            return problem(404, "Unknown late event", str(error))
        except LateActionRefused as error:
            return problem(409, "Cannot discard", f"late event {late_id} of {tenant_id}: {error}")
        return ok(_action(result, tenant_id))

    def late_events(self, params: Mapping[str, str]) -> Response:
        """Late events of every tenant (or of `tenant_id`), newest first, filtered by `status`."""
        wanted = params.get("status")
        statuses = {"waiting", "carried", "applying", "applied", "discarded"}
        if wanted is not None and wanted not in statuses:
            return bad_request("status", f"must be one of {', '.join(sorted(statuses))}")
        tenant = params.get("tenant_id")
        if tenant is not None and (refused := bad_tenant(tenant)) is not None:
            return refused
        rows = (
            [(tenant, row) for row in self.late.table.partition(tenant)]
            if tenant is not None
            else self.late.table.scan(SCAN_LIMIT)
        )
        items = [late_item(row.key, partition, row.data) for partition, row in rows]
        items = [item for item in items if wanted is None or item["status"] == wanted]
        items.sort(key=lambda item: (item["detected"], item["id"]), reverse=True)
        return _page(items, params)

    def _late_address(self, tenant_id: str, late_id: str) -> Response | None:
        if (refused := bad_tenant(tenant_id)) is not None:
            return refused
        if not _DIGEST.fullmatch(late_id):
            return bad_request("id", "must be a late event's id: 32 hex digits, as its list gives it")
        return None

    # -- dead letters and conflicts ----------------------------------------------------------------------------

    def dead_letter_redrive(self, letter_id: str, headers: Mapping[str, str]) -> Response:
        if not _LETTER_ID.fullmatch(letter_id):
            return bad_request("id", "must be a dead letter's id, as its list gives it")
        try:
            outcome = self.redrive.redrive(letter_id, actor_of(headers))
        except DeadLetterNotFound as error:
            return problem(404, "Unknown dead letter", str(error))
        except RedriveRefused as error:
            return problem(409, "Cannot re-drive", f"dead letter {letter_id}: {error}")
        return ok(outcome.to_json())

    def dead_letter_list(self, params: Mapping[str, str]) -> Response:
        waiting = params.get("status")
        if waiting is not None and waiting not in {"waiting", "redriven"}:
            return bad_request("status", "must be waiting or redriven")
        letters = self.dead_letters.list(SCAN_LIMIT)
        items = [describe(letter, self.dead_letters.body(letter)) for letter in letters]
        if waiting is not None:
            items = [item for item in items if (item["redriven"] is None) == (waiting == "waiting")]
        items.reverse()  # newest first
        return _page(items, params)

    def conflict_list(self, params: Mapping[str, str]) -> Response:
        items = [
            {"tenant_id": partition, "id": row.key, **row.data} for partition, row in self.conflicts.scan(SCAN_LIMIT)
        ]
        items.sort(key=lambda item: str(item.get("detected") or item.get("recorded") or ""), reverse=True)
        return _page(items, params)

    def alert_list(self, params: Mapping[str, str]) -> Response:
        """Threshold alerts sent (each once per tenant, meter, period and threshold), newest first."""
        tenant = params.get("tenant_id")
        if tenant is not None and (refused := bad_tenant(tenant)) is not None:
            return refused
        prefix = f"{SENT}{ALERT_KIND}:" + (f"{tenant}:" if tenant else "")
        rows = self.control.range(OUTBOX, prefix, prefix + "~", limit=SCAN_LIMIT)
        keys = ("id", "tenant_id", "metric", "period_start", "threshold_percent", "hard_limit", "usage", "detected")
        items = [{key: row.data.get(key) for key in keys} for row in rows]
        items.sort(key=lambda item: str(item["detected"] or ""), reverse=True)
        return _page(items, params)

    # -- the journal -------------------------------------------------------------------------------------------

    def journal_list(self, params: Mapping[str, str]) -> Response:
        tenant = params.get("tenant_id")
        if tenant is None:
            return bad_request("tenant_id", "is required: the journal is kept per tenant")
        if (refused := bad_tenant(tenant)) is not None:
            return refused
        bounds: dict[str, datetime | None] = {}
        for name in ("since", "until"):
            text = params.get(name)
            try:
                bounds[name] = _instant(text) if text is not None else None
            except ValueError:
                return bad_request(name, "must be an RFC 3339 time, e.g. 2026-12-01T00:00:00Z")
        entries = self.journal.list(tenant, since=bounds["since"], until=bounds["until"])
        items = [entry.model_dump(mode="json") for entry in reversed(entries)]  # newest first
        return _page(items, params)
