"""Invoices: a Stripe Invoice with every one of its lines, reshaped."""

from __future__ import annotations

import json
from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_dump, validate, validates_schema

from billing.catalog import INTERVALS, PRODUCTS
from billing.memo import Memo
from schemas.common import URL_PATTERN, Text, format_timestamp, from_stripe

INVOICE_STATUSES = ("draft", "open", "paid", "uncollectible", "void")  # Stripe's (API.md, Invoices)


def _int_amount(value: Any) -> int | None:
    if value is None:
        return None
    return int(round(float(value)))


class InvoiceLineSchema(Schema):
    id = fields.String(allow_none=True)
    description = fields.String(allow_none=True)
    amount = fields.Integer()
    currency = fields.String()
    quantity = fields.Integer(allow_none=True)
    price_id = fields.String(allow_none=True)
    unit_amount = fields.Integer(allow_none=True)
    product_name = fields.String(allow_none=True)


class InvoiceSchema(Schema):
    """Dumps {"invoice": <Stripe invoice dict>, "lines": [<line dicts>], "product_names": {id: name}},
    or a stored invoice, {"stored": <its document's JSON text>, "product_names": {id: name}}."""

    id = fields.String(metadata={"example": "in_1Q0PsIJvEtkwdCNY"})
    customer_id = fields.String()
    number = fields.String(allow_none=True)
    status = fields.String(validate=validate.OneOf(INVOICE_STATUSES), metadata={"example": "paid"})
    currency = fields.String()
    amount_due = fields.Integer()
    amount_paid = fields.Integer()
    subtotal = fields.Integer()
    total = fields.Integer()
    tax = fields.Integer(allow_none=True)
    discount_amount = fields.Integer(allow_none=True)
    discount_names = fields.List(fields.String())
    lines = fields.List(fields.Nested(InvoiceLineSchema))
    due_date = fields.String(allow_none=True, metadata={"format": "date-time"})
    hosted_invoice_url = fields.String(allow_none=True)
    invoice_pdf = fields.String(allow_none=True)
    created_at = fields.String(metadata={"format": "date-time"})

    @pre_dump
    @from_stripe("invoice")
    def _from_invoice(self, view: dict[str, Any], **_: Any) -> dict[str, Any]:
        invoice = view["invoice"] if "invoice" in view else json.loads(view["stored"])
        lines = view["lines"] if "lines" in view else invoice["lines"]["data"]
        names = view.get("product_names") or {}
        taxes = invoice.get("total_taxes")
        discounts = invoice.get("total_discount_amounts")
        customer = invoice.get("customer")
        return {
            "id": invoice.get("id"),
            "customer_id": customer if isinstance(customer, str) or customer is None else customer.get("id"),
            "number": invoice.get("number"),
            # Stripe types it nullable; one without a status was never finalized (a preview is a draft).
            "status": invoice.get("status") or "draft",
            "currency": invoice.get("currency"),
            "amount_due": invoice.get("amount_due") or 0,
            "amount_paid": invoice.get("amount_paid") or 0,
            "subtotal": invoice.get("subtotal") or 0,
            "total": invoice.get("total") or 0,
            "tax": sum(t.get("amount", 0) for t in taxes) if taxes else None,
            "discount_amount": sum(d.get("amount", 0) for d in discounts) if discounts else None,
            "discount_names": _discount_names(invoice.get("discounts") or []),
            "lines": [_line(line, names) for line in lines],
            "due_date": format_timestamp(invoice["due_date"]) if invoice.get("due_date") else None,
            "hosted_invoice_url": invoice.get("hosted_invoice_url"),
            "invoice_pdf": invoice.get("invoice_pdf"),
            "created_at": format_timestamp(invoice["created"]) if invoice.get("created") else None,
        }


def _discount_names(discounts: list[Any]) -> list[str]:
    names = []
    for discount in discounts:
        if not isinstance(discount, dict):
            continue  # an unexpanded id carries no name
        source = discount.get("source") or {}
        coupon = discount.get("coupon") or source.get("coupon") or {}
        name = coupon.get("name") if isinstance(coupon, dict) else None
        if name:
            names.append(name)
    return names


def _line(line: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    pricing = line.get("pricing") or {}
    details = pricing.get("price_details") or {}
    price = details.get("price")
    product = details.get("product")
    return {
        "id": line.get("id"),
        "description": line.get("description"),
        "amount": line.get("amount") or 0,
        "currency": line.get("currency"),
        "quantity": line.get("quantity"),
        "price_id": price if isinstance(price, str) or price is None else price.get("id"),
        "unit_amount": _int_amount(pricing.get("unit_amount_decimal")),
        "product_name": names.get(product) if isinstance(product, str) else None,
    }


class InvoicePreviewSchema(InvoiceSchema):
    class Meta:
        exclude = ("id",)


# A list's invoices are dumped once per process: what an invoice shows is a pure function of its
# stored document and its products' names, and parsing and reshaping them was most of a list's
# Python. Keyed by the document's text and the names: a new view of the invoice (Stripe's, or
# any change to the copy) or a renamed product is another key.
_dumped: Memo[tuple[str, tuple[tuple[str, str], ...]], Any] = Memo(1024)


class _StoredInvoice(fields.Nested):
    """An invoice of a list (`InvoiceSchema`'s stored view), from the memo when this text with
    these names was dumped before. Documented as `Nested(InvoiceSchema)`."""

    def _serialize(self, nested_obj: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        key = (nested_obj["stored"], tuple(sorted(nested_obj["product_names"].items())))
        dumped = _dumped.get(key)
        if dumped is None:
            dumped = _dumped.keep(key, super()._serialize(nested_obj, attr, obj, **kwargs))  # type: ignore[no-untyped-call]
        return dumped


class InvoiceListSchema(Schema):
    data = fields.List(_StoredInvoice(InvoiceSchema))
    has_more = fields.Boolean()
    next_cursor = fields.String(allow_none=True)
    previous_cursor = fields.String(allow_none=True)


class InvoiceListQuerySchema(Schema):
    class Meta:
        description = "Send `after` or `before`, not both; a cursor is one of this account's invoice ids."

    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=200))
    after = fields.String(
        validate=validate.Length(min=1, max=255),
        metadata={
            "pattern": URL_PATTERN,
            "example": "in_1Q0PsIJvEtkwdCNY",
            "description": "An invoice id: the page after it (older invoices). Not with `before`.",
        },
    )
    before = fields.String(
        validate=validate.Length(min=1, max=255),
        metadata={
            "pattern": URL_PATTERN,
            "example": "in_1Q0PsIJvEtkwdCNY",
            "description": "An invoice id: the page before it (newer invoices). Not with `after`.",
        },
    )

    @validates_schema
    def _one_cursor(self, data: dict[str, Any], **_: Any) -> None:
        if "after" in data and "before" in data:
            raise ValidationError("Send either after or before, not both.", "after")


class PreviewItemSchema(Schema):
    product_type = fields.String(required=True, validate=validate.OneOf(PRODUCTS), metadata={"example": "users"})
    quantity = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=0, max=100_000),
        metadata={"example": 3, "description": "The new quantity; 0 removes the product."},
    )
    interval = fields.String(validate=validate.OneOf(INTERVALS))


class InvoicePreviewRequestSchema(Schema):
    class Meta:
        description = (
            "Without `subscription_id`: a new subscription (at least one item with a quantity). "
            "`cancel_subscription` needs a `subscription_id` and no `items`. "
            "Each `product_type` may appear once in `items`."
        )

    subscription_id = Text(validate=validate.Length(min=1, max=255), metadata={"example": "sub_a1b2c3d4e5f6g7h8"})
    items = fields.List(
        fields.Nested(PreviewItemSchema), metadata={"example": [{"product_type": "users", "quantity": 3}]}
    )
    cancel_subscription = fields.Boolean(load_default=False)

    @validates_schema
    def _coherent(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("cancel_subscription") and "subscription_id" not in data:
            raise ValidationError("cancel_subscription needs a subscription_id.", "cancel_subscription")
        if data.get("cancel_subscription") and data.get("items"):
            raise ValidationError("Preview either a cancellation or item changes.", "items")
        if "subscription_id" not in data and not [i for i in data.get("items") or [] if i["quantity"] > 0]:
            raise ValidationError("A new subscription needs at least one item with a quantity.", "items")
        products = [i["product_type"] for i in data.get("items") or []]
        if len(products) != len(set(products)):
            raise ValidationError("Each product_type may appear once.", "items")
