"""The models of the HTTP contract that clients share (docs/api.md explains the routes; `GET /api/openapi.json`,
generated from these and the handlers' other models, is the reference).

The client (`metering.client`) imports this module and `metering.core` only, so what is defined here may import
nothing but the core.
"""

from __future__ import annotations

from pydantic import BaseModel

# A request of events: at most this many bytes and events.
MAX_BODY_BYTES = 1024 * 1024
MAX_EVENTS = 1000


class Accepted(BaseModel):
    """202 of POST /api/events: every event durably handed to the transport, with its id in request order."""

    accepted: int
    event_ids: list[str]
