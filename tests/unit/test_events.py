"""The field rules of POST /api/events (docs/api.md), checked through the same path ingest uses: JSON bytes decoded by
`decode_json`, then `validate_events` against the default catalog with a fixed clock."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from metering.core.events import BodyError, FieldError, UsageEvent, decode_json, validate_events
from metering.core.meters import MeterCatalog, load_catalog

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
MAX_AGE = timedelta(days=35)
MAX_FUTURE = timedelta(minutes=5)

# Marks a field to leave out of the event entirely (None would send a JSON null, which is a different case).
MISSING: Any = object()


@pytest.fixture(scope="module")
def catalog() -> MeterCatalog:
    return load_catalog()


def make_event(**overrides: Any) -> dict[str, Any]:
    """A valid api.requests event; keyword arguments replace fields, MISSING drops one."""
    event: dict[str, Any] = {
        "event_id": "evt-0001",
        "tenant_id": "acme",
        "metric": "api.requests",
        "quantity": "1",
        "timestamp": "2026-11-24T09:00:00Z",
        "source": "gateway-eu",
    }
    event.update(overrides)
    return {key: value for key, value in event.items() if value is not MISSING}


def validate_body(
    body: bytes, catalog: MeterCatalog, *, now: datetime | None = NOW
) -> tuple[list[UsageEvent], list[FieldError]]:
    decoded = decode_json(body)
    items = decoded if isinstance(decoded, list) else [decoded]
    return validate_events(items, catalog, now=now, max_age=MAX_AGE, max_future=MAX_FUTURE)


def validate_items(
    items: Iterable[Any], catalog: MeterCatalog, *, now: datetime | None = NOW
) -> tuple[list[UsageEvent], list[FieldError]]:
    # Through real JSON bytes, so strings with control characters and integers arrive as a client sends them.
    return validate_body(json.dumps(list(items)).encode(), catalog, now=now)


def accept(item: dict[str, Any], catalog: MeterCatalog) -> UsageEvent:
    events, errors = validate_items([item], catalog)
    assert errors == []
    assert len(events) == 1
    return events[0]


def reject(item: dict[str, Any], catalog: MeterCatalog, field: str) -> FieldError:
    """The event is refused, and every error it gets names `field`."""
    events, errors = validate_items([item], catalog)
    assert events == []
    assert [(error.index, error.field) for error in errors] == [(0, field)], errors
    assert errors[0].message
    return errors[0]


def raw_quantity_body(literal: str, **overrides: Any) -> bytes:
    """An event whose quantity is the JSON text `literal` verbatim (a number json.dumps could not produce)."""
    text = json.dumps(make_event(quantity="__QUANTITY__", **overrides))
    return text.replace('"__QUANTITY__"', literal).encode()


# event_id -------------------------------------------------------------------------------------------------------


def test_event_id_is_optional(catalog: MeterCatalog) -> None:
    assert accept(make_event(event_id=MISSING), catalog).event_id is None


@pytest.mark.parametrize("event_id", ["a", "x" * 128, "évènement 1/2 (retry)", "0195f1c2-7b3e-7c4d-9a1e-2f3b4c5d6e7f"])
def test_event_id_accepts_1_to_128_printable(catalog: MeterCatalog, event_id: str) -> None:
    assert accept(make_event(event_id=event_id), catalog).event_id == event_id


@pytest.mark.parametrize(
    "event_id",
    [
        pytest.param("", id="empty"),
        pytest.param("x" * 129, id="129-chars"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("a\nb", id="newline"),
        pytest.param("a\tb", id="tab"),
        pytest.param("a\x7fb", id="del"),
        pytest.param("a\u2028b", id="line-separator"),
        pytest.param(123, id="number"),
    ],
)
def test_event_id_rejects(catalog: MeterCatalog, event_id: Any) -> None:
    reject(make_event(event_id=event_id), catalog, "event_id")


# tenant_id ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tenant_id", ["a", "x" * 128, "Acme.Corp_01:eu-west", "ABCxyz0123456789._:-"])
def test_tenant_id_accepts_its_charset(catalog: MeterCatalog, tenant_id: str) -> None:
    assert accept(make_event(tenant_id=tenant_id), catalog).tenant_id == tenant_id


@pytest.mark.parametrize(
    "tenant_id",
    [
        pytest.param(MISSING, id="missing"),
        pytest.param(None, id="null"),
        pytest.param("", id="empty"),
        pytest.param("x" * 129, id="129-chars"),
        pytest.param("acme corp", id="space"),
        pytest.param("acme/corp", id="slash"),
        pytest.param("acme@corp", id="at"),
        pytest.param("acmé", id="non-ascii"),
        # A trailing newline slips past a Python `$`; the rule is about the whole value.
        pytest.param("acme\n", id="trailing-newline"),
        pytest.param(42, id="number"),
    ],
)
def test_tenant_id_rejects(catalog: MeterCatalog, tenant_id: Any) -> None:
    reject(make_event(tenant_id=tenant_id), catalog, "tenant_id")


def test_tenant_id_missing_says_required(catalog: MeterCatalog) -> None:
    assert reject(make_event(tenant_id=MISSING), catalog, "tenant_id").message == "is required"


# metric ---------------------------------------------------------------------------------------------------------


def test_every_catalog_meter_is_accepted(catalog: MeterCatalog) -> None:
    for name in catalog.names:
        # user_id satisfies users.active; the other meters ignore it.
        assert accept(make_event(metric=name, user_id="u-1"), catalog).metric == name


@pytest.mark.parametrize(
    "metric",
    [
        pytest.param(MISSING, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("no.such.meter", id="unknown"),
        pytest.param("API.REQUESTS", id="wrong-case"),
        pytest.param(5, id="number"),
    ],
)
def test_metric_rejects(catalog: MeterCatalog, metric: Any) -> None:
    reject(make_event(metric=metric), catalog, "metric")


def test_unknown_metric_message_lists_the_catalog(catalog: MeterCatalog) -> None:
    error = reject(make_event(metric="no.such.meter"), catalog, "metric")
    assert "api.requests" in error.message


# quantity: strings ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # More digits than a double holds (19, 30): only a string can carry them, and they must survive exactly.
        ("1234567.890123456789", Decimal("1234567.890123456789")),
        ("999999999999999999.999999999999", Decimal("999999999999999999.999999999999")),
        ("0.000000000001", Decimal("0.000000000001")),
        # Trailing zeros are not digits of the value: 13 written fractional digits are still 1.5.
        ("1.5000000000000", Decimal("1.5")),
        ("100000000000000000.000000000000000", Decimal("100000000000000000")),
        ("1E+17", Decimal("100000000000000000")),
        ("1e-12", Decimal("0.000000000001")),
        ("0", Decimal(0)),
        ("0.0", Decimal(0)),
        (".5", Decimal("0.5")),
        ("+7", Decimal(7)),
        ("12.5", Decimal("12.5")),
    ],
)
def test_quantity_string_is_kept_exactly(catalog: MeterCatalog, text: str, expected: Decimal) -> None:
    quantity = accept(make_event(quantity=text), catalog).quantity
    assert isinstance(quantity, Decimal)
    assert quantity == expected


def test_quantity_string_keeps_all_nineteen_digits(catalog: MeterCatalog) -> None:
    quantity = accept(make_event(quantity="1234567.890123456789"), catalog).quantity
    # Inequality with the double-rounded value shows nothing went through a float on the way.
    assert quantity == Decimal("1234567.890123456789")
    assert quantity != Decimal(repr(1234567.890123456789))


def test_quantity_string_with_18_fraction_digits_is_rejected(catalog: MeterCatalog) -> None:
    # A string lifts the 15-significant-digit limit of JSON numbers, not the 12-fraction-digit limit of quantities.
    error = reject(make_event(quantity="1.234567890123456789"), catalog, "quantity")
    assert "12 digits after" in error.message


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("abc", id="letters"),
        pytest.param(" 1", id="leading-space"),
        pytest.param("1,5", id="comma"),
        pytest.param("1_000", id="underscore"),
        pytest.param("0x10", id="hex"),
        pytest.param("1e", id="bare-exponent"),
        pytest.param("NaN", id="nan"),
        pytest.param("Infinity", id="infinity"),
        pytest.param("-Infinity", id="minus-infinity"),
        pytest.param("1000000000000000000", id="19-integer-digits"),
        pytest.param("1E+18", id="19-integer-digits-exponent"),
        pytest.param("0.0000000000001", id="13-fraction-digits"),
        pytest.param("1.0000000000001", id="13-significant-fraction-digits"),
        pytest.param("1e-13", id="13-fraction-digits-exponent"),
    ],
)
def test_quantity_string_rejects(catalog: MeterCatalog, text: str) -> None:
    reject(make_event(quantity=text), catalog, "quantity")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("1e999999999", id="huge-exponent"),
        pytest.param("1e-999999999", id="tiny-exponent"),
        pytest.param("0." + "1" * 100, id="100-fraction-digits"),
        pytest.param("1" * 100, id="100-integer-digits"),
    ],
)
def test_quantity_beyond_the_exact_context_is_a_field_error(catalog: MeterCatalog, text: str) -> None:
    # Out of bounds like any other too-long quantity: a 422 naming the field, not a decimal trap escaping as a 500.
    reject(make_event(quantity=text), catalog, "quantity")


# quantity: JSON numbers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ("123456789012.345", Decimal("123456789012.345")),
        ("999999999999999", Decimal("999999999999999")),
        ("0.000000000001", Decimal("0.000000000001")),
        ("1.5000000000000", Decimal("1.5")),
        ("1e3", Decimal(1000)),
        ("0", Decimal(0)),
        ("0.1", Decimal("0.1")),
    ],
)
def test_quantity_json_number_up_to_15_digits_is_exact(catalog: MeterCatalog, literal: str, expected: Decimal) -> None:
    events, errors = validate_body(raw_quantity_body(literal), catalog)
    assert errors == []
    assert isinstance(events[0].quantity, Decimal)
    assert events[0].quantity == expected


@pytest.mark.parametrize(
    "literal",
    [
        pytest.param("1.234567890123456789", id="19-digit-fraction"),
        pytest.param("0.1234567890123456", id="16-digit-fraction"),
        pytest.param("1234567890123456", id="16-digit-integer"),
        pytest.param("12345678901234567", id="17-digit-integer"),
        pytest.param("1e18", id="19-integer-digits"),
        pytest.param("1e-13", id="13-fraction-digits"),
        pytest.param("true", id="true"),
        pytest.param("false", id="false"),
        pytest.param("null", id="null"),
        pytest.param("[1]", id="array"),
        pytest.param('{"value": 1}', id="object"),
    ],
)
def test_quantity_json_value_rejects(catalog: MeterCatalog, literal: str) -> None:
    events, errors = validate_body(raw_quantity_body(literal), catalog)
    assert events == []
    assert [(error.index, error.field) for error in errors] == [(0, "quantity")]


def test_quantity_json_number_too_precise_suggests_a_string(catalog: MeterCatalog) -> None:
    _, errors = validate_body(raw_quantity_body("1.234567890123456789"), catalog)
    assert "15 significant digits" in errors[0].message
    assert "string" in errors[0].message


def test_quantity_json_number_message_suggests_a_valid_string(catalog: MeterCatalog) -> None:
    # A client following the advice of the error must get its event accepted, not a second 422.
    _, errors = validate_body(raw_quantity_body("1234567890123456.5"), catalog)
    examples = re.findall(r'"([^"]+)"', errors[0].message)
    assert examples, errors[0].message
    for example in examples:
        accept(make_event(quantity=example), catalog)


@pytest.mark.parametrize(
    "literal",
    [
        pytest.param("0." + "1" * 100, id="100-fraction-digits"),
        pytest.param("1e999999999", id="huge-exponent"),
    ],
)
def test_quantity_json_number_beyond_the_exact_context_is_a_field_error(catalog: MeterCatalog, literal: str) -> None:
    events, errors = validate_body(raw_quantity_body(literal), catalog)
    assert events == []
    assert [(error.index, error.field) for error in errors] == [(0, "quantity")]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_literals_are_a_body_error(literal: str) -> None:
    with pytest.raises(BodyError):
        decode_json(raw_quantity_body(literal))


def test_decode_json_keeps_fractions_as_decimal() -> None:
    decoded = decode_json(b'{"a": 0.1, "b": 10}')
    assert decoded == {"a": Decimal("0.1"), "b": 10}
    assert isinstance(decoded["a"], Decimal)


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b'{"a": 1,}'])
def test_decode_json_rejects_invalid_json(body: bytes) -> None:
    with pytest.raises(BodyError):
        decode_json(body)


def test_quantity_is_required(catalog: MeterCatalog) -> None:
    reject(make_event(quantity=MISSING), catalog, "quantity")


# quantity: the meter's sign rule --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "quantity"),
    [
        ("api.requests", "-1"),
        ("api.requests", -1),
        ("transfer.bytes", "-0.000000000001"),
        ("storage.gb", "-5"),
    ],
)
def test_negative_quantity_rejected_without_allow_negative(catalog: MeterCatalog, metric: str, quantity: Any) -> None:
    error = reject(make_event(metric=metric, quantity=quantity), catalog, "quantity")
    assert "negative" in error.message


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("-1.5", Decimal("-1.5")),
        (-20, Decimal(-20)),
        ("-999999999999999999.999999999999", Decimal("-999999999999999999.999999999999")),
    ],
)
def test_negative_quantity_accepted_for_credits_balance(
    catalog: MeterCatalog, quantity: Any, expected: Decimal
) -> None:
    assert catalog.meters["credits.balance"].allow_negative
    assert accept(make_event(metric="credits.balance", quantity=quantity), catalog).quantity == expected


def test_negative_zero_is_not_negative(catalog: MeterCatalog) -> None:
    assert accept(make_event(quantity="-0"), catalog).quantity == 0


# unit -----------------------------------------------------------------------------------------------------------


def test_unit_is_optional(catalog: MeterCatalog) -> None:
    assert accept(make_event(unit=MISSING), catalog).unit is None


@pytest.mark.parametrize(("metric", "unit"), [("api.requests", "count"), ("compute.seconds", "second")])
def test_unit_equal_to_the_meters_is_accepted(catalog: MeterCatalog, metric: str, unit: str) -> None:
    assert accept(make_event(metric=metric, unit=unit), catalog).unit == unit


@pytest.mark.parametrize(
    "unit",
    [
        pytest.param("second", id="another-meters-unit"),
        pytest.param("Count", id="wrong-case"),
        pytest.param("counts", id="plural"),
        pytest.param("", id="empty"),
        pytest.param(1, id="number"),
    ],
)
def test_unit_other_than_the_meters_is_rejected(catalog: MeterCatalog, unit: Any) -> None:
    reject(make_event(metric="api.requests", unit=unit), catalog, "unit")


# timestamp ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-24T09:00:00Z", datetime(2026, 11, 24, 9, 0, tzinfo=UTC)),
        ("2026-11-24T14:30:00+05:30", datetime(2026, 11, 24, 9, 0, tzinfo=UTC)),
        ("2026-11-24T01:00:00-08:00", datetime(2026, 11, 24, 9, 0, tzinfo=UTC)),
        ("2026-11-24T09:00:00+00:00", datetime(2026, 11, 24, 9, 0, tzinfo=UTC)),
        # RFC 3339 allows lower-case t and z, and fractions of a second.
        ("2026-11-24t09:00:00z", datetime(2026, 11, 24, 9, 0, tzinfo=UTC)),
        ("2026-11-24T09:00:00.250Z", datetime(2026, 11, 24, 9, 0, 0, 250_000, tzinfo=UTC)),
        # An offset that moves the instant across midnight.
        ("2026-11-24T00:30:00+05:30", datetime(2026, 11, 23, 19, 0, tzinfo=UTC)),
    ],
)
def test_timestamp_with_offset_is_normalised_to_utc(catalog: MeterCatalog, text: str, expected: datetime) -> None:
    timestamp = accept(make_event(timestamp=text), catalog).timestamp
    assert timestamp == expected
    assert timestamp.utcoffset() == timedelta(0)
    assert timestamp.tzinfo == UTC


@pytest.mark.parametrize(
    "timestamp",
    [
        pytest.param(MISSING, id="missing"),
        pytest.param(None, id="null"),
        pytest.param("2026-11-24T09:00:00", id="naive"),
        pytest.param("2026-11-24", id="date-only"),
        pytest.param(1795510800, id="unix-number"),
        pytest.param("1795510800", id="unix-string"),
        pytest.param("2026-11-24T09:00Z", id="no-seconds"),
        pytest.param("2026-11-24T09:00:00+0530", id="offset-without-colon"),
        pytest.param("2026-11-24T09:00:00 UTC", id="zone-name"),
        pytest.param("24/11/2026 09:00:00Z", id="other-format"),
        pytest.param("2026-13-01T00:00:00Z", id="month-13"),
        pytest.param("2026-02-30T00:00:00Z", id="february-30"),
        pytest.param("2026-11-24T25:00:00Z", id="hour-25"),
        pytest.param("", id="empty"),
    ],
)
def test_timestamp_rejects(catalog: MeterCatalog, timestamp: Any) -> None:
    reject(make_event(timestamp=timestamp), catalog, "timestamp")


@pytest.mark.parametrize(
    "timestamp",
    [
        pytest.param("2026-11-24T12:05:00Z", id="future-bound"),
        pytest.param("2026-11-24T17:35:00+05:30", id="future-bound-with-offset"),
        pytest.param("2026-11-24T12:04:59.999999Z", id="just-inside-future"),
        pytest.param("2026-10-20T12:00:00Z", id="past-bound"),
        pytest.param("2026-10-20T12:00:00.000001Z", id="just-inside-past"),
        pytest.param("2026-11-24T12:00:00Z", id="now"),
    ],
)
def test_timestamp_inside_the_window_is_accepted(catalog: MeterCatalog, timestamp: str) -> None:
    # The bounds below are NOW + 5 minutes and NOW - 35 days.
    assert datetime(2026, 11, 24, 12, 5, tzinfo=UTC) == NOW + MAX_FUTURE
    assert datetime(2026, 10, 20, 12, 0, tzinfo=UTC) == NOW - MAX_AGE
    accept(make_event(timestamp=timestamp), catalog)


@pytest.mark.parametrize(
    ("timestamp", "word"),
    [
        pytest.param("2026-11-24T12:05:01Z", "future", id="just-outside-future"),
        pytest.param("2026-11-24T12:05:00.000001Z", "future", id="a-microsecond-too-late"),
        pytest.param("2026-11-24T17:35:01+05:30", "future", id="just-outside-future-with-offset"),
        pytest.param("2027-01-01T00:00:00Z", "future", id="far-future"),
        pytest.param("2026-10-20T11:59:59Z", "past", id="just-outside-past"),
        pytest.param("2026-10-20T11:59:59.999999Z", "past", id="a-microsecond-too-old"),
        pytest.param("2020-01-01T00:00:00Z", "past", id="far-past"),
    ],
)
def test_timestamp_outside_the_window_is_rejected(catalog: MeterCatalog, timestamp: str, word: str) -> None:
    error = reject(make_event(timestamp=timestamp), catalog, "timestamp")
    assert word in error.message


def test_no_clock_means_no_window(catalog: MeterCatalog) -> None:
    # The aggregator validates without a clock: an event that waited in the hub is late, not invalid.
    events, errors = validate_items([make_event(timestamp="2020-01-01T00:00:00Z")], catalog, now=None)
    assert errors == []
    assert events[0].timestamp == datetime(2020, 1, 1, tzinfo=UTC)


# source ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["s", "x" * 128, "billing-service/v2 (eu-west)"])
def test_source_accepts_1_to_128(catalog: MeterCatalog, source: str) -> None:
    assert accept(make_event(source=source), catalog).source == source


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(MISSING, id="missing"),
        pytest.param(None, id="null"),
        pytest.param("", id="empty"),
        pytest.param("x" * 129, id="129-chars"),
        pytest.param(7, id="number"),
    ],
)
def test_source_rejects(catalog: MeterCatalog, source: Any) -> None:
    reject(make_event(source=source), catalog, "source")


# user_id, resource_id -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["user_id", "resource_id"])
def test_optional_ids_accept_up_to_256(catalog: MeterCatalog, field: str) -> None:
    assert getattr(accept(make_event(), catalog), field) is None
    event = accept(make_event(**{field: "x" * 256}), catalog)
    assert getattr(event, field) == "x" * 256


@pytest.mark.parametrize("field", ["user_id", "resource_id"])
@pytest.mark.parametrize("value", [pytest.param("x" * 257, id="257-chars"), pytest.param(12, id="number")])
def test_optional_ids_reject(catalog: MeterCatalog, field: str, value: Any) -> None:
    reject(make_event(**{field: value}), catalog, field)


# dimensions -----------------------------------------------------------------------------------------------------


def test_dimensions_default_to_empty(catalog: MeterCatalog) -> None:
    assert accept(make_event(), catalog).dimensions == {}


@pytest.mark.parametrize(
    "dimensions",
    [
        pytest.param({"region": "eu-west", "method": "GET"}, id="two"),
        pytest.param({f"k{i}": "v" for i in range(16)}, id="16-keys"),
        pytest.param({"a": "v"}, id="one-letter-key"),
        pytest.param({"a" + "b" * 63: "v"}, id="64-char-key"),
        pytest.param({"region_2": "v", "x9": "v"}, id="digits-and-underscore"),
        pytest.param({"region": "v" * 256}, id="256-char-value"),
        pytest.param({"region": ""}, id="empty-value"),
    ],
)
def test_dimensions_accepts(catalog: MeterCatalog, dimensions: dict[str, str]) -> None:
    assert accept(make_event(dimensions=dimensions), catalog).dimensions == dimensions


@pytest.mark.parametrize(
    ("dimensions", "field"),
    [
        pytest.param({f"k{i}": "v" for i in range(17)}, "dimensions", id="17-keys"),
        pytest.param({"Region": "v"}, "dimensions.Region", id="uppercase-key"),
        pytest.param({"a" * 65: "v"}, "dimensions." + "a" * 65, id="65-char-key"),
        pytest.param({"1region": "v"}, "dimensions.1region", id="leading-digit"),
        pytest.param({"_region": "v"}, "dimensions._region", id="leading-underscore"),
        pytest.param({"re-gion": "v"}, "dimensions.re-gion", id="hyphen"),
        pytest.param({"region": "v" * 257}, "dimensions.region", id="257-char-value"),
        pytest.param({"region": 5}, "dimensions.region", id="number-value"),
        pytest.param({"region": None}, "dimensions.region", id="null-value"),
        pytest.param({"region": {"a": "b"}}, "dimensions.region", id="object-value"),
        pytest.param(["region", "eu"], "dimensions", id="array"),
        pytest.param("region=eu", "dimensions", id="string"),
        pytest.param(None, "dimensions", id="null"),
    ],
)
def test_dimensions_rejects(catalog: MeterCatalog, dimensions: Any, field: str) -> None:
    reject(make_event(dimensions=dimensions), catalog, field)


# idempotency_key ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["k", "x" * 128, "order-42/line 3"])
def test_idempotency_key_accepts_1_to_128_printable(catalog: MeterCatalog, key: str) -> None:
    assert accept(make_event(idempotency_key=key), catalog).idempotency_key == key


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="empty"),
        pytest.param("x" * 129, id="129-chars"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("a\rb", id="carriage-return"),
        pytest.param("a\x1bb", id="escape"),
        pytest.param(99, id="number"),
    ],
)
def test_idempotency_key_rejects(catalog: MeterCatalog, key: Any) -> None:
    reject(make_event(idempotency_key=key), catalog, "idempotency_key")


# unknown fields -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["colour", "Quantity", "tenant", "data", "dimension"])
def test_unknown_field_is_rejected_by_name(catalog: MeterCatalog, name: str) -> None:
    error = reject(make_event(**{name: "x"}), catalog, name)
    assert "not a field" in error.message


def test_each_unknown_field_is_reported(catalog: MeterCatalog) -> None:
    events, errors = validate_items([make_event(colour="red", size="L")], catalog)
    assert events == []
    assert sorted(error.field for error in errors) == ["colour", "size"]


# unique_count meters --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("user_id", [pytest.param(MISSING, id="missing"), pytest.param(None, id="null")])
def test_unique_count_meter_without_its_field_is_rejected(catalog: MeterCatalog, user_id: Any) -> None:
    assert catalog.meters["users.active"].field == "user_id"
    error = reject(make_event(metric="users.active", user_id=user_id), catalog, "user_id")
    assert "users.active" in error.message


def test_unique_count_meter_with_its_field_is_accepted(catalog: MeterCatalog) -> None:
    assert accept(make_event(metric="users.active", user_id="u-17"), catalog).user_id == "u-17"


# several events -------------------------------------------------------------------------------------------------


def test_each_bad_event_is_reported_with_its_own_index(catalog: MeterCatalog) -> None:
    items = [
        make_event(event_id="e0", quantity="abc"),
        make_event(event_id="e1"),
        make_event(event_id="e2", metric="no.such.meter"),
        make_event(event_id="e3", tenant_id="bad tenant", timestamp="2026-11-24T09:00:00"),
        make_event(event_id="e4", metric="users.active"),
    ]
    events, errors = validate_items(items, catalog)
    assert sorted((error.index, error.field) for error in errors) == [
        (0, "quantity"),
        (2, "metric"),
        (3, "tenant_id"),
        (3, "timestamp"),
        (4, "user_id"),
    ]
    # Only the valid event comes back; whether to forward it is the caller's call (ingest forwards nothing).
    assert [event.event_id for event in events] == ["e1"]


def test_catalog_errors_of_one_event_are_all_reported(catalog: MeterCatalog) -> None:
    item = make_event(unit="byte", quantity="-3", timestamp="2027-01-01T00:00:00Z")
    events, errors = validate_items([item], catalog)
    assert events == []
    assert sorted(error.field for error in errors) == ["quantity", "timestamp", "unit"]


@pytest.mark.parametrize(
    "item",
    [
        pytest.param(42, id="number"),
        pytest.param("event", id="string"),
        pytest.param(None, id="null"),
        pytest.param([{"tenant_id": "acme"}], id="array"),
        pytest.param(True, id="boolean"),
    ],
)
def test_non_object_item_is_reported_with_its_index(catalog: MeterCatalog, item: Any) -> None:
    events, errors = validate_items([make_event(event_id="e0"), item, make_event(event_id="e2")], catalog)
    assert [event.event_id for event in events] == ["e0", "e2"]
    assert len(errors) == 1
    assert errors[0].index == 1
    assert errors[0].field == "(event)"
    assert "object" in errors[0].message


def test_field_error_as_dict_matches_the_problem_json_shape() -> None:
    error = FieldError(3, "quantity", "must not be negative")
    assert error.as_dict() == {"index": 3, "field": "quantity", "message": "must not be negative"}


# dedupe_key -----------------------------------------------------------------------------------------------------


def test_dedupe_key_prefers_the_idempotency_key(catalog: MeterCatalog) -> None:
    event = accept(make_event(event_id="evt-9", idempotency_key="order-42"), catalog)
    assert event.dedupe_key == "k:order-42"


def test_dedupe_key_falls_back_to_the_event_id(catalog: MeterCatalog) -> None:
    assert accept(make_event(event_id="evt-9"), catalog).dedupe_key == "e:evt-9"


def test_dedupe_keys_of_the_two_kinds_cannot_collide(catalog: MeterCatalog) -> None:
    # An event id equal to another event's idempotency key must not dedupe against it.
    by_id = accept(make_event(event_id="same"), catalog)
    by_key = accept(make_event(event_id="other", idempotency_key="same"), catalog)
    assert by_id.dedupe_key != by_key.dedupe_key


def test_dedupe_key_needs_an_id_or_a_key(catalog: MeterCatalog) -> None:
    # Ingest assigns an event_id before applying; an event with neither must not dedupe on "e:None".
    event = accept(make_event(event_id=MISSING), catalog)
    with pytest.raises(ValueError, match="event_id"):
        _ = event.dedupe_key
