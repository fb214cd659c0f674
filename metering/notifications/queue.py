"""The Storage-queue sink of the outbox: what billing integrations read `period.closed` and
`quota.threshold_crossed` from (the `METERING_NOTIFICATIONS_QUEUE`)."""

from __future__ import annotations

import contextlib

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient


class QueueSink:
    """A Storage queue. Messages are Base64 encoded, as the Functions queue trigger expects by default."""

    def __init__(self, client: QueueClient) -> None:
        self.client = client
        self._ready = False

    def send(self, message_id: str, text: str) -> None:
        if not self._ready:
            with contextlib.suppress(ResourceExistsError):
                self.client.create_queue()
            self._ready = True
        self.client.send_message(text.encode())
