"""`metering rebuild`'s arguments and settings, before any store is reached."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from metering.cli import app
from metering.commands.rebuild import app_settings


@pytest.fixture
def environment(monkeypatch):
    """os.environ as the test found it afterwards: the command loads the project's app settings into it."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith(("AzureWebJobsStorage", "METERING_", "COSMOS", "EventHub")):
            monkeypatch.delenv(name)
    yield monkeypatch
    os.environ.clear()
    os.environ.update(saved)


def test_an_identity_based_storage_is_not_shadowed_by_the_local_default(environment):
    environment.setenv("AzureWebJobsStorage__tableServiceUri", "https://stmetering.table.core.windows.net/")
    environment.setenv("AzureWebJobsStorage__blobServiceUri", "https://stmetering.blob.core.windows.net/")
    settings = app_settings()
    assert settings.storage_connection is None
    assert settings.storage_table_uri == "https://stmetering.table.core.windows.net/"
    assert settings.journal_table == "meteringjournal"  # the project's app settings fill in the rest
    assert settings.archive_container == "usage-archive"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--from", "2026-11-01", "--to", "2026-12-01T00:00:00Z"], "RFC 3339"),
        (["--from", "2026-12-01T00:00:00Z", "--to", "2026-11-01T00:00:00Z"], "must be after --from"),
    ],
)
def test_a_window_that_is_not_one_is_refused(environment, arguments, message):
    result = CliRunner().invoke(app, ["rebuild", *arguments])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_the_local_storage_default_is_refused_with_what_to_set(environment):
    result = CliRunner().invoke(app, ["rebuild", "--from", "2026-11-01T00:00:00Z", "--to", "2026-12-01T00:00:00Z"])
    assert result.exit_code == 2
    assert "the connection string `metering dev` prints" in " ".join(result.output.split())
