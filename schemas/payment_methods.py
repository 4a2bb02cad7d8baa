"""Payment methods: a Stripe PaymentMethod of any type, reshaped."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, pre_dump

from schemas.common import from_stripe


class PaymentMethodSchema(Schema):
    id = fields.String(metadata={"example": "pm_1Q0PsIJvEtkwdCNYMSaVuRz6"})
    type = fields.String(metadata={"example": "card"})
    is_default = fields.Boolean()
    brand = fields.String(allow_none=True)
    last4 = fields.String(allow_none=True)
    exp_month = fields.Integer(allow_none=True)
    exp_year = fields.Integer(allow_none=True)
    name = fields.String(allow_none=True)
    bank_name = fields.String(allow_none=True)

    @pre_dump
    @from_stripe("payment_method")
    def _from_payment_method(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        kind = data.get("type")
        found = data.get(kind) if isinstance(kind, str) else None
        details: dict[str, Any] = found if isinstance(found, dict) else {}
        card: dict[str, Any] = details if kind == "card" else {}
        return {
            "id": data["id"],
            "type": kind,
            "is_default": bool(data.get("is_default")),
            "brand": card.get("brand"),
            "last4": details.get("last4"),
            "exp_month": card.get("exp_month"),
            "exp_year": card.get("exp_year"),
            "name": (data.get("billing_details") or {}).get("name"),
            "bank_name": details.get("bank_name"),
        }


class PaymentMethodListSchema(Schema):
    data = fields.List(fields.Nested(PaymentMethodSchema))
    has_more = fields.Boolean()


class SetupIntentSchema(Schema):
    id = fields.String(
        required=True,
        metadata={
            "example": "seti_1Q0PsIJvEtkwdCNY",
            "description": "The SetupIntent's id (the sandbox's confirm route takes it).",
        },
    )
    client_secret = fields.String(required=True)
    publishable_key = fields.String(required=True)
