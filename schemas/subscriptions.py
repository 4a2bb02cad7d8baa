"""Subscriptions: the seed's Subscription shape, reshaped from a Stripe Subscription."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_dump, validate

from billing.catalog import INTERVALS, PRODUCTS
from billing.config import CURRENCIES
from billing.subscriptions.active import STATUSES, subscription_status
from billing.subscriptions.pending import REASONS
from schemas.common import NonEmptySchema, Text, format_timestamp, from_stripe

# Metadata keys the service keeps for itself on Stripe objects; never shown.
RESERVED_METADATA_PREFIX = "billing_api_"


class ProductQuantitySchema(Schema):
    price_id = fields.String(metadata={"example": "price_456def"})
    quantity = fields.Integer(metadata={"example": 50})
    interval = fields.String(validate=validate.OneOf(INTERVALS), metadata={"example": "month"})


class PendingPaymentSchema(Schema):
    invoice_id = fields.String(metadata={"example": "in_1Q0PsIJvEtkwdCNY"})
    amount_due = fields.Integer()
    currency = fields.String()
    reason = fields.String(
        validate=validate.OneOf(REASONS),
        metadata={
            "description": "`authentication_required`: the customer must complete 3-D Secure (client_secret); "
            "`payment_failed`: the payment was refused."
        },
    )
    client_secret = fields.String(allow_none=True, metadata={"description": "Confirm with Stripe.js (3-D Secure)."})
    hosted_invoice_url = fields.String(allow_none=True)


def _time(example: str) -> dict[str, str]:
    return {"format": "date-time", "example": example}


class SubscriptionSchema(Schema):
    # Examples: the published list's subscription (seeds/004).
    id = fields.String(metadata={"example": "sub_a1b2c3d4e5f6g7h8"})
    billing_account_id = fields.String(metadata={"example": "cus_a1b2c3d4e5f6g7h8"})
    status = fields.String(validate=validate.OneOf(STATUSES), metadata={"example": "active"})
    currency = fields.String(validate=validate.OneOf(CURRENCIES), metadata={"example": "usd"})
    product_quantities = fields.Dict(
        keys=fields.String(validate=validate.OneOf(PRODUCTS)),
        values=fields.Nested(ProductQuantitySchema),
        metadata={
            "example": {
                "locations": {"price_id": "price_123abc", "quantity": 10, "interval": "month"},
                "users": {"price_id": "price_456def", "quantity": 50, "interval": "month"},
            }
        },
    )
    metadata = fields.Dict(keys=fields.String(), values=fields.String(), metadata={"example": {"order_id": "6735"}})
    current_period_start = fields.String(allow_none=True, metadata=_time("2025-10-15T00:00:00.000000Z"))
    current_period_end = fields.String(allow_none=True, metadata=_time("2025-11-15T00:00:00.000000Z"))
    created_at = fields.String(metadata=_time("2025-10-15T12:30:00.000000Z"))
    updated_at = fields.String(metadata=_time("2025-10-20T09:00:00.000000Z"))
    trial_end = fields.String(allow_none=True, metadata={"format": "date-time"})
    cancel_at_period_end = fields.Boolean()
    cancel_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    canceled_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    pending_payment = fields.Nested(
        PendingPaymentSchema,
        allow_none=True,
        metadata={"description": "Money owed that needs the customer; null when nothing is owed."},
    )

    @pre_dump
    @from_stripe("subscription")
    def _from_subscription(self, view: dict[str, Any], **_: Any) -> dict[str, Any]:
        """`view`: billing.subscriptions.service.subscription_view (everything shown, read there)."""
        data = view["subscription"]
        items = (data.get("items") or {}).get("data") or []
        quantities: dict[str, dict[str, Any]] = {}
        for item, product in zip(items, view["products"], strict=True):
            price = item.get("price") or {}
            if product is None:
                continue
            quantities[product] = {
                "price_id": price.get("id"),
                "quantity": item.get("quantity") or 0,
                "interval": (price.get("recurring") or {}).get("interval"),
            }
        # Current API versions keep billing periods on the items.
        starts = [i["current_period_start"] for i in items if i.get("current_period_start")]
        ends = [i["current_period_end"] for i in items if i.get("current_period_end")]
        # Stripe keeps no update time: the latest of its own times and of when the
        # service's copy saw the subscription change.
        changes = [data["created"], data.get("canceled_at") or 0, data.get("billing_api_changed_at") or 0] + [
            i.get("created") or 0 for i in items
        ]

        def ts(value: Any) -> str | None:
            return format_timestamp(value) if value else None

        return {
            "id": data["id"],
            "billing_account_id": data["customer"] if isinstance(data["customer"], str) else data["customer"]["id"],
            "status": subscription_status(data),
            "currency": data.get("currency"),
            "product_quantities": quantities,
            "metadata": {
                k: v for k, v in (data.get("metadata") or {}).items() if not k.startswith(RESERVED_METADATA_PREFIX)
            },
            "current_period_start": ts(min(starts) if starts else None),
            "current_period_end": ts(max(ends) if ends else None),
            "created_at": ts(data["created"]),
            "updated_at": ts(max(changes)),
            "trial_end": ts(data.get("trial_end")),
            "cancel_at_period_end": bool(data.get("cancel_at_period_end")),
            "cancel_at": ts(data.get("cancel_at")),
            "canceled_at": ts(data.get("canceled_at")),
            "pending_payment": view["pending_payment"],
        }


class SubscriptionListSchema(Schema):
    data = fields.List(fields.Nested(SubscriptionSchema))
    has_more = fields.Boolean()


# -- input -------------------------------------------------------------------

MAX_METADATA_PAIRS = 10


def _reserved_keys(value: dict[str, Any]) -> None:
    if any(key.startswith(RESERVED_METADATA_PREFIX) for key in value):
        raise ValidationError(f"Metadata keys may not start with {RESERVED_METADATA_PREFIX!r}.")


def _metadata(*, removable: bool = False) -> fields.Dict:
    """Stripe's metadata rules: at most 10 pairs, keys of 1-40 characters, values
    of at most 500 (OpenAPI 3.0 cannot state the key rules: no propertyNames)."""
    note = "; merged into the existing metadata, a null value removes a key" if removable else ""
    return fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=40)),
        values=Text(allow_none=removable, validate=validate.Length(max=500)),
        validate=[
            validate.Length(max=MAX_METADATA_PAIRS, error=f"At most {MAX_METADATA_PAIRS} metadata pairs."),
            _reserved_keys,
        ],
        metadata={
            "description": f"String pairs: keys of 1 to 40 characters, not starting with "
            f"{RESERVED_METADATA_PREFIX!r}; values of at most 500{note}.",
            "example": {"order_id": "6735"},
        },
    )


def _quantities(**kwargs: Any) -> fields.Dict:
    """A map product -> quantity (the document lists the products as its properties)."""
    return fields.Dict(
        keys=fields.String(validate=validate.OneOf(PRODUCTS)),
        values=fields.Integer(strict=True, validate=validate.Range(min=1, max=100_000)),
        validate=validate.Length(min=1),
        metadata={"example": {"users": 3, "locations": 1}},
        **kwargs,
    )


class SubscriptionCreateSchema(Schema):
    product_quantities = _quantities(required=True)
    metadata = _metadata()
    interval = fields.String(validate=validate.OneOf(INTERVALS), load_default="month")


class SubscriptionUpdateSchema(NonEmptySchema):
    class Meta:
        description = (
            "Exactly one operation: `action`, `product_quantities` (replaces the whole set), "
            "`add_products` or `remove_products`; `metadata` may come alone or with "
            "`product_quantities`. More than one operation is 422 `multiple_operations`."
        )

    EMPTY_MESSAGE = "Send one operation: action, product_quantities, add_products or remove_products."

    action = fields.String(validate=validate.OneOf(("pause", "resume", "sync")))
    product_quantities = _quantities()
    add_products = _quantities()
    remove_products = fields.List(fields.String(validate=validate.OneOf(PRODUCTS)), validate=validate.Length(min=1))
    metadata = _metadata(removable=True)


class TrialInfoSchema(Schema):
    trial_days = fields.Integer()
    message = fields.String()


class TrialEligibilitySchema(Schema):
    trial_eligible = fields.Boolean()
    has_payment_method = fields.Boolean()
    can_create_subscription = fields.Boolean()
    trial_info = fields.Nested(TrialInfoSchema, allow_none=True)
    requirements = fields.Dict(keys=fields.String(), values=fields.String())
