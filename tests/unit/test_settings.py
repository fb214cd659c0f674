"""Settings checked against each other at start, with a message that names the settings and the rule."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from metering.settings import Settings

STORAGE = "UseDevelopmentStorage=true"


@pytest.fixture(autouse=True)
def storage(monkeypatch):
    monkeypatch.setenv("AzureWebJobsStorage", STORAGE)
    for name in ("METERING_MAX_EVENT_AGE_DAYS", "METERING_GRACE_HOURS", "METERING_DEDUPE_RETENTION_DAYS"):
        monkeypatch.delenv(name, raising=False)


def test_the_defaults_keep_every_accepted_event_within_its_markers():
    settings = Settings()  # type: ignore[call-arg]
    assert settings.max_event_age <= settings.grace + settings.dedupe_retention


@pytest.mark.parametrize(
    ("age", "grace", "retention"),
    [("35", "0", "35"), ("36", "24", "35"), ("10", "240", "1"), ("1", "0", "1")],
)
def test_an_event_age_up_to_grace_plus_retention_is_accepted(monkeypatch, age, grace, retention):
    monkeypatch.setenv("METERING_MAX_EVENT_AGE_DAYS", age)
    monkeypatch.setenv("METERING_GRACE_HOURS", grace)
    monkeypatch.setenv("METERING_DEDUPE_RETENTION_DAYS", retention)
    assert Settings().max_event_age_days == int(age)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("age", "grace", "retention"),
    [("36", "0", "35"), ("37", "24", "35"), ("2", "23", "1"), ("365", "744", "35")],
)
def test_an_event_age_beyond_grace_plus_retention_is_refused_naming_the_rule(monkeypatch, age, grace, retention):
    # A retry of an event that old could arrive after its period's markers were purged and count again.
    monkeypatch.setenv("METERING_MAX_EVENT_AGE_DAYS", age)
    monkeypatch.setenv("METERING_GRACE_HOURS", grace)
    monkeypatch.setenv("METERING_DEDUPE_RETENTION_DAYS", retention)
    with pytest.raises(ValidationError) as refused:
        Settings()  # type: ignore[call-arg]
    message = str(refused.value)
    assert f"METERING_MAX_EVENT_AGE_DAYS ({age}) must be at most" in message
    assert f"METERING_GRACE_HOURS/24 + METERING_DEDUPE_RETENTION_DAYS ({grace}/24 + {retention} days)" in message
