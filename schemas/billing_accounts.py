"""Billing accounts: the seed's BillingAccount shape, reshaped from a Stripe Customer."""

from __future__ import annotations

from typing import Any

import pycountry
import stripe
from marshmallow import Schema, ValidationError, fields, post_load, pre_dump, validate

from billing.config import CURRENCIES
from schemas.common import Permanent, StrictString, Text, Timestamp, from_stripe

ADDRESS_LINES = ("line1", "line2", "city", "state", "postal_code")
COUNTRY_CODES = sorted(country.alpha_2 for country in pycountry.countries)
_COUNTRIES = frozenset(COUNTRY_CODES)


def _validate_country(value: str) -> None:
    if value.upper() not in _COUNTRIES:
        raise ValidationError("Must be an ISO 3166-1 alpha-2 country code.")


# The published Address's descriptions and examples (seeds/000).
ADDRESS_DOCS = {
    "country": ("Two-letter country code (ISO 3166-1 alpha-2).", "US"),
    "line1": ("Address line 1 (e.g., street, PO Box, or company name).", "123 Main Street"),
    "line2": ("Address line 2 (e.g., apartment, suite, unit, or building).", "Suite 456"),
    "city": ("City, district, suburb, town, or village.", "San Francisco"),
    "state": ("State, county, province, or region.", "CA"),
    "postal_code": ("ZIP or postal code.", "94105"),
}


def _doc(name: str) -> dict[str, str]:
    description, example = ADDRESS_DOCS[name]
    return {"description": description, "example": example}


class AddressSchema(Schema):
    country = fields.String(metadata=_doc("country"))
    line1 = fields.String(allow_none=True, metadata=_doc("line1"))
    line2 = fields.String(allow_none=True, metadata=_doc("line2"))
    city = fields.String(allow_none=True, metadata=_doc("city"))
    state = fields.String(allow_none=True, metadata=_doc("state"))
    postal_code = fields.String(allow_none=True, metadata=_doc("postal_code"))


class AddressInputSchema(Schema):
    # The document lists the upper-case codes; the service also takes lower case.
    country = fields.String(
        required=True, validate=_validate_country, metadata={"enum": COUNTRY_CODES, **_doc("country")}
    )
    line1 = Text(allow_none=True, validate=validate.Length(max=200), metadata=_doc("line1"))
    line2 = Text(allow_none=True, validate=validate.Length(max=200), metadata=_doc("line2"))
    city = Text(allow_none=True, validate=validate.Length(max=200), metadata=_doc("city"))
    state = Text(allow_none=True, validate=validate.Length(max=200), metadata=_doc("state"))
    postal_code = Text(allow_none=True, validate=validate.Length(max=20), metadata=_doc("postal_code"))

    @post_load
    def _normalise(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data["country"] = data["country"].upper()
        return data


class BillingAccountSchema(Schema):
    # The published BillingAccount's descriptions and examples (seeds/000).
    id = fields.String(
        metadata={
            "description": "Unique identifier for the billing account (Stripe Customer ID), prefixed with `cus_`.",
            "example": "cus_a1b2c3d4e5f6g7h8",
        }
    )
    workspace_id = fields.String(
        metadata={
            "description": "The ID of the workspace this billing account belongs to.",
            "example": "ws_a1b2c3d4e5f6g7h8",
        }
    )
    name = fields.String(metadata={"description": "The name of the billing account.", "example": "ACME Corp Billing"})
    email = fields.Email(metadata={"description": "The primary billing email address.", "example": "billing@acme.com"})
    phone = fields.String(
        allow_none=True, metadata={"description": "The billing contact phone number.", "example": "+15551234567"}
    )
    description = fields.String(
        allow_none=True,
        metadata={
            "description": "An optional description for the billing account.",
            "example": "For US-based operations",
        },
    )
    currency = fields.String(
        validate=validate.OneOf(CURRENCIES),
        metadata={"description": "The three-letter ISO currency code for the billing account.", "example": "usd"},
    )
    address = fields.Nested(AddressSchema)
    created_at = Timestamp(metadata={"description": "The timestamp when the billing account was created."})
    updated_at = Timestamp(metadata={"description": "The timestamp when the billing account was last updated."})

    @pre_dump
    @from_stripe("customer")
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
    # The published create's descriptions and example body (seeds/003).
    name = StrictString(
        required=True,
        validate=validate.Length(max=100),
        metadata={
            "description": "The name for the new billing account. Maximum 100 characters.",
            "example": "ACME Corp (EU)",
        },
    )
    email = fields.Email(
        required=True,
        validate=validate.Length(max=150),
        metadata={
            "description": "The primary billing email address. Maximum 150 characters.",
            "example": "billing-eu@acme.com",
        },
    )
    phone = Text(
        allow_none=True,
        validate=validate.Length(max=50),
        metadata={
            "description": "The billing contact phone number. Maximum 50 characters.",
            "example": "+442071234567",
        },
    )
    description = Text(
        allow_none=True,
        validate=validate.Length(max=200),
        metadata={
            "description": "An optional description for the billing account. Maximum 200 characters.",
            "example": "For all European operations.",
        },
    )
    currency = fields.String(
        validate=validate.OneOf(CURRENCIES),
        metadata={
            "description": "The three-letter ISO currency code. If not provided, it will default based on the "
            "workspace or system settings.",
            "example": "eur",
        },
    )
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
