"""Messages to billing integrations (`period.closed`, `quota.threshold_crossed`) through an outbox.

A message is first written as an outbox row, then handed to the sink (a Storage queue) and its row deleted: so
it is sent at least once, whatever fails between. Every message carries a stable `id`; consumers dedupe on it. An alert
is recorded once: its record row and its outbox row are created in one transaction, and a second attempt
meets the record and creates nothing.

    outbox | r|<message id>    the record of a message that must exist once (alerts)
    outbox | q|<message id>    a message waiting to be sent
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from metering.stores import CommitConflict, Create, RowTable

log = logging.getLogger(__name__)

OUTBOX = "outbox"


class Sink(Protocol):
    """Where messages go once they leave the outbox: a Storage queue (notifications/queue.py); the webhooks of
    a later issue are another sink. A send that raises leaves the message queued for the next dispatch."""

    def send(self, message_id: str, text: str) -> None: ...


class DiscardSink:
    """Delivers nowhere: for a rebuild, whose notifications were sent when they happened live."""

    def send(self, message_id: str, text: str) -> None:
        pass


class Outbox:
    def __init__(self, control: RowTable, sink: Sink) -> None:
        self.control = control
        self.sink = sink

    def add(self, message_id: str, body: dict[str, Any], *, once: bool = False) -> bool:
        """Queue a message; with `once`, only if it was never queued before. Returns whether it was added."""
        message = {"id": message_id, **body}
        if not once:
            self.control.upsert(OUTBOX, "q|" + message_id, message)
            return True
        try:
            self.control.commit(OUTBOX, [Create("r|" + message_id, message), Create("q|" + message_id, message)])
        except CommitConflict:
            return False
        return True

    def dispatch(self, limit: int = 1000) -> int:
        """Send waiting messages; a failed send leaves its row for the next run."""
        sent = 0
        for row in self.control.range(OUTBOX, "q|", "q|~", limit=limit):
            try:
                self.sink.send(row.data["id"], json.dumps(row.data, separators=(",", ":")))
            except Exception:
                log.exception("outbox: sending %s failed; it stays queued for the next run", row.data["id"])
                continue
            self.control.delete(OUTBOX, [row.key])
            sent += 1
        return sent
