"""Prices in the plan catalog: the packaged plans show every model, and a bad price stops the app with a
message naming the plan, the metric and the rule (files written to disk, loaded as the app loads them)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from metering import configuration
from metering.core.meters import parse_catalog
from metering.core.prices import PriceModel
from metering.quotas.plans import PlanCatalogError, load_plans

METERS = parse_catalog(
    {
        "version": "meters-1",
        "meters": {
            "api.calls": {"unit": "count", "aggregation": "sum"},
            "storage.gb": {"unit": "GB", "aggregation": "max"},
        },
    }
)

HEAD = 'version = "plans-1"\ndefault_plan = "p"\n\n[plans.p]\n'


def load(tmp_path: Path, body: str, plan: str = "") -> object:
    path = tmp_path / "plans.toml"
    path.write_text(HEAD + plan + "\n" + body + "\n", encoding="utf-8")
    return load_plans(path, METERS)


def price_toml(body: str, metric: str = "api.calls") -> str:
    return f'[plans.p.prices."{metric}"]\n{body}'


def test_the_packaged_plans_show_every_model():
    plans = load_plans()
    models = {price.model for plan in plans.plans.values() for price in plan.prices.values()}
    assert models == set(PriceModel)
    free, pro, enterprise, unlimited = (plans.plans[name] for name in ("free", "pro", "enterprise", "unlimited"))
    # free: no fee, and what its limits allow is included
    assert free.base_fee is None
    for metric, price in free.prices.items():
        assert price.included == free.limits_for(metric).hard, metric
    assert pro.base_fee == Decimal("49.00")
    assert (pro.prices["api.requests"].model, pro.prices["api.requests"].unit_size) == ("graduated", 1000)
    assert pro.prices["transfer.bytes"].model == "package"
    assert {price.model for price in enterprise.prices.values()} >= {PriceModel.VOLUME}
    assert (unlimited.prices, unlimited.base_fee) == ({}, None)
    assert {plan.currency for plan in plans.plans.values()} == {"USD"}
    pricing = plans.pricing(pro)
    assert (pricing.plan, pricing.version, pricing.currency) == ("pro", plans.version, "USD")


def test_a_good_price_of_each_model_loads(tmp_path: Path):
    plans = load(
        tmp_path,
        "\n".join(
            [
                price_toml('model = "per_unit"\nunit_price = "0.0004"\nincluded = 1000'),
                price_toml(
                    'model = "volume"\nunit_size = "1000"\n'
                    'tiers = [{ up_to = "10", unit_price = "1", flat_fee = "2.50" }, { unit_price = 0 }]',
                    "storage.gb",
                ),
            ]
        ),
        plan='currency = "BHD"\nbase_fee = "10.125"\n',
    )
    plan = plans.default
    assert (plan.currency, plan.base_fee) == ("BHD", Decimal("10.125"))
    calls, storage = plan.prices["api.calls"], plan.prices["storage.gb"]
    assert (calls.model, calls.unit_price, calls.included, calls.unit_size) == ("per_unit", Decimal("0.0004"), 1000, 1)
    assert [(t.up_to, t.unit_price, t.flat_fee) for t in storage.tiers] == [
        (Decimal(10), Decimal(1), Decimal("2.50")),
        (None, Decimal(0), Decimal(0)),
    ]


@pytest.mark.parametrize(
    ("body", "plan", "expected"),
    [
        pytest.param(price_toml('model = "tiered"\nunit_price = "1"'), "", ["model", "per_unit"], id="unknown-model"),
        pytest.param(price_toml('model = "per_unit"\nunit_price = 0.5'), "", ["unit_price", "float"], id="float"),
        pytest.param(
            price_toml('model = "graduated"\ntiers = [{ up_to = 10, unit_price = "1" }, { unit_price = 0.25 }]'),
            "",
            ["tiers[1].unit_price", "float"],
            id="float-in-a-tier",
        ),
        pytest.param(
            price_toml('model = "per_unit"\nunit_price = "1"\nincluded = 1e3'),
            "",
            ["included", "float"],
            id="float-exp",
        ),
        pytest.param(
            price_toml('model = "per_unit"\nunit_price = "-0.01"'), "", ["unit_price", "negative"], id="negative"
        ),
        pytest.param(
            price_toml(
                'model = "graduated"\n'
                'tiers = [{ up_to = "5", unit_price = "1", flat_fee = "-1" }, { unit_price = "1" }]'
            ),
            "",
            ["tiers[0].flat_fee", "negative"],
            id="negative-flat-fee",
        ),
        pytest.param(
            price_toml(
                'model = "graduated"\n'
                'tiers = [{ up_to = "10", unit_price = "1" }, { up_to = "10", unit_price = "0.5" },'
                ' { unit_price = "0.1" }]'
            ),
            "",
            ["tiers must ascend", "tiers[1].up_to (10)", "tiers[0].up_to (10)"],
            id="not-ascending",
        ),
        pytest.param(
            price_toml('model = "volume"\ntiers = [{ unit_price = "1" }, { up_to = "10", unit_price = "0.5" }]'),
            "",
            ["tiers[0] needs up_to"],
            id="middle-tier-without-up_to",
        ),
        pytest.param(
            price_toml('model = "volume"\ntiers = [{ up_to = "10", unit_price = "1" }]'),
            "",
            ["last tier", "no up_to"],
            id="bounded-last-tier",
        ),
        pytest.param(
            price_toml('model = "volume"\ntiers = [{ up_to = "0", unit_price = "1" }, { unit_price = "1" }]'),
            "",
            ["tiers[0].up_to (0) is not above 0"],
            id="zero-bound",
        ),
        pytest.param(price_toml('model = "graduated"\nunit_price = "1"'), "", ["from `tiers`"], id="tiered-unit-price"),
        pytest.param(price_toml('model = "graduated"'), "", ["needs `tiers`"], id="no-tiers"),
        pytest.param(price_toml('model = "per_unit"'), "", ["needs `unit_price`"], id="no-unit-price"),
        pytest.param(
            price_toml('model = "package"\nunit_price = "1"\ntiers = [{ unit_price = "1" }]'),
            "",
            ["no `tiers`"],
            id="untiered-tiers",
        ),
        pytest.param(
            price_toml('model = "package"\nunit_price = "1"\nunit_size = "0"'),
            "",
            ["unit_size", "greater than 0"],
            id="zero-unit",
        ),
        pytest.param(price_toml('model = "per_unit"\nprice = "1"'), "", ["price", "Extra inputs"], id="unknown-key"),
        pytest.param(
            price_toml('model = "per_unit"\nunit_price = "1"', "api.cals"),
            "",
            ["'api.cals'", "not a meter", "did you mean 'api.calls'"],
            id="unknown-meter",
        ),
        pytest.param("", 'currency = "usd"\n', ["currency", "three capital letters"], id="lower-case-currency"),
        pytest.param("", 'currency = "XAU"\n', ["currency", "no minor unit"], id="gold"),
        pytest.param("", 'currency = "ZZZ"\n', ["currency", "not a currency"], id="unknown-currency"),
        pytest.param("", "base_fee = 9.99\n", ["base_fee", "float"], id="float-base-fee"),
        pytest.param("", 'currency = "JPY"\nbase_fee = "100.5"\n', ["base_fee", "JPY", "0 digits"], id="fee-in-sen"),
        pytest.param(
            price_toml(
                'model = "graduated"\n'
                'tiers = [{ up_to = "5", unit_price = "1", flat_fee = "0.001" }, { unit_price = "1" }]'
            ),
            "",
            ["'api.calls'", "tiers[0].flat_fee", "USD", "2 digits"],
            id="flat-fee-below-a-cent",
        ),
    ],
)
def test_a_bad_price_names_the_plan_the_metric_and_the_rule(tmp_path: Path, body: str, plan: str, expected):
    with pytest.raises(PlanCatalogError) as caught:
        load(tmp_path, body, plan)
    message = str(caught.value)
    assert "plan 'p'" in message
    if body:
        assert "metric 'api.ca" in message
        assert "price" in message
    for part in expected:
        assert part in message, message


def test_a_bad_price_stops_the_app_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "plans.toml"
    path.write_text(HEAD + "\n" + price_toml('model = "per_unit"\nunit_price = 0.1', "api.requests"), encoding="utf-8")
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("METERING_PLANS_FILE", str(path))
    problem = configuration.find_problem()
    assert problem is not None
    assert "plan 'p'" in problem
    assert "metric 'api.requests': price: unit_price" in problem
    assert "float" in problem
