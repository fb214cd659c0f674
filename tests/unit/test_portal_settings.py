"""The portal's settings are checked at start: the token secrets' length (never echoing them), a previous secret
only beside a current one, and frame-ancestors sources that cannot smuggle another directive into the header."""

from __future__ import annotations

import pytest

from metering.configuration import find_problem
from metering.settings import check_frame_ancestors

SECRET = "s" * 32
NAMES = (
    "METERING_PORTAL_SECRET",
    "METERING_PORTAL_SECRET_PREVIOUS",
    "METERING_PORTAL_FRAME_ANCESTORS",
    "METERING_METERS_FILE",
    "METERING_PLANS_FILE",
)


@pytest.fixture(autouse=True)
def environment(monkeypatch):
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)


def test_no_secret_is_a_portal_that_is_off(monkeypatch):
    monkeypatch.setenv("METERING_PORTAL_SECRET", "")
    assert find_problem() is None


def test_a_short_secret_is_refused_without_echoing_it(monkeypatch):
    monkeypatch.setenv("METERING_PORTAL_SECRET", "tooshort-secret")
    problem = find_problem()
    assert problem is not None
    assert "METERING_PORTAL_SECRET: must be at least 32 characters (it has 15)" in problem
    assert "tooshort-secret" not in problem


def test_a_previous_secret_needs_a_current_one(monkeypatch):
    monkeypatch.setenv("METERING_PORTAL_SECRET_PREVIOUS", SECRET)
    assert "METERING_PORTAL_SECRET_PREVIOUS is set but METERING_PORTAL_SECRET is not" in (find_problem() or "")
    monkeypatch.setenv("METERING_PORTAL_SECRET", "t" * 40)
    assert find_problem() is None


@pytest.mark.parametrize(
    ("value", "header"),
    [
        ("'none'", "'none'"),
        ("none", "'none'"),
        ("self  https://app.example.com", "'self' https://app.example.com"),
        ("https://*.example.com:443 http://localhost:*", "https://*.example.com:443 http://localhost:*"),
        ("https:", "https:"),
        ("https://app.example.com/", "https://app.example.com/"),
    ],
)
def test_frame_ancestors_sources(value, header):
    assert check_frame_ancestors(value) == header


@pytest.mark.parametrize(
    "value",
    [
        "https://app.example.com; script-src *",
        "https://a.example.com,https://b.example.com",
        "'none' https://app.example.com",
        "https://app.example.com/embed",
        "'unsafe-inline'",
        "javascript:alert(1)//",
        "",
    ],
)
def test_other_frame_ancestors_are_refused(value):
    with pytest.raises(ValueError, match=r"frame-ancestors|'none'|at least one source"):
        check_frame_ancestors(value)
