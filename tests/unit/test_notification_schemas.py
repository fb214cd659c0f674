"""The committed JSON Schema of each notification kind is the one its model generates today, and the messages
its producer sends carry every property it lists."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metering.api.notification_schemas import NOTIFICATIONS, notification_schema, notification_schema_text, schema_path
from metering.billing.closing import PeriodClosedNotification, Statement, StatementLine
from metering.cli import app
from metering.quotas.alerts import ThresholdCrossedNotification

ROOT = Path(__file__).resolve().parents[2]
START, END = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)


@pytest.mark.parametrize("kind", sorted(NOTIFICATIONS))
def test_the_committed_schema_is_generated_from_the_model(kind):
    committed = (ROOT / schema_path(kind)).read_text(encoding="utf-8")
    assert committed == notification_schema_text(kind), (
        f"regenerate: python -m metering schema {kind} > {schema_path(kind)}"
    )


@pytest.mark.parametrize("kind", sorted(NOTIFICATIONS))
def test_the_command_prints_the_schema(kind):
    result = CliRunner().invoke(app, ["schema", kind])
    assert result.exit_code == 0
    assert result.stdout == notification_schema_text(kind)


def test_an_unknown_kind_is_refused_with_the_known_ones():
    result = CliRunner().invoke(app, ["schema", "invoice.paid"])
    assert result.exit_code == 2
    assert "'invoice.paid' is not one of" in result.output
    assert all(kind in result.output for kind in ("usage-event", "period.closed", "quota.threshold_crossed"))


@pytest.mark.parametrize("kind", sorted(NOTIFICATIONS))
def test_every_property_is_required_and_the_type_is_fixed(kind):
    schema = notification_schema(kind)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["required"]) == set(schema["properties"]) == set(NOTIFICATIONS[kind].model_fields)
    assert schema["properties"]["type"]["const"] == kind
    # Receivers must take properties a later version adds.
    assert schema.get("additionalProperties", True) is not False


def _threshold() -> ThresholdCrossedNotification:
    return ThresholdCrossedNotification(
        id="quota.threshold_crossed:acme:api.requests:2026-10-01:80",
        tenant_id="acme",
        metric="api.requests",
        period_start=START,
        period_end=END,
        threshold_percent=Decimal(80),
        hard_limit=Decimal("100.00"),
        usage=Decimal("80.5"),
        detected=datetime(2026, 10, 20, 9, 30, 1, 5, tzinfo=UTC),
    )


def test_a_threshold_message_is_what_the_queue_has_always_carried():
    notice = _threshold()
    message = {"id": notice.id, **notice.message()}
    assert message == {
        "id": "quota.threshold_crossed:acme:api.requests:2026-10-01:80",
        "type": "quota.threshold_crossed",
        "tenant_id": "acme",
        "metric": "api.requests",
        "period_start": "2026-10-01T00:00:00+00:00",
        "period_end": "2026-11-01T00:00:00+00:00",
        "threshold_percent": "80",
        "hard_limit": "100",
        "usage": "80.5",
        "detected": "2026-10-20T09:30:01.000005Z",
    }
    schema = notification_schema("quota.threshold_crossed")
    assert set(message) == set(schema["properties"])
    decimal = re.compile(schema["properties"]["usage"]["pattern"])
    assert all(decimal.fullmatch(message[name]) for name in ("threshold_percent", "hard_limit", "usage"))
    assert ThresholdCrossedNotification.model_validate(json.loads(json.dumps(message))) == notice


def test_a_period_closed_message_carries_its_statement():
    statement = Statement(
        tenant_id="acme",
        period_start=START,
        period_end=END,
        closed_at=datetime(2026, 11, 2, tzinfo=UTC),
        catalog_version="2026-11-01",
        lines=[
            StatementLine(
                metric="api.requests", kind="usage", unit="count", aggregation="sum", quantity="40", event_count=1
            )
        ],
    )
    notice = PeriodClosedNotification(
        id="period.closed:acme:2026-10-01", tenant_id="acme", period_start=START, period_end=END, statement=statement
    )
    message = {"id": notice.id, **notice.message()}
    assert set(message) == set(notification_schema("period.closed")["properties"])
    assert (message["type"], message["period_start"]) == ("period.closed", "2026-10-01T00:00:00+00:00")
    assert message["statement"] == statement.model_dump(mode="json")
    assert PeriodClosedNotification.model_validate(json.loads(json.dumps(message))) == notice
