"""Tax IDs: a Stripe customer tax ID, reshaped (API.md, "Taxes")."""

from __future__ import annotations

import typing
from typing import Any

from marshmallow import Schema, fields, pre_dump, validate
from stripe.params import CustomerTaxIdCreateParams

from schemas.common import StrictString, format_timestamp, from_stripe

# Stripe's list of types, as the pinned library's create parameters declare it.
TAX_ID_TYPES = tuple(
    sorted(
        value
        for arg in typing.get_args(typing.get_type_hints(CustomerTaxIdCreateParams)["type"])
        for value in typing.get_args(arg)
        if isinstance(value, str)
    )
)
VERIFICATION_STATUSES = ("pending", "verified", "unverified")


def verification_status(verification: dict[str, Any] | None) -> str:
    """Stripe's status; `unavailable` (a type Stripe does not verify) reads `unverified`: nothing verified it."""
    status = (verification or {}).get("status")
    return status if status in ("pending", "verified") else "unverified"


class TaxIdVerificationSchema(Schema):
    status = fields.String(
        required=True,
        validate=validate.OneOf(VERIFICATION_STATUSES),
        metadata={
            "example": "pending",
            "description": "Stripe's verification (EU VAT numbers against VIES, UK VAT, Australian ABNs): "
            "`pending` until it answers, then `verified` or `unverified`; a type Stripe does not verify "
            "reads `unverified`. Moves by Stripe's webhook.",
        },
    )


class TaxIdSchema(Schema):
    id = fields.String(metadata={"example": "txi_1Q0PsIJvEtkwdCNY"})
    type = fields.String(metadata={"example": "eu_vat"})
    value = fields.String(metadata={"example": "DE123456789"})
    country = fields.String(allow_none=True, metadata={"example": "DE"})
    verification = fields.Nested(TaxIdVerificationSchema)
    created_at = fields.String(metadata={"format": "date-time"})

    @pre_dump
    @from_stripe("tax_id")
    def _from_tax_id(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {
            "id": data["id"],
            "type": data["type"],
            "value": data["value"],
            "country": data.get("country"),
            "verification": {"status": verification_status(data.get("verification"))},
            "created_at": format_timestamp(data["created"]),
        }


class TaxIdListSchema(Schema):
    data = fields.List(fields.Nested(TaxIdSchema))
    has_more = fields.Boolean()


class TaxIdCreateSchema(Schema):
    type = fields.String(
        required=True,
        validate=validate.OneOf(TAX_ID_TYPES),
        metadata={"example": "eu_vat", "description": "One of Stripe's tax ID types."},
    )
    value = StrictString(required=True, validate=validate.Length(max=100), metadata={"example": "DE123456789"})


class TaxStatusSchema(Schema):
    automatic_tax = fields.Boolean(metadata={"description": "Whether the service runs Stripe Tax (STRIPE_TAX)."})
    tax_exempt = fields.String(
        validate=validate.OneOf(("none", "exempt", "reverse")),
        metadata={"description": "The Stripe customer's tax status: taxable (`none`), exempt, reverse charge."},
    )
    taxability_reason = fields.String(
        allow_none=True,
        metadata={
            "example": "reverse_charge",
            "description": "Stripe Tax's reason on the account's newest taxed invoice (`standard_rated`, "
            "`reverse_charge`, `not_collecting`, `customer_exempt`, ...); null before one.",
        },
    )
    reverse_charge = fields.Boolean(
        metadata={
            "description": "Billed with reverse charge: by its tax status, or by Stripe Tax on its newest taxed "
            "invoice."
        }
    )
    invoice_id = fields.String(
        allow_none=True, metadata={"description": "The invoice `taxability_reason` is read from."}
    )
