"""CloudEvents in binary content mode (the CloudEvents HTTP binding, section 3.1): the attributes travel as `ce-`
headers, percent-encoded, and the body is the event's data. A request is in binary mode when it has a
`ce-specversion` header, whatever its content type (API.md); it carries one event.

The headers and the body are turned into the structured-mode event they stand for, so one path validates both
modes (core/events.py `from_cloud_event`); only the names in error messages are told apart, as the client sent
them: `ce-id` for an attribute, `quantity` for a field of the body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from metering.core.events import FieldError

PREFIX = "ce-"
SPECVERSION = PREFIX + "specversion"
# The context attributes a usage event takes (core/events.py CLOUD_EVENT_FIELDS), and the version.
ATTRIBUTES = ("specversion", "id", "source", "type", "subject", "time")


class HeaderError(ValueError):
    """A `ce-` header that is not valid percent-encoded UTF-8."""

    def __init__(self, header: str) -> None:
        super().__init__(f"{header} must be percent-encoded UTF-8")
        self.error = FieldError(0, header, "must be percent-encoded UTF-8 (the CloudEvents HTTP binding)")


def is_binary(headers: Mapping[str, str]) -> bool:
    return _get(headers, SPECVERSION) is not None


def structured(headers: Mapping[str, str], data: Any) -> dict[str, Any]:
    """The structured-mode CloudEvent that `headers` and the decoded body stand for. Extension attributes and
    `ce-dataschema` are ignored, as structured mode ignores them."""
    event: dict[str, Any] = {"data": data}
    for attribute in ATTRIBUTES:
        raw = _get(headers, PREFIX + attribute)
        if raw is not None:
            try:
                event[attribute] = unquote(raw, encoding="utf-8", errors="strict")
            except UnicodeDecodeError:
                raise HeaderError(PREFIX + attribute) from None
    return event


def binary_errors(errors: list[FieldError]) -> list[FieldError]:
    """Errors named for a binary-mode request: attributes by their header, data fields by their body field."""
    return [FieldError(error.index, binary_field(error.field), error.message) for error in errors]


def binary_field(field: str) -> str:
    """Where a structured-mode name (`id`, `time`, `data.quantity`) sits in a binary-mode request."""
    head, _, rest = field.partition(".")
    if head in ATTRIBUTES:
        return PREFIX + field
    if head == "data":
        return rest or "(body)"
    return field


def _get(headers: Mapping[str, str], name: str) -> str | None:
    """A header by its name in any case: the Functions host and the dev host hand them over lower-cased, other
    callers may not."""
    value = headers.get(name)
    if value is not None:
        return value
    for key, found in headers.items():
        if key.lower() == name:
            return found
    return None
