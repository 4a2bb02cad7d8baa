"""Fields and shapes shared by every resource."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from marshmallow import Schema, ValidationError, fields


def format_timestamp(value: datetime | int | float) -> str:
    """RFC 3339 UTC with microseconds and `Z`, as the contract writes times."""
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, tz=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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


class StrictString(fields.String):
    """A string that refuses blank input ('' or whitespace only)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        result = super()._deserialize(value, attr, data, **kwargs)
        if not result.strip():
            raise ValidationError("May not be blank.")
        return result


class ErrorSchema(Schema):
    type = fields.String(required=True)
    code = fields.String(required=True)
    message = fields.String(required=True)
    errors = fields.Dict(metadata={"description": "Per-field messages (validation failures only)."})
    request_id = fields.String(allow_none=True)


class MessageSchema(Schema):
    message = fields.String(required=True)
