"""The dev host's HTTP layer: a function that raised is answered 500, as the Functions host does, and logged
with its traceback, so the cause is never silent."""

from __future__ import annotations

import json
import logging

from metering.devhost.http import HttpHost, HttpRoute, route_pattern
from tests.support import run_async


def test_a_function_that_raised_is_answered_500_and_logged_with_its_traceback(caplog):
    def usage(req):
        raise LookupError("no such row")

    route = HttpRoute("usage", route_pattern("usage/{tenant_id}"), frozenset({"GET"}), "FUNCTION", usage, "req")
    host = HttpHost([route], function_key="k", admin_key="a")
    scope = {"path": "/api/usage/acme", "method": "GET", "query_string": b"", "headers": [(b"x-functions-key", b"k")]}
    with caplog.at_level(logging.ERROR, logger="metering.devhost.http"):
        status, _, body = run_async(host.respond(scope, b""))
    assert status == 500
    assert json.loads(body)["detail"] == "usage raised LookupError"
    [record] = caplog.records
    assert record.getMessage() == "usage raised LookupError; answered 500"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], LookupError)
