"""Rating: the four price models on hand-computed cases at every boundary, currencies and their one rounding,
adjustments at the margin, and a property of graduated prices."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Context, Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.billing.rating import charge, priced_quantity, rate
from metering.billing.statements import LineKind, StatementLine
from metering.core.decimals import to_str
from metering.core.money import CurrencyError, amount_text, minor_digits, round_half_up, shown
from metering.core.prices import Price, Pricing

D = Decimal


def price(**fields) -> Price:
    return Price.model_validate(fields)


def amount(p: Price, quantity: str, currency: str = "USD") -> str:
    return amount_text(round_half_up(charge(p, D(quantity)).amount, minor_digits(currency)))


def tiers_of(p: Price, quantity: str) -> list[tuple[str | None, str, str]]:
    found = charge(p, D(quantity)).tiers
    assert found is not None
    return [(None if t.up_to is None else to_str(t.up_to), to_str(t.quantity), to_str(shown(t.amount))) for t in found]


GRADUATED = price(
    model="graduated",
    tiers=[
        {"up_to": "100", "unit_price": "1.00"},
        {"up_to": "1000", "unit_price": "0.50", "flat_fee": "10"},
        {"unit_price": "0.25"},
    ],
)


@pytest.mark.parametrize(
    ("quantity", "expected", "tiers"),
    [
        ("0", "0.00", []),
        ("2.5", "2.50", [("100", "2.5", "2.5")]),
        # exactly at the first bound, one past it (its flat fee starts), at the second and one past it
        ("100", "100.00", [("100", "100", "100")]),
        ("101", "110.50", [("100", "100", "100"), ("1000", "1", "10.5")]),
        ("1000", "560.00", [("100", "100", "100"), ("1000", "900", "460")]),
        ("1001", "560.25", [("100", "100", "100"), ("1000", "900", "460"), (None, "1", "0.25")]),
    ],
)
def test_graduated_prices_each_tier_for_its_units(quantity, expected, tiers):
    assert amount(GRADUATED, quantity) == expected
    assert tiers_of(GRADUATED, quantity) == tiers


VOLUME = price(
    model="volume",
    tiers=[
        {"up_to": "100", "unit_price": "1.00"},
        {"up_to": "1000", "unit_price": "0.80", "flat_fee": "5"},
        {"unit_price": "0.50"},
    ],
)


@pytest.mark.parametrize(
    ("quantity", "expected", "tier"),
    [
        ("0", "0.00", None),
        ("100", "100.00", "100"),
        # one past the bound: every unit at the next tier's price, plus its flat fee
        ("101", "85.80", "1000"),
        ("1000", "805.00", "1000"),
        ("1001", "500.50", None),
    ],
)
def test_volume_prices_every_unit_at_the_tier_the_quantity_falls_in(quantity, expected, tier):
    assert amount(VOLUME, quantity) == expected
    applied = tiers_of(VOLUME, quantity)
    if quantity == "0":
        assert applied == []
    else:
        assert applied == [(tier, quantity, to_str(D(expected)))]


def test_per_unit_with_an_allowance_and_a_billing_unit():
    # "0.40 per 1K calls, the first 1000 free"
    p = price(model="per_unit", included="1000", unit_size="1000", unit_price="0.40")
    assert amount(p, "0") == "0.00"
    assert amount(p, "999") == "0.00"  # just under the allowance
    assert amount(p, "1000") == "0.00"  # exactly at it
    assert amount(p, "1001") == "0.00"  # 1 call is 0.0004: priced, then the line rounds to the cent
    assert amount(p, "2250") == "0.50"  # 1.25 billing units: fractional units are priced, not rounded
    assert amount(p, "1001000") == "400.00"
    assert charge(p, D("1001")).amount == Fraction(4, 10000)
    # A quantity below zero (credits) is nothing billable, never a negative charge.
    assert amount(p, "-5000") == "0.00"
    assert charge(p, D("5000")).tiers is None


def test_package_rounds_up_to_whole_packages():
    gb = 10**9
    p = price(model="package", unit_size=gb, unit_price="0.09")
    assert amount(p, "0") == "0.00"
    assert amount(p, "1") == "0.09"  # one byte starts a package
    assert amount(p, str(gb)) == "0.09"
    assert amount(p, str(gb + 1)) == "0.18"
    assert amount(p, "0.5") == "0.09"
    with_allowance = price(model="package", included=5 * gb, unit_size=gb, unit_price="0.09")
    assert amount(with_allowance, str(5 * gb)) == "0.00"
    assert amount(with_allowance, str(5 * gb + 1)) == "0.09"


def test_flat_fees_are_charged_only_where_units_fall():
    p = price(model="graduated", tiers=[{"up_to": "10", "unit_price": "0", "flat_fee": "25"}, {"unit_price": "2"}])
    assert amount(p, "0") == "0.00"
    assert amount(p, "0.5") == "25.00"
    assert amount(p, "10") == "25.00"
    assert amount(p, "11") == "27.00"


def test_a_price_per_three_units_is_exact_until_the_line_rounds():
    p = price(model="per_unit", unit_size="3", unit_price="1")
    assert charge(p, D("1")).amount == Fraction(1, 3)
    assert amount(p, "1") == "0.33"
    assert amount(p, "2") == "0.67"
    tiered = price(model="graduated", unit_size="3", tiers=[{"unit_price": "1"}])
    # A tier shows its exact amount to 12 places; the line amount is rounded from the exact one.
    assert tiers_of(tiered, "1") == [(None, "1", "0.333333333333")]


def test_half_a_minor_unit_rounds_up_in_every_currency():
    assert [minor_digits(c) for c in ("USD", "EUR", "JPY", "BHD")] == [2, 2, 0, 3]
    assert amount(price(model="per_unit", unit_price="0.125"), "1") == "0.13"  # half even would give 0.12
    assert amount(price(model="per_unit", unit_price="0.01"), "0.5") == "0.01"
    # JPY has no minor unit: 1.5 yen is 2, 2.5 yen is 3.
    yen = price(model="per_unit", unit_price="0.5")
    assert (amount(yen, "3", "JPY"), amount(yen, "5", "JPY"), amount(yen, "4", "JPY")) == ("2", "3", "2")
    # BHD has three: 0.0005 dinar is 0.001, 0.0015 is 0.002, 0.0004 is 0.000.
    fils = price(model="per_unit", unit_price="0.0005")
    assert (amount(fils, "1", "BHD"), amount(fils, "3", "BHD")) == ("0.001", "0.002")
    assert amount(price(model="per_unit", unit_price="0.0004"), "1", "BHD") == "0.000"
    assert round_half_up(Fraction(-1, 8), 2) == D("-0.13")


def test_currencies_come_from_iso_4217():
    assert minor_digits("CLF") == 4
    for code, reason in (("XAU", "no minor unit"), ("usd", "three capital letters"), ("ABC", "not a currency")):
        with pytest.raises(CurrencyError, match=reason):
            minor_digits(code)


def test_very_large_quantities_lose_no_digit():
    quantity = "123456789012345678.123456789012"
    p = price(model="per_unit", unit_size="1000", unit_price="9.999999999999")
    wide = Context(prec=200, rounding=ROUND_HALF_UP)
    expected = wide.divide(wide.multiply(D(quantity), D("9.999999999999")), D(1000)).quantize(D("0.01"), context=wide)
    # By hand: q/100 - q/10^15 = 1234567890123456.78123... - 123.45678901234... = 1234567890123333.3244...
    assert amount(p, quantity) == str(expected) == "1234567890123333.32"
    # A total of many events can pass the bounds of one event's quantity: still exact.
    huge = "9" * 40
    assert amount(price(model="per_unit", unit_price="0.01"), huge) == "9" * 38 + ".99"
    graduated = price(model="graduated", tiers=[{"up_to": "1", "unit_price": "1"}, {"unit_price": "0.000000000001"}])
    assert amount(graduated, huge) == str(
        wide.add(1, wide.multiply(D(huge) - 1, D("1e-12"))).quantize(D("0.01"), context=wide)
    )


def line(metric: str, quantity: str, kind: LineKind = LineKind.USAGE, aggregation: str = "sum") -> StatementLine:
    return StatementLine(
        metric=metric, kind=kind, unit="count", aggregation=aggregation, quantity=D(quantity), event_count=1
    )


def test_rate_adds_a_fee_line_and_sums_the_rounded_lines():
    third = price(model="per_unit", unit_size="3", unit_price="1")
    pricing = Pricing("pro", "v1", "USD", D("49"), {"a": third, "b": third})
    rated = rate(pricing, [line("a", "1"), line("b", "1"), line("c", "7")])
    assert [(item.kind, item.metric, amount_text(item.amount)) for item in rated.lines] == [
        (LineKind.FEE, None, "49.00"),
        (LineKind.USAGE, "a", "0.33"),
        (LineKind.USAGE, "b", "0.33"),
        (LineKind.USAGE, "c", "0.00"),  # a metric the plan does not price costs nothing
    ]
    # The sum of the rounded lines, not the rounded sum (49.67).
    assert amount_text(rated.subtotal) == "49.66"
    assert rated.lines[0].quantity == 1
    assert rate(Pricing("free", "v1", "JPY"), []).subtotal == D(0)
    assert amount_text(rate(Pricing("free", "v1", "BHD"), []).subtotal) == "0.000"


def test_adjustments_are_priced_at_the_margin():
    pricing = Pricing("pro", "v1", "USD", None, {"a": GRADUATED, "v": VOLUME})
    rated = rate(
        pricing,
        [line("a", "90"), line("a", "20", LineKind.ADJUSTMENT), line("v", "100"), line("v", "1", LineKind.ADJUSTMENT)],
    )
    usage, adjustment, volume, cliff = rated.lines
    assert (amount_text(usage.amount), amount_text(adjustment.amount)) == ("90.00", "25.00")  # 115.00 - 90.00
    assert [(t.up_to, t.quantity, t.flat_fee, t.amount) for t in adjustment.tiers] == [
        (D(100), D(10), D(0), D(10)),
        (D(1000), D(10), D(10), D(15)),
    ]
    # Volume: one more unit moves all of them to the cheaper tier, so the adjustment is a credit.
    assert (amount_text(volume.amount), amount_text(cliff.amount)) == ("100.00", "-14.20")
    assert [(t.up_to, t.quantity, t.amount) for t in cliff.tiers] == [
        (D(100), D(-100), D(-100)),
        (D(1000), D(101), D("85.8")),
    ]
    assert amount_text(rated.subtotal) == "200.80"  # 115.00 + 85.80: as if all had come in time
    # Late events with no usage of their own in the period: priced from zero.
    alone = rate(pricing, [line("a", "20", LineKind.ADJUSTMENT)])
    assert amount_text(alone.lines[0].amount) == "20.00"


def test_the_priced_figure_of_each_kind():
    for kind in ("sum", "count", "unique_count", "max", "min", "latest"):
        assert priced_quantity(kind, D(7), D(3)) == 7
    assert priced_quantity("time_weighted", D(720), D(1)) == 1
    with pytest.raises(ValueError, match="average"):
        priced_quantity("time_weighted", D(720))


# A property: graduated amounts never fall as the quantity grows, and are the sum of their tiers' amounts.

decimals_2 = st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False, allow_infinity=False)


@st.composite
def graduated_prices(draw) -> Price:
    bounds = sorted(set(draw(st.lists(st.integers(1, 10**6), min_size=0, max_size=4))))
    prices = draw(st.lists(decimals_2, min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    fees = draw(st.lists(st.sampled_from([D(0), D("0.5"), D(10)]), min_size=len(prices), max_size=len(prices)))
    tiers = [
        {"up_to": str(bound), "unit_price": str(p), "flat_fee": str(f)}
        for bound, p, f in zip(bounds, prices, fees, strict=False)
    ]
    tiers.append({"unit_price": str(prices[-1]), "flat_fee": str(fees[-1])})
    return price(
        model="graduated",
        tiers=tiers,
        unit_size=str(draw(st.sampled_from([1, 3, 1000]))),
        included=str(draw(st.sampled_from([0, 50, 10**5]))),
    )


@settings(max_examples=300, deadline=None)
@given(graduated_prices(), decimals_2, decimals_2)
def test_graduated_is_monotone_and_the_sum_of_its_tiers(p, a, b):
    low, high = sorted((a, b))
    assert charge(p, low).amount <= charge(p, high).amount
    for quantity in (low, high):
        found = charge(p, quantity)
        assert found.tiers is not None
        assert found.amount == sum((t.amount for t in found.tiers), Fraction(0))
        billable = max(quantity - p.included, D(0))
        assert sum((t.quantity for t in found.tiers), D(0)) == billable
        # Each tier on its own: its units inside (lower, up_to], at its price, plus its fee when any.
        lower = D(0)
        expected = Fraction(0)
        for tier in p.tiers:
            upper = billable if tier.up_to is None else min(billable, tier.up_to)
            inside = max(upper - lower, D(0))
            if inside > 0:
                expected += Fraction(inside) * Fraction(tier.unit_price) / Fraction(p.unit_size) + Fraction(
                    tier.flat_fee
                )
            lower = tier.up_to if tier.up_to is not None else lower
        assert found.amount == expected
