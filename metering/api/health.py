"""GET /api/manage/health (admin key): the hub partitions' applied positions and lag, and the records waiting for
an operator."""

from __future__ import annotations

from metering.api.http import Response, ok
from metering.ingest.health import HealthCheck


class HealthRoute:
    def __init__(self, check: HealthCheck) -> None:
        self.check = check

    def report(self) -> Response:
        return ok(self.check.report())
