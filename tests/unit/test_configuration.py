"""The settings and catalogs are checked when the worker loads the function app: a problem is found at start,
logged, and given by every function, instead of a 500 at the first request that needs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metering.configuration import find_problem

STORAGE = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=c2VjcmV0LWtleQ==;TableEndpoint=http://127.0.0.1:9/devstoreaccount1;"
BAD_METERS = """version = "1"
[meters."api.requests"]
aggregation = "sum"
"""
BAD_PLANS = """version = "1"
default_plan = "free"
[plans.free]
description = "free"
limits = { "no.such.meter" = { hard = "10" } }
"""


@pytest.fixture(autouse=True)
def environment(monkeypatch):
    monkeypatch.setenv("AzureWebJobsStorage", STORAGE)
    for name in ("METERING_METERS_FILE", "METERING_PLANS_FILE", "METERING_MAX_EVENT_AGE_DAYS", "METERING_GRACE_HOURS"):
        monkeypatch.delenv(name, raising=False)


def test_the_packaged_catalogs_and_default_settings_have_no_problem():
    assert find_problem() is None


def test_a_bad_meter_catalog_is_found_with_its_message(monkeypatch, tmp_path):
    (tmp_path / "meters.toml").write_text(BAD_METERS)
    monkeypatch.setenv("METERING_METERS_FILE", str(tmp_path / "meters.toml"))
    assert find_problem() == f"{tmp_path / 'meters.toml'}: meter 'api.requests': unit: Field required"


def test_a_missing_catalog_file_is_found(monkeypatch, tmp_path):
    monkeypatch.setenv("METERING_PLANS_FILE", str(tmp_path / "nowhere.toml"))
    assert find_problem() == f"plans {tmp_path / 'nowhere.toml'}: cannot be read (No such file or directory)"


def test_a_plan_catalog_that_limits_an_unknown_meter_is_found(monkeypatch, tmp_path):
    (tmp_path / "plans.toml").write_text(BAD_PLANS)
    monkeypatch.setenv("METERING_PLANS_FILE", str(tmp_path / "plans.toml"))
    problem = find_problem()
    assert problem is not None
    assert "no.such.meter" in problem


def test_settings_are_named_and_their_values_not_echoed(monkeypatch):
    monkeypatch.setenv("METERING_GRACE_HOURS", "a day")
    monkeypatch.setenv("METERING_MAX_EVENT_AGE_DAYS", "400")
    problem = find_problem()
    assert problem is not None
    assert problem.startswith("invalid settings: METERING_GRACE_HOURS: Input should be a valid integer")
    assert "METERING_MAX_EVENT_AGE_DAYS: Input should be less than or equal to 365" in problem
    assert "c2VjcmV0LWtleQ" not in problem  # the storage key


def test_settings_checked_against_each_other_are_found(monkeypatch):
    monkeypatch.setenv("METERING_MAX_EVENT_AGE_DAYS", "60")
    problem = find_problem()
    assert problem is not None
    assert problem.startswith("invalid settings: METERING_MAX_EVENT_AGE_DAYS (60) must be at most")


LOAD_THE_APP = """
import json, logging
logging.basicConfig(level=logging.ERROR)
import azure.functions as func
import function_app
from metering.devhost.host import discover
functions = {f.get_function_name(): f.get_user_function() for f in discover("function_app")}
response = functions["usage"](func.HttpRequest("GET", "http://x/api/usage/acme/api.requests", body=b"",
                                               route_params={"tenant_id": "acme", "metric": "api.requests"}))
print("usage", response.status_code, json.loads(response.get_body())["detail"])
try:
    functions["aggregate"](events=[])
except Exception as error:
    print("aggregate", type(error).__name__, error)
try:
    functions["close_periods"](timer=None)
except Exception as error:
    print("close_periods", type(error).__name__)
"""


def test_the_app_loads_with_a_bad_catalog_logs_it_and_every_function_gives_it(tmp_path, project_root: Path):
    (tmp_path / "plans.toml").write_text(BAD_PLANS)
    env = {**os.environ, "AzureWebJobsStorage": STORAGE, "METERING_PLANS_FILE": str(tmp_path / "plans.toml")}
    run = subprocess.run([sys.executable, "-c", LOAD_THE_APP], env=env, cwd=project_root, capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    lines = run.stdout.splitlines()
    assert lines[0].startswith("usage 503 the app is not configured correctly: ")
    assert "no.such.meter" in lines[0]
    assert lines[1].startswith("aggregate ConfigurationError ")
    assert "no.such.meter" in lines[1]
    assert lines[2] == "close_periods ConfigurationError"
    # Logged once, as the worker loaded the app.
    assert run.stderr.count("the function app is not configured correctly") == 1
    assert json.dumps("no.such.meter")[1:-1] in run.stderr
