"""The meter catalog (default and bad ones written to disk) and the exact decimal helpers behind quantities."""

from __future__ import annotations

from decimal import Decimal, Inexact, Rounded
from pathlib import Path

import pytest

from metering.core import decimals
from metering.core.meters import Aggregation, CatalogError, MeterCatalog, load_catalog, parse_catalog

# A meter that loads; each bad case below breaks exactly one thing of a catalog like this one.
VALID_CATALOG = """
version = "test-1"

[meters."api.calls"]
unit = "count"
aggregation = "sum"
group_by = ["region"]
"""


def write_catalog(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "meters.toml"
    path.write_text(text, encoding="utf-8")
    return path


# the default catalog --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_catalog() -> MeterCatalog:
    return load_catalog()


def test_default_catalog_has_a_version(default_catalog: MeterCatalog) -> None:
    assert default_catalog.version
    assert default_catalog.names == tuple(sorted(default_catalog.meters))


@pytest.mark.parametrize(
    ("name", "aggregation", "unit"),
    [
        ("api.requests", Aggregation.SUM, "count"),
        ("compute.seconds", Aggregation.SUM, "second"),
        ("storage.gb", Aggregation.TIME_WEIGHTED, "GB"),
        ("storage.gb_peak", Aggregation.MAX, "GB"),
        ("transfer.bytes", Aggregation.SUM, "byte"),
        ("users.active", Aggregation.UNIQUE_COUNT, "user"),
        ("reports.generated", Aggregation.COUNT, "report"),
    ],
)
def test_default_catalog_meters(default_catalog: MeterCatalog, name: str, aggregation: Aggregation, unit: str) -> None:
    meter = default_catalog.get(name)
    assert meter is not None
    assert meter.name == name
    assert meter.aggregation is aggregation
    assert meter.unit == unit


def test_default_users_active_counts_user_ids(default_catalog: MeterCatalog) -> None:
    meter = default_catalog.meters["users.active"]
    assert meter.field == "user_id"
    assert meter.group_by == ()


def test_default_catalog_only_credits_may_go_negative(default_catalog: MeterCatalog) -> None:
    assert [meter.name for meter in default_catalog.meters.values() if meter.allow_negative] == ["credits.balance"]


def test_unknown_meter_is_none(default_catalog: MeterCatalog) -> None:
    assert default_catalog.get("no.such.meter") is None


def test_catalog_loads_from_a_path(tmp_path: Path) -> None:
    # The positive control for the bad cases: the base document is fine, so each failure is the one change.
    catalog = load_catalog(write_catalog(tmp_path, VALID_CATALOG))
    assert catalog.version == "test-1"
    assert catalog.names == ("api.calls",)
    assert catalog.meters["api.calls"].group_by == ("region",)


def test_catalog_path_may_be_a_string(tmp_path: Path) -> None:
    assert load_catalog(str(write_catalog(tmp_path, VALID_CATALOG))).names == ("api.calls",)


# bad catalogs ---------------------------------------------------------------------------------------------------


def meter_toml(name: str, body: str, version: str = 'version = "test-1"') -> str:
    return f'{version}\n\n[meters."{name}"]\n{body}\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            meter_toml("api.calls", 'unit = "count"\naggregation = "average"'),
            ["api.calls", "aggregation"],
            id="unknown-aggregation",
        ),
        pytest.param(
            meter_toml("users.seen", 'unit = "user"\naggregation = "unique_count"'),
            ["users.seen", "field"],
            id="unique-count-without-field",
        ),
        pytest.param(
            meter_toml("users.seen", 'unit = "user"\naggregation = "unique_count"\nfield = "email"'),
            ["users.seen", "field", "email"],
            id="unique-count-with-unknown-field",
        ),
        pytest.param(
            meter_toml("api.calls", 'unit = "count"\naggregation = "sum"\nfield = "user_id"'),
            ["api.calls", "field", "unique_count"],
            id="field-on-sum",
        ),
        pytest.param(
            meter_toml(
                "users.seen", 'unit = "user"\naggregation = "unique_count"\nfield = "user_id"\ngroup_by = ["r"]'
            ),
            ["users.seen", "group_by"],
            id="group-by-on-unique-count",
        ),
        pytest.param(
            meter_toml("api.calls", 'unit = "count"\naggregation = "sum"\ngroup_by = ["region", "method", "region"]'),
            ["api.calls", "group_by", "twice"],
            id="duplicated-group-by",
        ),
        pytest.param(
            meter_toml("api.calls", 'unit = "count"\naggregation = "sum"\ngroup_by = ["Region"]'),
            ["api.calls", "group_by"],
            id="invalid-dimension-name",
        ),
        pytest.param(
            meter_toml("api.calls", 'unit = "count"\naggregation = "sum"\ngroup_by = ["' + "d" * 65 + '"]'),
            ["api.calls", "group_by"],
            id="65-char-dimension-name",
        ),
        pytest.param(
            meter_toml("API Requests", 'unit = "count"\naggregation = "sum"'),
            ["API Requests", "name"],
            id="invalid-meter-name",
        ),
        pytest.param(
            meter_toml("api..calls", 'unit = "count"\naggregation = "sum"'),
            ["api..calls", "name"],
            id="empty-meter-name-segment",
        ),
        pytest.param(
            meter_toml("reports.made", 'unit = "report"\naggregation = "count"\nallow_negative = true'),
            ["reports.made", "allow_negative"],
            id="allow-negative-on-count",
        ),
        pytest.param(
            meter_toml(
                "users.seen", 'unit = "u"\naggregation = "unique_count"\nfield = "user_id"\nallow_negative = true'
            ),
            ["users.seen", "allow_negative"],
            id="allow-negative-on-unique-count",
        ),
        pytest.param(
            meter_toml("api.calls", 'aggregation = "sum"'),
            ["api.calls", "unit"],
            id="missing-unit",
        ),
        pytest.param(
            meter_toml("api.calls", 'unit = " count"\naggregation = "sum"'),
            ["api.calls", "unit"],
            id="unit-with-leading-space",
        ),
        pytest.param(
            meter_toml("api.calls", 'unit = "count"\naggregation = "sum"\ncolour = "blue"'),
            ["api.calls", "colour"],
            id="unknown-key-in-meter",
        ),
        pytest.param(
            meter_toml("api.calls", 'unit = "count"\naggregation = "sum"\nmax_group_values = 0'),
            ["api.calls", "max_group_values"],
            id="max-group-values-zero",
        ),
        pytest.param(
            'version = "test-1"\nmeters = { "api.calls" = "sum" }\n',
            ["api.calls", "table"],
            id="meter-not-a-table",
        ),
        pytest.param(
            meter_toml("api.calls", 'unit = "count"\naggregation = "sum"', version=""),
            ["version"],
            id="missing-version",
        ),
        pytest.param(
            meter_toml("api.calls", 'unit = "count"\naggregation = "sum"', version='version = ""'),
            ["version"],
            id="empty-version",
        ),
        pytest.param(
            meter_toml("api.calls", 'unit = "count"\naggregation = "sum"', version="version = 3"),
            ["version"],
            id="version-not-a-string",
        ),
        pytest.param('version = "test-1"\n', ["no meters"], id="no-meters"),
        pytest.param('version = "test-1"\n[meters]\n', ["no meters"], id="empty-meters-table"),
        pytest.param(VALID_CATALOG + 'owner = "billing"\n', ["owner"], id="unknown-top-level-key"),
        pytest.param('version = "test-1\n[meters."api.calls"\n', ["TOML"], id="invalid-toml"),
    ],
)
def test_bad_catalog_names_the_meter_and_the_problem(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = write_catalog(tmp_path, text)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    message = str(caught.value)
    for part in expected:
        assert part in message, message
    # The operator must know which file to fix.
    assert str(path) in message


@pytest.mark.parametrize("kind", ["missing-file", "directory"])
def test_unreadable_catalog_path(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "absent.toml" if kind == "missing-file" else tmp_path
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert str(path) in str(caught.value)
    assert "cannot be read" in str(caught.value)


def test_unique_count_may_count_a_dimension(tmp_path: Path) -> None:
    text = meter_toml("regions.used", 'unit = "region"\naggregation = "unique_count"\nfield = "dimensions.region"')
    meter = load_catalog(write_catalog(tmp_path, text)).meters["regions.used"]
    assert meter.field == "dimensions.region"


# decimals -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("1E+2"), "100"),
        (Decimal("-0"), "0"),
        (Decimal("0E-12"), "0"),
        (Decimal("-0.000"), "0"),
        (Decimal("1.50"), "1.5"),
        (Decimal("-1.50"), "-1.5"),
        (Decimal("1E-12"), "0.000000000001"),
        (Decimal("999999999999999999.999999999999"), "999999999999999999.999999999999"),
        (Decimal("12.5"), "12.5"),
        (Decimal(7), "7"),
    ],
)
def test_to_str_is_canonical(value: Decimal, text: str) -> None:
    assert decimals.to_str(value) == text


@pytest.mark.parametrize("text", ["0", "1.5", "-1.5", "100", "0.000000000001", "123456789012345678.123456789012"])
def test_to_str_round_trips_through_from_str(text: str) -> None:
    assert decimals.to_str(decimals.from_str(text)) == text


@pytest.mark.parametrize("text", ["", "abc", " 1", "1,5", "NaN", "Infinity", "0x10", "1e"])
def test_from_str_is_strict(text: str) -> None:
    with pytest.raises(decimals.QuantityError):
        decimals.from_str(text)


def test_add_is_exact_within_the_context() -> None:
    # 80 significant digits: the widest sum the exact context holds without rounding.
    a = Decimal("1" * 79)
    assert decimals.add(a, Decimal(1)) == Decimal("1" * 78 + "2")
    assert decimals.add(Decimal("0.1"), Decimal("0.2")) == Decimal("0.3")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # The exact sum would need 201 digits.
        (Decimal("1E+100"), Decimal("1E-100")),
        # The exact sum would need 81 digits.
        (Decimal("9" * 80), Decimal(1)),
        (Decimal("1" * 80), Decimal("0.1")),
    ],
)
def test_add_raises_instead_of_rounding(a: Decimal, b: Decimal) -> None:
    with pytest.raises((Inexact, Rounded)):
        decimals.add(a, b)


def test_subtract_raises_instead_of_rounding() -> None:
    with pytest.raises((Inexact, Rounded)):
        decimals.subtract(Decimal("1E+100"), Decimal("1E-100"))


@pytest.mark.parametrize(
    "text", ["999999999999999999.999999999999", "-999999999999999999.999999999999", "1.5000000000000", "0"]
)
def test_check_bounds_accepts(text: str) -> None:
    assert decimals.check_bounds(Decimal(text)) == Decimal(text)


@pytest.mark.parametrize("text", ["1000000000000000000", "0.0000000000001", "NaN", "Infinity"])
def test_check_bounds_rejects(text: str) -> None:
    with pytest.raises(decimals.QuantityError):
        decimals.check_bounds(Decimal(text))


def test_a_time_weighted_meter_is_neither_grouped_nor_exported_yet() -> None:
    base = {"unit": "GB", "aggregation": "time_weighted"}
    with pytest.raises(CatalogError, match="cannot have group_by"):
        parse_catalog({"version": "1", "meters": {"disk.gb": {**base, "group_by": ["tier"]}}})
    with pytest.raises(CatalogError, match="not exported yet"):
        parse_catalog({"version": "1", "meters": {"disk.gb": {**base, "stripe_event_name": "disk"}}})
