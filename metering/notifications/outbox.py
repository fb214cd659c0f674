"""Messages to billing integrations (`period.closed`, `quota.threshold_crossed`) through an outbox.

A message is first written as an outbox row, then handed to the sink (a Storage queue) and its row deleted: so
it is sent at least once, whatever fails between. Every message carries a stable `id`; consumers dedupe on it. An alert
is recorded once: its record row and its outbox row are created in one transaction, and a second attempt
meets the record and creates nothing.

    outbox | r|<message id>    the record of a message that must exist once (alerts)
    outbox | q|<message id>    a message waiting to be sent

With webhooks on, the same write also creates the message's webhook delivery (`w|<message id>`,
webhooks/rows.py): in the one transaction for the messages recorded once, else as an upsert right after the
queue row's (the producers of those repeat the whole write until they are done). Sending to the queue never
waits on a webhook: after a dispatch, `after_dispatch` starts the webhook deliveries in the background.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from metering.stores import CommitConflict, Create, Operation, RowTable

if TYPE_CHECKING:
    from metering.notifications.webhooks.rows import WebhookDeliveries

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
    def __init__(
        self,
        control: RowTable,
        sink: Sink,
        *,
        webhooks: WebhookDeliveries | None = None,
        after_dispatch: Callable[[], None] | None = None,
    ) -> None:
        self.control = control
        self.sink = sink
        self.webhooks = webhooks
        self.after_dispatch = after_dispatch

    def add(self, message_id: str, body: dict[str, Any], *, once: bool = False) -> bool:
        """Queue a message; with `once`, only if it was never queued before. Returns whether it was added."""
        message = {"id": message_id, **body}
        if not once:
            self.control.upsert(OUTBOX, "q|" + message_id, message)
            if self.webhooks is not None:
                self.webhooks.upsert(message_id, message)
            return True
        operations: list[Operation] = [Create("r|" + message_id, message), Create("q|" + message_id, message)]
        if self.webhooks is not None:
            operations.append(self.webhooks.create(message_id, message))
        try:
            self.control.commit(OUTBOX, operations)
        except CommitConflict:
            return False
        return True

    def dispatch(self, limit: int = 1000) -> int:
        """Send waiting messages; a failed send leaves its row for the next run."""
        sent = 0
        rows = self.control.range(OUTBOX, "q|", "q|~", limit=limit)
        for row in rows:
            try:
                self.sink.send(row.data["id"], json.dumps(row.data, separators=(",", ":")))
            except Exception:
                log.exception("outbox: sending %s failed; it stays queued for the next run", row.data["id"])
                continue
            self.control.delete(OUTBOX, [row.key])
            sent += 1
        # Their webhook deliveries were written with them; a failed queue send does not hold them back.
        if rows and self.after_dispatch is not None:
            self.after_dispatch()
        return sent
