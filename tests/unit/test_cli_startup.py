"""The command line starts at once: a command imports the dev host, the client (httpx) and the Azure SDKs only
when it needs them, so `metering meters list` loads none of them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What a command that talks to no service and runs no host must not load.
HEAVY = ("azure", "httpx", "uvicorn", "pydantic_settings", "metering.client", "metering.devhost.host",
         "metering.bootstrap", "metering.stores.table", "metering.rebuild")  # fmt: skip

RUN = """
import json, runpy, sys
sys.argv = ["metering", *json.loads(sys.argv[1])]
try:
    runpy.run_module("metering", run_name="__main__")
except SystemExit as done:
    assert not done.code, done.code
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by(*arguments: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", RUN, json.dumps(arguments)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.splitlines()[-1])


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_listing_the_meters_loads_no_client_no_host_and_no_azure_sdk():
    modules = loaded_by("meters", "list", "--format", "json")
    assert "metering.core.meters" in modules
    assert heavy(modules) == []


def test_a_command_that_calls_the_service_loads_the_client_when_it_runs():
    # --help parses every option of the command without running it: the client is not needed for that either.
    assert heavy(loaded_by("usage", "--help")) == []
    assert heavy(loaded_by("rebuild", "--help")) == []
