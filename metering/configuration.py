"""Checking the app's settings and catalogs when the worker loads the function app, not at first use.

A bad setting or a bad meter or plan catalog would otherwise be found by the first request that needs it, and
every such request would fail with a 500. The check reads the environment and the catalog files only (no store,
no network), so it runs at import; it never raises there. Its finding is kept: the HTTP functions answer 503 with
it, the aggregator and the timer fail with it, and the dev host refuses to start with it.
"""

from __future__ import annotations

import logging
import threading

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from metering.core.meters import CatalogError, load_catalog
from metering.quotas.plans import PlanCatalogError, load_plans
from metering.settings import Settings, SettingsError

log = logging.getLogger(__name__)


class ConfigurationError(ValueError):
    """The settings or a catalog are wrong; the message says which, and the rule."""


def find_problem() -> str | None:
    """What is wrong with the settings and the catalogs they name, or None when nothing is."""
    try:
        # Built afresh, not the process's cached settings: the check must see the environment as it is now.
        settings = Settings()  # type: ignore[call-arg]
        catalog = load_catalog(settings.meters_file)
        load_plans(settings.plans_file, catalog)
    except ValidationError as error:
        return "invalid settings: " + "; ".join(_setting_error(e) for e in error.errors(include_input=False))
    except (SettingsError, CatalogError, PlanCatalogError) as error:
        return str(error)
    except Exception as error:  # at import nothing may escape; say what it was
        log.exception("the configuration check failed")
        return f"the configuration could not be checked: {type(error).__name__}: {error}"
    return None


def _setting_error(error: ErrorDetails) -> str:
    # Named by the setting, without the input: that would echo every setting, connection strings included.
    message = str(error["msg"]).removeprefix("Value error, ")
    location = ".".join(str(part) for part in error["loc"])
    return f"{location}: {message}" if location else message


_lock = threading.Lock()
_problem: str | None = None


def verify() -> str | None:
    """Check now and keep the finding for `problem()`; a new finding is logged as an error. Returns it."""
    global _problem
    found = find_problem()
    with _lock:
        known, _problem = _problem, found
    if found is not None and found != known:
        log.error("the function app is not configured correctly, every function will fail: %s", found)
    return found


def problem() -> str | None:
    """The finding of the last `verify()`, None when it found nothing (or none ran)."""
    return _problem


def require() -> None:
    """Raise with the finding, for functions that have no response to give it in (the aggregator, timers)."""
    found = _problem
    if found is not None:
        raise ConfigurationError(found)
