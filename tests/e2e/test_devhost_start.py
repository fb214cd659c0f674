"""`metering dev` checks the settings and catalogs before it serves anything: a bad one stops it at start with
its message, instead of routes that answer 500 at their first request."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Storage that is never reached (nothing listens on port 9): the check must not need it, and the host must not
# start Azurite for a configuration it refuses.
STORAGE = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;TableEndpoint=http://127.0.0.1:9/devstoreaccount1;"


def start(project_root: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AzureWebJobsStorage": STORAGE, **settings}
    return subprocess.run([sys.executable, "-m", "metering", "dev", "--port", "0"], env=env, cwd=project_root,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


@pytest.mark.parametrize(
    ("setting", "content", "message"),
    [
        ("METERING_METERS_FILE", 'version = "1"\n[meters."api.requests"]\naggregation = "sum"\n',
         "meter 'api.requests': unit: Field required"),
        ("METERING_PLANS_FILE", 'version = "1"\ndefault_plan = "free"\n[plans.free]\ndescription = "f"\n'
         'limits = { "no.such" = { hard = "1" } }\n', "plan 'free': metric 'no.such': not a meter"),
    ],
)  # fmt: skip
def test_a_bad_catalog_stops_the_dev_host_with_its_message(project_root, tmp_path, setting, content, message):
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(content)
    run = start(project_root, **{setting: str(catalog)})
    output = run.stdout + run.stderr
    assert run.returncode == 1
    assert f"cannot start: {catalog}: {message}" in output
    assert "Functions running at" not in output


def test_settings_that_break_a_rule_stop_the_dev_host(project_root):
    run = start(project_root, METERING_MAX_EVENT_AGE_DAYS="90")
    output = run.stdout + run.stderr
    assert run.returncode == 1
    assert "cannot start: invalid settings: METERING_MAX_EVENT_AGE_DAYS (90) must be at most" in output


def test_a_bad_webhook_secret_stops_the_dev_host_without_showing_it(project_root):
    secret = "whsec_c2hvcnQ="  # base64 of 5 bytes: far too short a key
    run = start(project_root, METERING_WEBHOOK_URL="http://127.0.0.1:9/hooks", METERING_WEBHOOK_SECRET=secret)
    output = " ".join((run.stdout + run.stderr).split())
    assert run.returncode == 1
    assert "cannot start: invalid settings: METERING_WEBHOOK_SECRET: must be whsec_ followed by the base64" in output
    assert "c2hvcnQ" not in output
    assert "Functions running at" not in output
