"""METERING_WEBHOOK_URL and METERING_WEBHOOK_SECRET are checked at start, with a message naming the rule and
never the secret."""

from __future__ import annotations

import base64

import pytest

from metering.configuration import find_problem
from metering.settings import check_webhook_secret, check_webhook_url

GOOD_SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()


@pytest.fixture(autouse=True)
def environment(monkeypatch):
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    for name in ("METERING_WEBHOOK_URL", "METERING_WEBHOOK_SECRET", "METERING_METERS_FILE", "METERING_PLANS_FILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/metering",
        "https://hooks.example.com:8443/a?b=c",
        "http://127.0.0.1:9000/hooks",
        "http://127.8.0.1/hooks",
        "http://[::1]:9000/hooks",
        "http://localhost/hooks",
    ],
)
def test_https_or_http_to_a_loopback_host_is_a_receiver(url):
    assert check_webhook_url(url) == url


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://hooks.example.com/metering", "must be https: http is allowed only to a loopback host"),
        ("http://10.0.0.5/hooks", "must be https"),
        ("ftp://hooks.example.com/x", "must be an absolute https URL"),
        ("hooks.example.com/metering", "must be an absolute https URL"),
        ("https:///path", "must be an absolute https URL"),
        ("https://user:pass@hooks.example.com/", "must not carry a user or password"),
        ("https://hooks.example.com/#x", "must not have a #fragment"),
    ],
)
def test_other_urls_are_refused_with_the_rule(url, rule):
    with pytest.raises(ValueError, match=rule):
        check_webhook_url(url)


@pytest.mark.parametrize("size", [24, 32, 64])
def test_a_secret_is_whsec_and_the_base64_of_24_to_64_bytes(size):
    key = bytes(range(size))
    assert check_webhook_secret("whsec_" + base64.b64encode(key).decode()) == key
    # The unpadded form decodes as well (the package pads it too).
    assert check_webhook_secret("whsec_" + base64.b64encode(key).decode().rstrip("=")) == key


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        (base64.b64encode(b"k" * 24).decode(), "it does not start with whsec_"),
        ("whsec_not base64!!", "what follows the prefix is not base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "it holds 5 bytes"),
        ("whsec_" + base64.b64encode(b"k" * 65).decode(), "it holds 65 bytes"),
        ("whsec_", "it holds 0 bytes"),
    ],
)
def test_other_secrets_are_refused_saying_why(secret, why):
    with pytest.raises(ValueError, match="must be whsec_ followed by the base64 of 24 to 64 random bytes") as refused:
        check_webhook_secret(secret)
    assert why in str(refused.value)


def test_a_bad_secret_stops_the_app_naming_the_setting_and_not_the_secret(monkeypatch):
    secret = "whsec_" + base64.b64encode(b"too short").decode()
    monkeypatch.setenv("METERING_WEBHOOK_URL", "https://hooks.example.com/metering")
    monkeypatch.setenv("METERING_WEBHOOK_SECRET", secret)
    problem = find_problem()
    assert problem == (
        "invalid settings: METERING_WEBHOOK_SECRET: must be whsec_ followed by the base64 of 24 to 64 random bytes "
        "(it holds 9 bytes)"
    )
    assert secret.removeprefix("whsec_") not in problem


def test_a_url_without_a_secret_stops_the_app(monkeypatch):
    monkeypatch.setenv("METERING_WEBHOOK_URL", "https://hooks.example.com/metering")
    problem = find_problem()
    assert problem is not None
    assert problem.startswith("invalid settings: METERING_WEBHOOK_URL is set but METERING_WEBHOOK_SECRET is not")


def test_a_plain_http_url_stops_the_app(monkeypatch):
    monkeypatch.setenv("METERING_WEBHOOK_URL", "http://hooks.example.com/metering")
    monkeypatch.setenv("METERING_WEBHOOK_SECRET", GOOD_SECRET)
    problem = find_problem()
    assert problem is not None
    assert problem.startswith("invalid settings: METERING_WEBHOOK_URL: must be https")


def test_empty_settings_mean_no_webhooks(monkeypatch):
    monkeypatch.setenv("METERING_WEBHOOK_URL", "")
    monkeypatch.setenv("METERING_WEBHOOK_SECRET", "")
    assert find_problem() is None
