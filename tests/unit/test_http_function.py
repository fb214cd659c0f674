"""Every HTTP function answers an outage, or a configuration found wrong at load, with 503 and a problem body:
never a bare 500. Real SDK exceptions, raised where a store or transport would raise them."""

from __future__ import annotations

import json
import logging

import azure.functions as func
import pytest
from azure.core.exceptions import ServiceRequestError, ServiceResponseTimeoutError
from azure.cosmos.exceptions import CosmosHttpResponseError
from azure.eventhub.exceptions import ConnectionLostError

from metering import configuration
from metering.devhost.host import discover
from metering.triggers import http_function

REQUEST = func.HttpRequest("GET", "http://localhost/api/usage/acme/api.requests", body=b"")


@pytest.fixture(autouse=True)
def configured(monkeypatch):
    monkeypatch.setattr(configuration, "_problem", None)


def failing(error: BaseException):
    @http_function
    def usage(req: func.HttpRequest) -> func.HttpResponse:
        raise error

    return usage


@pytest.mark.parametrize(
    "error",
    [
        ServiceRequestError("connection refused"),
        ServiceResponseTimeoutError("read timed out"),
        CosmosHttpResponseError(status_code=503, message="service unavailable"),
        ConnectionLostError("the AMQP link was lost"),
        ConnectionRefusedError(111, "refused"),
        TimeoutError("timed out"),
    ],
)
def test_a_store_or_transport_outage_is_a_503_with_retry_after_and_is_logged(error, caplog):
    with caplog.at_level(logging.ERROR, logger="metering.triggers"):
        response = failing(error)(REQUEST)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.mimetype == "application/problem+json"
    body = json.loads(response.get_body())
    assert (body["status"], body["title"]) == (503, "Service unavailable")
    assert type(error).__name__ in body["detail"]
    [record] = caplog.records
    assert "usage: a store or transport is unavailable" in record.getMessage()
    assert record.exc_info is not None  # with its traceback
    assert record.exc_info[1] is error


def test_a_bug_is_not_taken_for_an_outage():
    with pytest.raises(KeyError):
        failing(KeyError("tenant_id"))(REQUEST)


def test_a_configuration_found_wrong_at_load_answers_every_route_503_with_its_message(monkeypatch):
    found = "meter catalog x.toml: cannot be read (No such file or directory)"
    monkeypatch.setattr(configuration, "_problem", found)
    calls = []

    @http_function
    def usage(req: func.HttpRequest) -> func.HttpResponse:
        calls.append(req)
        return func.HttpResponse(b"{}")

    response = usage(REQUEST)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "60"
    detail = json.loads(response.get_body())["detail"]
    assert detail == f"the app is not configured correctly: {found}"
    assert calls == []


def test_a_guarded_function_keeps_the_signature_the_host_binds_by():
    @http_function
    def usage(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(b"{}", status_code=200)

    assert usage.__name__ == "usage"
    assert list(usage.__wrapped__.__annotations__) == ["req", "return"]  # type: ignore[attr-defined]
    assert usage(REQUEST).status_code == 200


def test_every_http_function_of_the_app_is_guarded():
    http = [f for f in discover("function_app") if '"httpTrigger"' in f.get_function_json()]
    assert len(http) >= 10
    unguarded = [f.get_function_name() for f in http if not hasattr(f.get_user_function(), "__wrapped__")]
    assert unguarded == []
