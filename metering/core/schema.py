"""The JSON Schema of a usage event, for producers that write to Event Hubs directly in any language.

Generated from the pydantic model that validates events (`UsageEvent`), so it cannot drift from what ingest and
the aggregator accept; `schemas/usage-event.schema.json` is this text, committed (`python -m metering schema`),
and a test checks the two are equal. Two rules pydantic does not express are added: a quantity string is decimal
text, and dimension names follow their pattern. Rules that need the meter catalog (a known metric, its unit,
negative values) are not in the schema: see the README.
"""

from __future__ import annotations

import json
from typing import Any

from metering.core.decimals import DECIMAL_TEXT
from metering.core.events import UsageEvent
from metering.core.meters import DIMENSION_PATTERN

SCHEMA_PATH = "schemas/usage-event.schema.json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def event_schema() -> dict[str, Any]:
    schema = UsageEvent.model_json_schema(mode="validation")
    properties = schema["properties"]
    for option in properties["quantity"]["anyOf"]:
        if option.get("type") == "string":
            option["pattern"] = f"^{DECIMAL_TEXT.pattern}$"
    properties["dimensions"]["propertyNames"] = {"pattern": DIMENSION_PATTERN}
    properties["timestamp"]["description"] = (
        "RFC 3339 with an offset; ingest accepts by default at most 5 minutes ahead and 35 days back"
    )
    return {"$schema": DIALECT, **schema}


def schema_text() -> str:
    return json.dumps(event_schema(), indent=2, ensure_ascii=False) + "\n"
