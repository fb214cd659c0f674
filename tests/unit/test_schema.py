"""The committed JSON Schema of a usage event is the one the model generates today."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from metering.cli import app
from metering.core.events import UsageEvent
from metering.core.schema import SCHEMA_PATH, event_schema, schema_text

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_schema_is_generated_from_the_model():
    committed = (ROOT / SCHEMA_PATH).read_text(encoding="utf-8")
    assert committed == schema_text(), f"regenerate it: python -m metering schema > {SCHEMA_PATH}"


def test_the_command_prints_the_schema():
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    assert result.stdout == schema_text()


def test_the_schema_describes_every_field_and_rule_of_the_model():
    schema = event_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(UsageEvent.model_fields)
    assert set(schema["required"]) == {name for name, field in UsageEvent.model_fields.items() if field.is_required()}
    text = next(o for o in schema["properties"]["quantity"]["anyOf"] if o["type"] == "string")
    decimal = re.compile(text["pattern"])
    assert all(decimal.fullmatch(q) for q in ("1", "-2.5", ".5", "123456789012.000000000001", "1e3"))
    assert not any(decimal.fullmatch(q) for q in ("", "abc", "1,5", "NaN", "Infinity", "\u0661"))
    names = re.compile(schema["properties"]["dimensions"]["propertyNames"]["pattern"])
    assert names.fullmatch("region")
    assert not names.fullmatch("Region")
    assert json.loads(schema_text()) == schema
