"""The JSON Schema of each notification kind: the body of its webhook and of its queue message.

Generated from the pydantic model each producer builds its message from (`PeriodClosedNotification`,
`ThresholdCrossedNotification`), so they cannot drift from what is sent; `schemas/<kind>.schema.json` is this
text, committed (`python -m metering schema <kind>`), and a test checks the two are equal. Every property is
required, as every message carries each of them; receivers should ignore properties they do not know.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from metering.billing.closing import PeriodClosedNotification
from metering.core.schema import DIALECT
from metering.quotas.alerts import ThresholdCrossedNotification

NOTIFICATIONS: dict[str, type[BaseModel]] = {
    "period.closed": PeriodClosedNotification,
    "quota.threshold_crossed": ThresholdCrossedNotification,
}


def schema_path(kind: str) -> str:
    return f"schemas/{kind}.schema.json"


def notification_schema(kind: str) -> dict[str, Any]:
    schema = NOTIFICATIONS[kind].model_json_schema(mode="serialization")
    return {"$schema": DIALECT, **schema}


def notification_schema_text(kind: str) -> str:
    return json.dumps(notification_schema(kind), indent=2, ensure_ascii=False) + "\n"
