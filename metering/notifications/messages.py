"""The shape every notification shares, on the queue and in a webhook's body alike.

Each kind is a pydantic model (`period.closed` in billing/closing.py, `quota.threshold_crossed` in
quotas/alerts.py) that its producer builds the message from, so the JSON Schemas committed under `schemas/`
(api/notification_schemas.py) are generated from what is sent and cannot drift from it. Receivers dedupe on
`id`, which stays the same for every delivery of one notification.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from metering.core.clock import format_timestamp
from metering.core.decimals import to_str

_INSTANT_SCHEMA = WithJsonSchema({"type": "string", "format": "date-time"})

# A period boundary as the messages have always carried it (`2026-10-01T00:00:00+00:00`).
PeriodInstant = Annotated[datetime, PlainSerializer(datetime.isoformat, return_type=str), _INSTANT_SCHEMA]
# When something was detected, to the microsecond in UTC (`2026-11-24T14:47:04.085835Z`).
DetectedInstant = Annotated[datetime, PlainSerializer(format_timestamp, return_type=str), _INSTANT_SCHEMA]

# An exact decimal in its canonical text (`85`, `12.5`): a JSON number would be a double, and lose digits.
DecimalText = Annotated[
    Decimal,
    PlainSerializer(to_str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"}),
]


class Notification(BaseModel):
    """What every notification carries; a kind adds its own fields (and receivers ignore fields they do not
    know: later versions may add some)."""

    # Every field is in every message, defaults included: the schema says so.
    model_config = ConfigDict(frozen=True, json_schema_serialization_defaults_required=True)

    id: str = Field(description="Stable for every delivery of this notification (the webhook-id): dedupe on it")
    type: str = Field(description="The kind of notification")

    def message(self) -> dict[str, Any]:
        """The message as JSON values, without the `id` (the outbox adds it as it queues the message)."""
        return self.model_dump(mode="json", exclude={"id"})
