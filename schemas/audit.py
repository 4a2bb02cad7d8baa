"""The audit trail (API.md, "Audit trail"): an entry per change to a workspace's billing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_dump, validate, validates_schema

from schemas.common import URL_PATTERN, Timestamp

ACTOR_TYPES = ("user", "service", "stripe")

EXAMPLE_ID = "aud_7Hq2mX9aLk3PzR5tVw1B"
EXAMPLE_EVENT: dict[str, Any] = {
    "id": EXAMPLE_ID,
    "occurred_at": "2025-10-20T09:00:00.000000Z",
    "actor": {"type": "user", "id": "auth0|a1b2c3d4e5f6g7h8"},
    "action": "subscription.quantity_changed",
    "target": {"type": "subscription", "id": "sub_a1b2c3d4e5f6g7h8"},
    "changes": {"product_quantities": {"before": {"users": 10}, "after": {"users": 12}}},
    "request_id": "req_4f3c2b1a0f9e8d7c6b5a4f3e",
    "idempotency_key": "3f1e9a52-1c1d-4c43-9d8e-2a7b5c0d6e4f",
    "stripe_event_id": None,
}
EXAMPLE_STRIPE_EVENT: dict[str, Any] = {
    "id": "aud_Q8w3Er5Ty7Ui9Op1As2D",
    "occurred_at": "2025-10-15T00:05:12.000000Z",
    "actor": {"type": "stripe", "id": None},
    "action": "subscription.status_changed",
    "target": {"type": "subscription", "id": "sub_a1b2c3d4e5f6g7h8"},
    "changes": {"status": {"before": "active", "after": "past_due"}},
    "request_id": None,
    "idempotency_key": None,
    "stripe_event_id": "evt_1Q0PsIJvEtkwdCNY",
}


class AuditActorSchema(Schema):
    type = fields.String(validate=validate.OneOf(ACTOR_TYPES), metadata={"example": "user"})
    id = fields.String(
        allow_none=True,
        metadata={
            "example": "auth0|a1b2c3d4e5f6g7h8",
            "description": "The user id (a token's `sub`) or the service token's subject; null for Stripe.",
        },
    )


class AuditTargetSchema(Schema):
    type = fields.String(metadata={"example": "subscription"})
    id = fields.String(metadata={"example": "sub_a1b2c3d4e5f6g7h8"})


class AuditEventSchema(Schema):
    class Meta:
        description = (
            "One change to the workspace's billing, made through this API or learnt from Stripe "
            "(actor `stripe`, with the Stripe event that told the service)."
        )

    id = fields.String(metadata={"example": EXAMPLE_EVENT["id"]})
    occurred_at = Timestamp()
    actor = fields.Nested(AuditActorSchema)
    action = fields.String(
        metadata={
            "example": "subscription.quantity_changed",
            "description": "A stable dotted name: `<target type>.<what happened>`.",
        }
    )
    target = fields.Nested(AuditTargetSchema)
    changes = fields.Dict(
        keys=fields.String(),
        values=fields.Dict(),
        metadata={
            "example": EXAMPLE_EVENT["changes"],
            "description": "Each field that changed: `{before, after}`. Of a card, only its brand and last4.",
        },
    )
    request_id = fields.String(allow_none=True, metadata={"example": EXAMPLE_EVENT["request_id"]})
    idempotency_key = fields.String(allow_none=True, metadata={"example": EXAMPLE_EVENT["idempotency_key"]})
    stripe_event_id = fields.String(allow_none=True, metadata={"example": "evt_1Q0PsIJvEtkwdCNY"})

    @pre_dump
    def _from_row(self, event: Any, **_: Any) -> dict[str, Any]:
        """Dumps a billing.models.AuditEvent."""
        return {
            "id": event.id,
            "occurred_at": event.occurred_at,
            "actor": {"type": event.actor_type, "id": event.actor_id},
            "action": event.action,
            "target": {"type": event.target_type, "id": event.target_id},
            "changes": event.changes,
            "request_id": event.request_id,
            "idempotency_key": event.idempotency_key,
            "stripe_event_id": event.stripe_event_id,
        }


class AuditEventListSchema(Schema):
    class Meta:
        description = "Newest first."

    data = fields.List(fields.Nested(AuditEventSchema), metadata={"example": [EXAMPLE_EVENT, EXAMPLE_STRIPE_EVENT]})
    has_more = fields.Boolean()
    next_cursor = fields.String(allow_none=True, metadata={"example": EXAMPLE_STRIPE_EVENT["id"]})
    previous_cursor = fields.String(allow_none=True)


class UTCDateTime(fields.AwareDateTime):
    """An RFC 3339 time; one without an offset is UTC. Loaded in UTC (a time whose UTC is past year 9999 is 422)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(format="iso", default_timezone=UTC, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        loaded = super()._deserialize(value, attr, data, **kwargs)
        try:
            return loaded.astimezone(UTC)
        except OverflowError:
            raise ValidationError("Not a valid datetime.") from None


def _filter(example: str, description: str) -> fields.String:
    return fields.String(
        validate=validate.Length(min=1, max=255),
        metadata={"pattern": URL_PATTERN, "example": example, "description": description},
    )


class AuditEventListQuerySchema(Schema):
    class Meta:
        description = "Send `after` or `before`, not both; a cursor is one of this workspace's audit event ids."

    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=200))
    after = _filter(EXAMPLE_ID, "An audit event id: the page after it (older entries). Not with `before`.")
    before = _filter(EXAMPLE_ID, "An audit event id: the page before it (newer entries). Not with `after`.")
    target_id = _filter("sub_a1b2c3d4e5f6g7h8", "Only entries about this object (its id).")
    actor = _filter("auth0|a1b2c3d4e5f6g7h8", "Only entries by this user or service (its id), or `stripe`.")
    action = _filter("subscription.", "Only actions that start with this (`subscription.` or a whole name).")
    since = UTCDateTime(
        metadata={"example": "2025-10-01T00:00:00Z", "description": "Only entries at or after this time."}
    )
    until = UTCDateTime(metadata={"example": "2025-11-01T00:00:00Z", "description": "Only entries before this time."})

    @validates_schema
    def _one_cursor(self, data: dict[str, Any], **_: Any) -> None:
        if "after" in data and "before" in data:
            raise ValidationError("Send either after or before, not both.", "after")
