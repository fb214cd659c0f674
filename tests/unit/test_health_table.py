"""The health command's partitions table keeps each partition name whole on a narrow terminal: operators copy
them into other commands and queries."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from rich.console import Console

from metering.client.manage import HealthReport
from metering.commands.manage import partitions_table

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
LONG = "devstoreaccount1|usage|local-ade17efa-0"


def test_a_partition_name_is_shown_whole_on_a_narrow_terminal():
    report = HealthReport.model_validate(
        {
            "partitions": [
                {"partition": LONG, "applied_sequence": 123456, "applied_at": NOW, "lag_seconds": 0.5},
                {"partition": "ns|usage|0", "applied_sequence": None, "applied_at": None, "lag_seconds": 0},
            ],
            "dead_letters": 0,
            "late_events": 0,
            "conflicts": 0,
            "webhooks_failed": 0,
        }
    )
    shown = io.StringIO()
    Console(file=shown, width=60).print(partitions_table(report, NOW))
    assert LONG in shown.getvalue()
    assert "ns|usage|0" in shown.getvalue()
