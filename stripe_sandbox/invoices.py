"""Invoices and invoice items: /v1/invoices, /v1/invoiceitems, /v1/invoices/create_preview.

The invoice engine is `invoice_engine.py`; this module is the API over it. Paying
by request charges at once. `POST /v1/invoices/{id}/finalize` of an
`auto_advance` charge_automatically invoice also charges at once (Stripe
waits about an hour).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from stripe.params import (
    InvoiceCreateParams,
    InvoiceCreatePreviewParams,
    InvoiceFinalizeInvoiceParams,
    InvoiceItemCreateParams,
    InvoiceItemListParams,
    InvoiceItemRetrieveParams,
    InvoiceListLinesParams,
    InvoiceListParams,
    InvoiceMarkUncollectibleParams,
    InvoicePayParams,
    InvoiceRetrieveParams,
    InvoiceVoidInvoiceParams,
)

from stripe_sandbox import invoice_engine, metadata, payment_methods, subscriptions
from stripe_sandbox.errors import (
    SandboxError,
    not_supported,
    parameter_missing,
    parameters_exclusive,
    resource_missing,
)
from stripe_sandbox.invoice_engine import INVOICE, ITEM
from stripe_sandbox.listing import created_filter, list_endpoint, list_object, page_limit
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.router import Request, Router
from stripe_sandbox.store import Document, Store, random_token

URL = "/v1/invoices"
ITEMS_URL = "/v1/invoiceitems"

# Known to Stripe, not emulated: each changes amounts, parties or documents.
_UNSUPPORTED_CREATE = (
    "account_tax_ids",
    "application_fee_amount",
    "automatically_finalizes_at",
    "customer_account",
    "default_source",
    "default_tax_rates",
    "discounts",
    "effective_at",
    "from_invoice",
    "issuer",
    "number",
    "on_behalf_of",
    "payment_settings",
    "rendering",
    "shipping_cost",
    "shipping_details",
    "statement_descriptor",
    "transfer_data",
)
_UNSUPPORTED_ITEM = (
    "customer_account",
    "discounts",
    "price_data",
    "quantity_decimal",
    "tax_behavior",
    "tax_code",
    "tax_rates",
)
_UNSUPPORTED_PREVIEW = (
    "currency",
    "customer_account",
    "customer_details",
    "discounts",
    "invoice_items",
    "issuer",
    "on_behalf_of",
    "schedule",
    "schedule_details",
)


def _reject(params: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        if name in params:
            raise not_supported(name)


def _require_invoice(store: Store, invoice_id: str) -> SandboxObject:
    return store.require(INVOICE, invoice_id, for_update=True)


# -- invoice items --------------------------------------------------------------------


def create_item(req: Request) -> Document:
    params, store = req.params, req.store
    _reject(params, _UNSUPPORTED_ITEM)
    if not params.get("customer"):
        raise parameter_missing("customer")
    customer = store.require("customer", params["customer"], param="customer", status=400)
    quantity = params.get("quantity", 1)
    if quantity < 0:
        raise SandboxError(400, "This value must be greater than or equal to 0.", param="quantity")
    price_id = params.get("pricing", {}).get("price")
    given = [name for name in ("amount", "unit_amount_decimal") if name in params]
    if price_id and given:
        raise parameters_exclusive("pricing[price]", given[0])
    if len(given) > 1:
        raise parameters_exclusive(*given)
    price = None
    amount = None
    if price_id:
        price_row = store.get("price", price_id)
        if price_row is None:
            raise resource_missing("price", price_id, param="pricing[price]", status=400)
        price = store.present(price_row)
        currency = str(price["currency"])
        if params.get("currency", currency).lower() != currency:
            raise SandboxError(
                400,
                f"The currency of the price ({currency}) must match the invoice item's "
                f"currency ({params['currency'].lower()}).",
                param="currency",
            )
        unit = invoice_engine.to_decimal(price["unit_amount_decimal"])
        description = params.get("description") or invoice_engine.product_name(store, price["product"])
    else:
        if not given:
            raise parameter_missing("amount")
        if not params.get("currency"):
            raise parameter_missing("currency")
        currency = params["currency"].lower()
        if "amount" in params:
            amount = params["amount"]
            unit = invoice_engine.to_decimal(amount) / quantity if quantity else invoice_engine.to_decimal(0)
        else:
            unit = params["unit_amount_decimal"]
        description = params.get("description") or None
    invoice_row = None
    if params.get("invoice"):
        invoice_row = store.get(INVOICE, params["invoice"], for_update=True)
        if invoice_row is None or invoice_row.data["customer"] != customer.id:
            raise resource_missing("invoice", params["invoice"], param="invoice", status=400)
        if invoice_row.data["status"] != "draft":
            raise SandboxError(
                400, "You can only add invoice items to draft invoices.", param="invoice", code="invoice_not_editable"
            )
    subscription_id = None
    if params.get("subscription"):
        subscription = store.get("subscription", params["subscription"])
        if subscription is None or subscription.data["customer"] != customer.id:
            raise resource_missing("subscription", params["subscription"], param="subscription", status=400)
        subscription_id = subscription.id
    period = params.get("period")
    row = invoice_engine.create_item(
        store,
        customer_id=customer.id,
        currency=currency,
        quantity=quantity,
        unit_amount_decimal=unit,
        amount=amount,
        description=description,
        period=(period["start"], period["end"]) if period else (req.now, req.now),
        price=price,
        subscription_id=subscription_id,
        metadata=metadata.initial(params.get("metadata")),
        invoice_id=invoice_row.id if invoice_row is not None else None,
        discountable=params.get("discountable"),
    )
    if invoice_row is not None:
        invoice_engine.add_lines(store, invoice_row, [row])
    return store.present(row)


def retrieve_item(req: Request) -> Document:
    return req.store.present(req.store.require(ITEM, req.path_params["invoiceitem"]))


def list_items(req: Request) -> Document:
    params = req.params
    _reject(params, ("customer_account",))
    o = SandboxObject
    where = []
    if "invoice" in params:
        where.append(o.data["invoice"].as_string() == params["invoice"])
    if "pending" in params:
        invoiced = o.data["invoice"].as_string()
        where.append(invoiced.is_(None) if params["pending"] else invoiced.is_not(None))
    return list_endpoint(req.store, params, ITEM, ITEMS_URL, customer=params.get("customer"), where=where)


# -- invoices -------------------------------------------------------------------------


def create(req: Request) -> Document:
    params, store = req.params, req.store
    _reject(params, _UNSUPPORTED_CREATE)
    if params.get("automatic_tax", {}).get("enabled"):
        raise not_supported("automatic_tax")
    if not params.get("customer"):
        raise parameter_missing("customer")
    customer = store.require("customer", params["customer"], param="customer", status=400)
    collection_method = params.get("collection_method", "charge_automatically")
    if collection_method == "send_invoice":
        if "days_until_due" not in params and "due_date" not in params:
            raise SandboxError(
                400,
                "Invoices with `collection_method=send_invoice` must have either `days_until_due` or `due_date` set.",
                param="days_until_due",
            )
    else:
        for name in ("days_until_due", "due_date"):
            if name in params:
                raise SandboxError(400, f"`{name}` can only be set when `collection_method=send_invoice`.", param=name)
    default_payment_method = None
    if params.get("default_payment_method"):
        default_payment_method = payment_methods.require_attached(
            store, customer.id, params["default_payment_method"], param="default_payment_method"
        ).id
    subscription: Document | None = None
    if params.get("subscription"):
        row = store.get("subscription", params["subscription"])
        if row is None or row.data["customer"] != customer.id:
            raise resource_missing("subscription", params["subscription"], param="subscription", status=400)
        subscription = row.data
    pending: list[SandboxObject] = []
    if params.get("pending_invoice_items_behavior", "exclude") == "include":
        pending = invoice_engine.pending_items(
            store,
            customer.id,
            subscription_id=subscription["id"] if subscription else None,
            include_unattached=subscription is None,
        )
    currency = (
        params.get("currency")
        or (pending[0].data["currency"] if pending else None)
        or customer.data.get("currency")
        or "usd"
    ).lower()
    pending = [row for row in pending if row.data["currency"] == currency]
    row = invoice_engine.create_invoice(
        store,
        customer=customer,
        subscription=subscription,
        billing_reason="manual",
        collection_method=collection_method,
        days_until_due=params.get("days_until_due"),
        currency=currency,
        lines=[],
        pending=pending,
        description=params.get("description") or None,
        metadata=metadata.initial(params.get("metadata")),
        auto_advance=params.get("auto_advance", False),
        default_payment_method=default_payment_method,
        due_date=params.get("due_date"),
    )
    extra = {}
    if params.get("footer"):
        extra["footer"] = params["footer"]
    if params.get("custom_fields"):
        extra["custom_fields"] = [{"name": f["name"], "value": f["value"]} for f in params["custom_fields"]]
    if extra:
        store.update(row, {**row.data, **extra})
    return store.present(row)


def retrieve(req: Request) -> Document:
    return req.store.present(req.store.require(INVOICE, req.path_params["invoice"]))


def list_(req: Request) -> Document:
    params, store = req.params, req.store
    _reject(params, ("customer_account",))
    o = SandboxObject
    where = []
    customer = params.get("customer")
    if "subscription" in params:
        subscription = store.get("subscription", params["subscription"])
        if subscription is None:
            return list_object(URL, [], False)
        if customer and customer != subscription.data["customer"]:
            return list_object(URL, [], False)
        # Walk the owning customer's invoices (index) rather than every invoice.
        customer = subscription.data["customer"]
        where.append(o.data[("parent", "subscription_details", "subscription")].as_string() == subscription.id)
    if "status" in params:
        where.append(o.data["status"].as_string() == params["status"])
    if "collection_method" in params:
        where.append(o.data["collection_method"].as_string() == params["collection_method"])
    if "due_date" in params:
        where.extend(created_filter(params["due_date"], o.data["due_date"].as_integer()))
    return list_endpoint(store, params, INVOICE, URL, customer=customer, where=where)


def list_lines(req: Request) -> Document:
    """The invoice's lines, paged like any list (the invoice itself embeds the first 10)."""
    params = req.params
    row = req.store.require(INVOICE, req.path_params["invoice"])
    url = f"{URL}/{row.id}/lines"
    lines: list[Document] = copy.deepcopy(row.data["lines"]["data"])
    limit = page_limit(params)
    positions = {line["id"]: index for index, line in enumerate(lines)}
    for name in ("starting_after", "ending_before"):
        if params.get(name) and params[name] not in positions:
            raise resource_missing("line item", params[name], param=name, status=400)
    if params.get("ending_before"):
        end = positions[params["ending_before"]]
        start = max(0, end - limit)
        return list_object(url, lines[start:end], start > 0)
    start = positions[params["starting_after"]] + 1 if params.get("starting_after") else 0
    return list_object(url, lines[start : start + limit], start + limit < len(lines))


def finalize(req: Request) -> Document:
    store = req.store
    row = _require_invoice(store, req.path_params["invoice"])
    if row.data["status"] != "draft":
        raise SandboxError(
            400,
            "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
            code="invoice_not_editable",
        )
    if "auto_advance" in req.params:
        store.update(row, {**row.data, "auto_advance": req.params["auto_advance"]})
    invoice_engine.finalize(store, row)
    if (
        row.data["status"] == "open"
        and row.data["auto_advance"]
        and row.data["collection_method"] == "charge_automatically"
    ):
        # Automatic collection, at once: a failure stays recorded, the request succeeds.
        if invoice_engine.attempt_payment(store, row) is None:
            subscriptions.invoice_paid(store, row.data)
    return store.present(row)


def pay(req: Request) -> Document:
    params, store = req.params, req.store
    _reject(params, ("forgive", "mandate", "source"))
    row = _require_invoice(store, req.path_params["invoice"])
    status = row.data["status"]
    if status == "paid":
        raise SandboxError(400, "Invoice is already paid.", code="invoice_already_paid")
    if status == "void":
        raise SandboxError(400, "This invoice cannot be paid because it has been voided.", code="invoice_not_open")
    if status == "draft":
        invoice_engine.finalize(store, row)  # as Stripe does: paying a draft finalizes it first
    if row.data["status"] != "paid":
        if params.get("paid_out_of_band"):
            invoice_engine.mark_paid_out_of_band(store, row)
        else:
            method = None
            if params.get("payment_method"):
                method = payment_methods.resolve(
                    store, params["payment_method"], param="payment_method", for_update=True
                )
                payment_methods.attach(store, method, row.data["customer"])
            error = invoice_engine.attempt_payment(store, row, method)
            if error is not None:
                error.keep_changes = True  # the failed attempt is part of the invoice's history
                raise error
    subscriptions.invoice_paid(store, row.data)
    return store.present(row)


def void(req: Request) -> Document:
    row = _require_invoice(req.store, req.path_params["invoice"])
    if row.data["status"] not in ("open", "uncollectible"):
        raise SandboxError(
            400,
            f"You can only void invoices that are open or uncollectible; this invoice is {row.data['status']}.",
            code="invoice_not_open",
        )
    invoice_engine.void(req.store, row)
    return req.store.present(row)


def mark_uncollectible(req: Request) -> Document:
    row = _require_invoice(req.store, req.path_params["invoice"])
    if row.data["status"] != "open":
        raise SandboxError(
            400,
            f"You can only mark open invoices as uncollectible; this invoice is {row.data['status']}.",
            code="invoice_not_open",
        )
    invoice_engine.mark_uncollectible(req.store, row)
    return req.store.present(row)


def create_preview(req: Request) -> Document:
    """What an invoice would look like, changing nothing.

    The preview is computed by making the change for real inside a savepoint
    that is then rolled back: no subscription change, invoice item, invoice or
    event survives it. The result is shaped as Stripe shapes previews: id
    `upcoming_in_...`, lines `il_tmp_...`, status draft, no number.
    """
    _reject(req.params, _UNSUPPORTED_PREVIEW)
    store = req.store
    savepoint = store.session.begin_nested()
    try:
        row = subscriptions.preview_invoice(store, req.params)
        document = store.present_document(INVOICE, row.data)
        full_lines = copy.deepcopy(row.data["lines"]["data"])
    finally:
        savepoint.rollback()
    preview_id = f"upcoming_in_{random_token()}"
    for line in full_lines:
        line["id"] = f"il_tmp_{random_token()}"
        line["invoice"] = preview_id
    document["id"] = preview_id
    document["lines"]["data"] = full_lines[: invoice_engine.EMBEDDED_LINES]
    document["lines"]["url"] = f"{URL}/{preview_id}/lines"
    document["webhooks_delivered_at"] = None
    return document


def register(router: Router) -> None:
    # Invoices change over time as their subscriptions collect them (finalizing, retries).
    router.add_kind(dataclasses.replace(invoice_engine.INVOICE_KIND, advance=subscriptions.collect))
    router.add_kind(invoice_engine.ITEM_KIND)
    router.add("POST", ITEMS_URL, create_item, InvoiceItemCreateParams)
    router.add("GET", ITEMS_URL, list_items, InvoiceItemListParams)
    router.add("GET", ITEMS_URL + "/{invoiceitem}", retrieve_item, InvoiceItemRetrieveParams)
    router.add("POST", URL, create, InvoiceCreateParams)
    router.add("GET", URL, list_, InvoiceListParams)
    router.add("POST", URL + "/create_preview", create_preview, InvoiceCreatePreviewParams)
    router.add("GET", URL + "/{invoice}", retrieve, InvoiceRetrieveParams)
    router.add("GET", URL + "/{invoice}/lines", list_lines, InvoiceListLinesParams)
    router.add("POST", URL + "/{invoice}/finalize", finalize, InvoiceFinalizeInvoiceParams)
    router.add("POST", URL + "/{invoice}/pay", pay, InvoicePayParams)
    router.add("POST", URL + "/{invoice}/void", void, InvoiceVoidInvoiceParams)
    router.add("POST", URL + "/{invoice}/mark_uncollectible", mark_uncollectible, InvoiceMarkUncollectibleParams)
