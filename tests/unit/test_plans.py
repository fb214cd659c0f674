"""Plans: the packaged file, every rule of the format (bad files written to disk), and which limits apply."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from metering.core.limits import Limits
from metering.core.meters import parse_catalog
from metering.quotas.plans import PlanCatalog, PlanCatalogError, load_plans, resolve_limits
from metering.quotas.ratelimit import RateLimit

# The meters the files below may limit: their own small catalog, so these tests do not follow the packaged one.
TEST_METERS = parse_catalog(
    {
        "version": "meters-1",
        "meters": {
            "api.calls": {"unit": "count", "aggregation": "sum"},
            "storage.gb": {"unit": "GB", "aggregation": "max"},
        },
    }
)

# A file that loads; each bad case below breaks exactly one thing of a file like this one.
VALID_PLANS = """
version = "plans-1"
default_plan = "basic"

[plans.basic]
description = "Basic"
rate = { events_per_second = "2.5", burst = 10 }

[plans.basic.limits."api.calls"]
soft = "80"
hard = 100

[plans.basic.limits."storage.gb"]
hard = "0.5"

[plans.open]
"""


def write_plans(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plans.toml"
    path.write_text(text, encoding="utf-8")
    return path


# the packaged plans ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def packaged() -> PlanCatalog:
    return load_plans()


def test_packaged_plans_load_against_the_packaged_meters(packaged: PlanCatalog) -> None:
    assert packaged.version
    assert packaged.names == ("enterprise", "free", "pro", "unlimited")
    # A tenant nobody assigned a plan is neither limited nor throttled.
    assert packaged.default.name == "unlimited"
    assert packaged.default is packaged.get("unlimited")
    assert (packaged.default.limits, packaged.default.rate) == ({}, None)


def test_packaged_free_plan(packaged: PlanCatalog) -> None:
    free = packaged.get("free")
    assert free is not None
    assert free.limits_for("api.requests") == Limits(soft=Decimal(8000), hard=Decimal(10000))
    assert free.limits_for("reports.generated") == Limits(soft=None, hard=Decimal(100))
    assert free.limits_for("users.active") == Limits(soft=Decimal(40), hard=Decimal(50))
    assert free.limits_for("storage.gb") == Limits()
    assert free.rate == RateLimit(events_per_second=Decimal(50), burst=500)


def test_packaged_pro_plan(packaged: PlanCatalog) -> None:
    pro = packaged.get("pro")
    assert pro is not None
    assert pro.limits_for("api.requests") == Limits(soft=Decimal(800000), hard=Decimal(1000000))
    assert pro.limits_for("storage.gb") == Limits(soft=None, hard=Decimal(500))
    assert pro.limits_for("compute.seconds") == Limits(soft=Decimal(360000), hard=None)
    assert pro.limits_for("users.active") == Limits()
    assert pro.rate == RateLimit(events_per_second=Decimal(1000), burst=5000)


@pytest.mark.parametrize("name", ["enterprise", "unlimited"])
def test_packaged_plans_without_limits(packaged: PlanCatalog, name: str) -> None:
    plan = packaged.get(name)
    assert plan is not None
    assert plan.rate is None
    assert plan.limits == {}
    assert plan.limits_for("api.requests") == Limits()


def test_unknown_plan_is_none(packaged: PlanCatalog) -> None:
    assert packaged.get("platinum") is None


# a file from a path ---------------------------------------------------------------------------------------------


def test_plans_load_from_a_path(tmp_path: Path) -> None:
    # The positive control for the bad cases: the base document is fine, so each failure is the one change.
    plans = load_plans(write_plans(tmp_path, VALID_PLANS), TEST_METERS)
    assert plans.version == "plans-1"
    assert plans.names == ("basic", "open")
    basic = plans.default
    assert basic.description == "Basic"
    assert basic.rate == RateLimit(events_per_second=Decimal("2.5"), burst=10)
    # Integers and strings both read exactly.
    assert basic.limits_for("api.calls") == Limits(soft=Decimal(80), hard=Decimal(100))
    assert basic.limits_for("storage.gb") == Limits(soft=None, hard=Decimal("0.5"))
    open_plan = plans.get("open")
    assert open_plan is not None
    assert open_plan.rate is None
    assert open_plan.limits_for("api.calls") == Limits()


def test_path_may_be_a_string(tmp_path: Path) -> None:
    assert load_plans(str(write_plans(tmp_path, VALID_PLANS)), TEST_METERS).names == ("basic", "open")


def test_metrics_are_checked_against_the_catalog_given(tmp_path: Path) -> None:
    # The packaged meter catalog has no `api.calls`: without the test catalog the same file is refused.
    path = write_plans(tmp_path, VALID_PLANS)
    with pytest.raises(PlanCatalogError) as caught:
        load_plans(path)
    assert "plan 'basic'" in str(caught.value)
    assert "metric 'api.calls'" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "limits"),
    [
        ('soft = "0"', Limits(soft=Decimal(0))),
        ("hard = 0", Limits(hard=Decimal(0))),
        ('soft = "5"\nhard = "5"', Limits(soft=Decimal(5), hard=Decimal(5))),
        ('hard = "999999999999999999.999999999999"', Limits(hard=Decimal("999999999999999999.999999999999"))),
        ('soft = "1.50"', Limits(soft=Decimal("1.5"))),
    ],
)
def test_limit_values_read_exactly(tmp_path: Path, text: str, limits: Limits) -> None:
    plans = load_plans(write_plans(tmp_path, plan_toml(f'[plans.p.limits."api.calls"]\n{text}')), TEST_METERS)
    assert plans.default.limits_for("api.calls") == limits


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        ('{ events_per_second = "0.5", burst = 1 }', RateLimit(events_per_second=Decimal("0.5"), burst=1)),
        ("{ events_per_second = 100, burst = 200 }", RateLimit(events_per_second=Decimal(100), burst=200)),
        # A rate is approximate: a float is accepted there, unlike a limit.
        ("{ events_per_second = 12.5, burst = 20 }", RateLimit(events_per_second=Decimal("12.5"), burst=20)),
    ],
)
def test_rate_values(tmp_path: Path, rate: str, expected: RateLimit) -> None:
    plans = load_plans(write_plans(tmp_path, plan_toml(f"[plans.p]\nrate = {rate}")), TEST_METERS)
    assert plans.default.rate == expected


# bad files ------------------------------------------------------------------------------------------------------


def plan_toml(body: str, head: str = 'version = "plans-1"\ndefault_plan = "p"') -> str:
    return f"{head}\n\n{body}\n"


def limits_toml(body: str, metric: str = "api.calls") -> str:
    return plan_toml(f'[plans.p.limits."{metric}"]\n{body}')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # limits
        pytest.param(limits_toml("soft = 1.5"), ["'p'", "'api.calls'", "soft", "float", '"1.5"'], id="float-soft"),
        pytest.param(limits_toml("hard = 10.0"), ["'p'", "'api.calls'", "hard", "float"], id="float-hard"),
        pytest.param(limits_toml("hard = 1e3"), ["'p'", "'api.calls'", "hard", "float"], id="float-exponent"),
        pytest.param(limits_toml("hard = inf"), ["'p'", "'api.calls'", "hard", "finite"], id="float-inf"),
        pytest.param(
            limits_toml('soft = "10"\nhard = "5"'),
            ["'p'", "'api.calls'", "soft (10)", "above hard (5)"],
            id="soft>hard",
        ),
        pytest.param(limits_toml('hard = "-1"'), ["'p'", "'api.calls'", "hard", "negative"], id="negative-hard"),
        pytest.param(limits_toml("soft = -3"), ["'p'", "'api.calls'", "soft", "negative"], id="negative-int-soft"),
        pytest.param(limits_toml('soft = "lots"'), ["'p'", "'api.calls'", "soft", "decimal"], id="not-a-number"),
        pytest.param(limits_toml('soft = "NaN"'), ["'p'", "'api.calls'", "soft", "decimal"], id="nan-string"),
        pytest.param(limits_toml('soft = " 5"'), ["'p'", "'api.calls'", "soft", "decimal"], id="padded-string"),
        pytest.param(limits_toml("soft = true"), ["'p'", "'api.calls'", "soft", "decimal"], id="boolean"),
        pytest.param(
            limits_toml('hard = "0.0000000000001"'), ["'p'", "'api.calls'", "hard", "12 digits"], id="too-fine"
        ),
        pytest.param(
            limits_toml('hard = "1000000000000000000"'), ["'p'", "'api.calls'", "hard", "18 digits"], id="too-large"
        ),
        pytest.param(limits_toml(""), ["'p'", "'api.calls'", "soft, hard or both"], id="no-limit"),
        pytest.param(
            limits_toml('soft = "1"\nwarn = "2"'), ["'p'", "'api.calls'", "warn", "not permitted"], id="unknown-key"
        ),
        pytest.param(
            limits_toml('hard = "1"', metric="api.call"),
            ["'p'", "'api.call'", "not a meter", "meters-1", "'api.calls'"],
            id="unknown-metric",
        ),
        pytest.param(
            plan_toml('[plans.p]\nlimits = { "api.calls" = 5 }'), ["'p'", "'api.calls'", "dictionary"], id="not-table"
        ),
        # rate
        pytest.param(
            plan_toml("[plans.p]\nrate = { events_per_second = 0, burst = 5 }"),
            ["'p'", "rate.events_per_second", "greater than zero"],
            id="zero-rate",
        ),
        pytest.param(
            plan_toml('[plans.p]\nrate = { events_per_second = "-2", burst = 5 }'),
            ["'p'", "rate.events_per_second", "greater than zero"],
            id="negative-rate",
        ),
        pytest.param(
            plan_toml('[plans.p]\nrate = { events_per_second = "fast", burst = 5 }'),
            ["'p'", "rate.events_per_second", "decimal"],
            id="rate-not-a-number",
        ),
        pytest.param(
            plan_toml("[plans.p]\nrate = { events_per_second = nan, burst = 5 }"),
            ["'p'", "rate.events_per_second", "finite"],
            id="rate-nan",
        ),
        pytest.param(
            plan_toml('[plans.p]\nrate = { events_per_second = "10", burst = 0 }'),
            ["'p'", "rate.burst", "greater than or equal to 1"],
            id="zero-burst",
        ),
        pytest.param(
            plan_toml('[plans.p]\nrate = { events_per_second = "10", burst = 5.0 }'),
            ["'p'", "rate.burst", "integer"],
            id="float-burst",
        ),
        pytest.param(
            plan_toml('[plans.p]\nrate = { events_per_second = "10", burst = "5" }'),
            ["'p'", "rate.burst", "integer"],
            id="string-burst",
        ),
        pytest.param(
            plan_toml('[plans.p]\nrate = { events_per_second = "10" }'),
            ["'p'", "rate.burst", "required"],
            id="missing-burst",
        ),
        pytest.param(
            plan_toml('[plans.p]\nrate = { events_per_second = "10", burst = 5, window = 60 }'),
            ["'p'", "rate.window", "not permitted"],
            id="unknown-rate-key",
        ),
        # plans
        pytest.param(plan_toml("[plans.p]\nprice = 10"), ["'p'", "price", "not permitted"], id="unknown-plan-key"),
        pytest.param(
            plan_toml("[plans.Gold]", head='version = "plans-1"\ndefault_plan = "Gold"'),
            ["'Gold'", "name", "pattern"],
            id="upper-case-name",
        ),
        pytest.param(
            plan_toml("[plans.9lives]", head='version = "plans-1"\ndefault_plan = "9lives"'),
            ["'9lives'", "name", "pattern"],
            id="name-starting-with-a-digit",
        ),
        pytest.param(
            plan_toml(f"[plans.{'p' * 65}]", head=f'version = "plans-1"\ndefault_plan = "{"p" * 65}"'),
            ["p" * 65, "name", "pattern"],
            id="65-char-name",
        ),
        pytest.param(plan_toml("plans = { p = 5 }"), ["'p'", "table"], id="plan-not-a-table"),
        # top level
        pytest.param(plan_toml("[plans.q]"), ["default_plan", "'p'", "['q']"], id="default-plan-missing"),
        pytest.param(plan_toml("[plans.p]", head='version = "plans-1"'), ["default_plan"], id="no-default-plan"),
        pytest.param(
            plan_toml("[plans.p]", head='version = "plans-1"\ndefault_plan = 1'), ["default_plan"], id="default-int"
        ),
        pytest.param(plan_toml("[plans.p]", head='default_plan = "p"'), ["version"], id="missing-version"),
        pytest.param(plan_toml("[plans.p]", head='version = ""\ndefault_plan = "p"'), ["version"], id="empty-version"),
        pytest.param(plan_toml("[plans.p]", head='version = 3\ndefault_plan = "p"'), ["version"], id="int-version"),
        pytest.param(plan_toml(""), ["no plans"], id="no-plans"),
        pytest.param(plan_toml("[plans]"), ["no plans"], id="empty-plans-table"),
        pytest.param(VALID_PLANS.replace("[plans.basic]", 'owner = "billing"\n[plans.basic]'), ["owner"], id="extra"),
        pytest.param('version = "plans-1\n[plans.p\n', ["TOML"], id="invalid-toml"),
    ],
)
def test_bad_plans_name_the_plan_metric_and_rule(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = write_plans(tmp_path, text)
    with pytest.raises(PlanCatalogError) as caught:
        load_plans(path, TEST_METERS)
    message = str(caught.value)
    for part in expected:
        assert part in message, message
    # The operator must know which file to fix.
    assert str(path) in message


def test_float_rejection_says_to_quote_the_number(tmp_path: Path) -> None:
    # 0.1 as a double is 0.1000000000000000055...: the message says how to write the number exactly instead.
    path = write_plans(tmp_path, limits_toml("soft = 0.1\nhard = 1"))
    with pytest.raises(PlanCatalogError, match=r'TOML float.*write it as a string, "0\.1"'):
        load_plans(path, TEST_METERS)


@pytest.mark.parametrize("kind", ["missing-file", "directory"])
def test_unreadable_plans_path(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "absent.toml" if kind == "missing-file" else tmp_path
    with pytest.raises(PlanCatalogError) as caught:
        load_plans(path, TEST_METERS)
    assert str(path) in str(caught.value)
    assert "cannot be read" in str(caught.value)


def test_catalog_refuses_a_default_that_is_not_a_plan() -> None:
    # Built directly, not from a file: the invariant holds either way, so `.default` never raises.
    with pytest.raises(ValueError, match="default_plan 'gold'"):
        PlanCatalog(version="v", default_plan="gold", plans={})


# which limits apply ---------------------------------------------------------------------------------------------


@pytest.fixture
def basic(tmp_path: Path) -> PlanCatalog:
    return load_plans(write_plans(tmp_path, VALID_PLANS), TEST_METERS)


def test_without_overrides_the_plan_applies(basic: PlanCatalog) -> None:
    plan = basic.default
    assert resolve_limits(plan, {}, "api.calls") == Limits(soft=Decimal(80), hard=Decimal(100))
    assert resolve_limits(plan, {}, "transfer.bytes") == Limits()


def test_an_override_replaces_the_plans_pair_whole(basic: PlanCatalog) -> None:
    # Only a hard limit set: the plan's soft limit (80) must not come along with it.
    overrides = {"api.calls": Limits(hard=Decimal(50))}
    assert resolve_limits(basic.default, overrides, "api.calls") == Limits(soft=None, hard=Decimal(50))


def test_an_override_only_touches_its_metric(basic: PlanCatalog) -> None:
    overrides = {"api.calls": Limits(hard=Decimal(50))}
    assert resolve_limits(basic.default, overrides, "storage.gb") == Limits(hard=Decimal("0.5"))


def test_an_empty_override_lifts_the_plans_limits(basic: PlanCatalog) -> None:
    assert resolve_limits(basic.default, {"api.calls": Limits()}, "api.calls") == Limits()


def test_an_override_may_limit_what_the_plan_does_not(basic: PlanCatalog) -> None:
    open_plan = basic.get("open")
    assert open_plan is not None
    overrides = {"api.calls": Limits(soft=Decimal(7))}
    assert resolve_limits(open_plan, overrides, "api.calls") == Limits(soft=Decimal(7))


def test_limits_for_gives_the_quota_limits_type(basic: PlanCatalog) -> None:
    # quotas.decide takes this type: a plan's limits go straight into a decision.
    limits = basic.default.limits_for("api.calls")
    assert type(limits) is Limits
    assert limits.soft == Decimal(80)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '[plans.p.limits."pages.viewed"]\nhard = "1000"',
            "plan 'p': metric 'pages.viewed': a sampled meter's figures are estimates, and a quota cannot be decided "
            "on an estimate",
        ),
        (
            '[plans.p.prices."pages.viewed"]\nmodel = "per_unit"\nunit_price = "0.01"',
            "plan 'p': metric 'pages.viewed': price: a sampled meter's figures are estimates, and an invoice cannot "
            "bill an estimate",
        ),
    ],
)
def test_plans_may_neither_limit_nor_price_a_sampled_meter(tmp_path: Path, body: str, expected: str) -> None:
    path = write_plans(tmp_path, plan_toml(body))
    with pytest.raises(PlanCatalogError) as caught:
        load_plans(path)
    assert expected in str(caught.value)
