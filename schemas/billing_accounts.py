"""Billing accounts: the seed's BillingAccount shape, reshaped from a Stripe Customer."""

from __future__ import annotations

from typing import Any

import pycountry
import stripe
from marshmallow import Schema, ValidationError, fields, post_load, pre_dump, validate

from billing.config import CURRENCIES
from schemas.common import Permanent, StrictString, Text, Timestamp

ADDRESS_LINES = ("line1", "line2", "city", "state", "postal_code")
COUNTRY_CODES = sorted(country.alpha_2 for country in pycountry.countries)
_COUNTRIES = frozenset(COUNTRY_CODES)


def _validate_country(value: str) -> None:
    if value.upper() not in _COUNTRIES:
        raise ValidationError("Must be an ISO 3166-1 alpha-2 country code.")


class AddressSchema(Schema):
    country = fields.String(metadata={"example": "US"})
    line1 = fields.String(allow_none=True)
    line2 = fields.String(allow_none=True)
    city = fields.String(allow_none=True)
    state = fields.String(allow_none=True)
    postal_code = fields.String(allow_none=True)


class AddressInputSchema(Schema):
    # The document lists the upper-case codes; the service also takes lower case.
    country = fields.String(required=True, validate=_validate_country,
                            metadata={"enum": COUNTRY_CODES, "example": "US",
                                      "description": "ISO 3166-1 alpha-2 country code."})
    line1 = Text(allow_none=True, validate=validate.Length(max=200))
    line2 = Text(allow_none=True, validate=validate.Length(max=200))
    city = Text(allow_none=True, validate=validate.Length(max=200))
    state = Text(allow_none=True, validate=validate.Length(max=200))
    postal_code = Text(allow_none=True, validate=validate.Length(max=20))

    @post_load
    def _normalise(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data["country"] = data["country"].upper()
        return data


class BillingAccountSchema(Schema):
    id = fields.String(metadata={"example": "cus_a1b2c3d4e5f6g7h8"})
    workspace_id = fields.String(metadata={"example": "ws_a1b2c3d4e5f6g7h8"})
    name = fields.String()
    email = fields.Email()
    phone = fields.String(allow_none=True)
    description = fields.String(allow_none=True)
    currency = fields.String(validate=validate.OneOf(CURRENCIES))
    address = fields.Nested(AddressSchema)
    created_at = Timestamp()
    updated_at = Timestamp()

    @pre_dump
    def _from_customer(self, customer: stripe.Customer | dict[str, Any], **_: Any) -> dict[str, Any]:
        data = customer.to_dict() if isinstance(customer, stripe.StripeObject) else customer
        metadata = data.get("metadata") or {}
        address = data.get("address") or {}
        updated = metadata.get("updated_at")
        return {
            "id": data["id"],
            "workspace_id": metadata.get("workspace_id"),
            "name": data.get("name"),
            "email": data.get("email"),
            "phone": data.get("phone"),
            "description": data.get("description"),
            "currency": metadata.get("currency") or data.get("currency"),
            "address": {
                "country": address.get("country"),
                **{line: address.get(line) for line in ADDRESS_LINES},
            },
            "created_at": data["created"],
            "updated_at": int(updated) if updated and updated.isdigit() else data["created"],
        }


class BillingAccountCreateSchema(Schema):
    name = StrictString(required=True, validate=validate.Length(max=100), metadata={"example": "ACME Corp Billing"})
    email = fields.Email(required=True, validate=validate.Length(max=150), metadata={"example": "billing@acme.com"})
    phone = Text(allow_none=True, validate=validate.Length(max=50))
    description = Text(allow_none=True, validate=validate.Length(max=200))
    currency = fields.String(validate=validate.OneOf(CURRENCIES))
    address = fields.Nested(AddressInputSchema, required=True)


class BillingAccountUpdateSchema(Schema):
    name = StrictString(validate=validate.Length(max=100))
    email = fields.Email(validate=validate.Length(max=150))
    phone = Text(allow_none=True, validate=validate.Length(max=50))
    description = Text(allow_none=True, validate=validate.Length(max=200))
    address = fields.Nested(AddressInputSchema)
    currency = Permanent("currency is permanent and cannot be changed.")


class BillingAccountListSchema(Schema):
    data = fields.List(fields.Nested(BillingAccountSchema))
    has_more = fields.Boolean()
