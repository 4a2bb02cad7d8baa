"""Fields and shapes shared by every resource."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from marshmallow import Schema, ValidationError, fields, validates_schema

from billing.errors import StripeAnswerInvalid
from billing.input_guard import CONTROL_IN_TEXT, CONTROL_IN_URL

# What the input guard lets through, as OpenAPI patterns (ECMA 262, as in JSON Schema).
TEXT_PATTERN = f"^[^{CONTROL_IN_TEXT}]*$"
NOT_BLANK_PATTERN = f"^[^{CONTROL_IN_TEXT}]*[^\\s{CONTROL_IN_TEXT}][^{CONTROL_IN_TEXT}]*$"
URL_PATTERN = f"^[^{CONTROL_IN_URL}]*$"


Reshape = TypeVar("Reshape", bound=Callable[..., dict[str, Any]])


def from_stripe(object_type: str) -> Callable[[Reshape], Reshape]:
    """For a `pre_dump` that reshapes a Stripe object: a field Stripe left out, or
    sent in another shape, is Stripe's fault (502 `stripe_error`, billing.errors),
    not a 500 of ours."""

    def decorate(reshape: Reshape) -> Reshape:
        @functools.wraps(reshape)
        def guarded(self: Schema, data: Any, **kwargs: Any) -> dict[str, Any]:
            try:
                return reshape(self, data, **kwargs)
            except (KeyError, TypeError, AttributeError, ValueError) as error:
                raise StripeAnswerInvalid(object_type, _object_id(data), error) from None

        return guarded  # type: ignore[return-value]

    return decorate


def _object_id(data: Any) -> str | None:
    """The id of the object being reshaped (an invoice or a subscription comes in a view that holds it)."""
    if not isinstance(data, dict):
        data = {"id": getattr(data, "id", None)}
    inner = data.get("invoice") or data.get("subscription")
    found = data.get("id") or (inner.get("id") if isinstance(inner, dict) else None)
    return str(found) if found else None


def format_timestamp(value: datetime | int | float) -> str:
    """RFC 3339 UTC with microseconds and `Z`, as the contract writes times."""
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, tz=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Timestamp(fields.Field[datetime]):
    """Dumps a datetime or a Stripe unix time as `2025-10-29T00:40:06.000000Z`."""

    def __init__(self, **kwargs: Any) -> None:
        metadata = {"type": "string", "format": "date-time", "example": "2025-10-29T00:40:06.000000Z"}
        metadata.update(kwargs.pop("metadata", {}))
        super().__init__(metadata=metadata, **kwargs)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else format_timestamp(value)


class Permanent(fields.Field[Any]):
    """A field that may not be sent: it exists to say why, not 'Unknown field.'."""

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(load_only=True, metadata={"description": message, "deprecated": True}, **kwargs)
        self.message = message

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        raise ValidationError(self.message)


class Text(fields.String):
    """Free text sent by a client: the document states the input guard's rule
    (no control character but tab and newline, no lone surrogate)."""

    PATTERN = TEXT_PATTERN

    def __init__(self, **kwargs: Any) -> None:
        metadata = {"pattern": self.PATTERN, **kwargs.pop("metadata", {})}
        super().__init__(metadata=metadata, **kwargs)


class StrictString(Text):
    """Text that refuses blank input ('' or whitespace only)."""

    PATTERN = NOT_BLANK_PATTERN

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        result = super()._deserialize(value, attr, data, **kwargs)
        if not result.strip():
            raise ValidationError("May not be blank.")
        return result


class NonEmptySchema(Schema):
    """A body that must set at least one field (documented as minProperties: 1)."""

    EMPTY_MESSAGE = "Send at least one field."

    @validates_schema
    def _not_empty(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ValidationError(self.EMPTY_MESSAGE)


class ErrorSchema(Schema):
    type = fields.String(required=True)
    code = fields.String(required=True)
    message = fields.String(required=True)
    errors = fields.Dict(metadata={"description": "Per-field messages (validation failures only)."})
    request_id = fields.String(allow_none=True)
    doc_url = fields.String(
        required=True,
        metadata={
            "format": "uri",
            "example": "https://docs.altostrat.io/errors/validation_failed",
            "description": "The error's documentation: ERRORS_DOC_URL followed by its code.",
        },
    )


class MessageSchema(Schema):
    message = fields.String(required=True)
