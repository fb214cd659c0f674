"""Which thresholds of a hard limit a usage has reached (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from metering.core.periods import CalendarMonthUtc
from metering.quotas.alerts import alert_id, crossed

THRESHOLDS = (Decimal(80), Decimal(100))


def test_each_threshold_reached_is_crossed_and_none_below():
    assert crossed(Decimal(79), Decimal(100), THRESHOLDS) == []
    assert crossed(Decimal(80), Decimal(100), THRESHOLDS) == [Decimal(80)]
    assert crossed(Decimal("99.999999999999"), Decimal(100), THRESHOLDS) == [Decimal(80)]
    assert crossed(Decimal(100), Decimal(100), THRESHOLDS) == [Decimal(80), Decimal(100)]
    assert crossed(Decimal(250), Decimal(100), THRESHOLDS) == [Decimal(80), Decimal(100)]


def test_a_fraction_of_a_limit_is_exact():
    # 80 % of 0.000000000003 is 0.0000000000024: a usage just below it crosses nothing.
    assert crossed(Decimal("0.0000000000023"), Decimal("0.000000000003"), THRESHOLDS) == []
    assert crossed(Decimal("0.0000000000024"), Decimal("0.000000000003"), THRESHOLDS) == [Decimal(80)]


def test_no_usage_crosses_nothing_even_against_a_zero_limit():
    assert crossed(Decimal(0), Decimal(0), THRESHOLDS) == []
    assert crossed(Decimal(-5), Decimal(10), THRESHOLDS) == []
    assert crossed(Decimal(1), Decimal(0), THRESHOLDS) == [Decimal(80), Decimal(100)]


def test_an_alert_is_named_by_tenant_meter_period_and_threshold():
    period = CalendarMonthUtc().period_at("acme", datetime(2026, 11, 24, tzinfo=UTC))
    assert alert_id("acme", "api.requests", period, Decimal("80.0")) == (
        "quota.threshold_crossed:acme:api.requests:2026-11-01:80"
    )
