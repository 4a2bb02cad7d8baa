"""Customers: /v1/customers."""

from __future__ import annotations

import copy
import re
from typing import Any

from stripe.params import (
    CustomerCreateParams,
    CustomerDeleteParams,
    CustomerListParams,
    CustomerRetrieveParams,
    CustomerSearchParams,
    CustomerUpdateParams,
)

from stripe_sandbox import events, metadata, payment_methods, search, subscriptions, tax, tax_ids
from stripe_sandbox.errors import SandboxError, not_supported, resource_missing
from stripe_sandbox.listing import list_endpoint, list_object
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.router import Request, Router
from stripe_sandbox.store import Document, ObjectKind, Store, random_token

OBJECT_TYPE = "customer"
URL = "/v1/customers"


def _tax_ids(store: Store, customer: Document) -> Document:
    found = tax_ids.of_customer(store, customer["id"])
    return list_object(f"{URL}/{customer['id']}/tax_ids", list(reversed(found)), False)


KIND = ObjectKind(
    object_type=OBJECT_TYPE,
    id_prefix="cus",
    noun="customer",
    includable={
        "subscriptions": subscriptions.customer_subscriptions,
        "tax": lambda store, customer: tax.customer_tax(customer),
        "tax_ids": _tax_ids,
    },
)

# Parameters whose effect would show in responses but which need resources the
# sandbox does not emulate yet (sources, tax ids given inline, test clocks).
_UNSUPPORTED = ("source", "default_source", "tax_id_data", "test_clock")
_DEFAULT_PAYMENT_METHOD = "invoice_settings[default_payment_method]"
_ADDRESS_FIELDS = ("city", "country", "line1", "line2", "postal_code", "state")
_INVOICE_PREFIX = re.compile(r"[A-Z0-9]{1,12}\Z")


def _address(value: Any) -> dict[str, Any] | None:
    if not value:
        return None
    return {field: value.get(field) or None for field in _ADDRESS_FIELDS}


def _shipping(value: Any) -> dict[str, Any] | None:
    if not value:
        return None
    return {
        "address": _address(value["address"]),
        "carrier": None,
        "name": value["name"],
        "phone": value.get("phone") or None,
        "tracking_number": None,
    }


def _invoice_settings(current: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    settings = dict(current)
    if "custom_fields" in value:
        fields = value["custom_fields"]
        settings["custom_fields"] = [{"name": f["name"], "value": f["value"]} for f in fields] if fields else None
    if "default_payment_method" in value:
        # Checked against the customer's attached payment methods by the caller.
        settings["default_payment_method"] = value["default_payment_method"] or None
    if "footer" in value:
        settings["footer"] = value["footer"] or None
    if "rendering_options" in value:
        options = value["rendering_options"]
        settings["rendering_options"] = (
            {
                "amount_tax_display": options.get("amount_tax_display") or None,
                "template": options.get("template") or None,
            }
            if options
            else None
        )
    return settings


def _apply(data: Document, params: dict[str, Any]) -> None:
    """Fields create and update share; an empty string unsets (null)."""
    for field in ("business_name", "description", "email", "individual_name", "name", "phone"):
        if field in params:
            data[field] = params[field] or None
    if "address" in params:
        data["address"] = _address(params["address"])
    if "shipping" in params:
        data["shipping"] = _shipping(params["shipping"])
    if "balance" in params:
        data["balance"] = params["balance"]
    if "preferred_locales" in params:
        data["preferred_locales"] = params["preferred_locales"]
    if "tax_exempt" in params:
        data["tax_exempt"] = params["tax_exempt"] or "none"
    if "invoice_prefix" in params:
        if not _INVOICE_PREFIX.match(params["invoice_prefix"]):
            raise SandboxError(
                400, "Invalid invoice_prefix: must be 1 to 12 uppercase letters or numbers.", param="invoice_prefix"
            )
        data["invoice_prefix"] = params["invoice_prefix"]
    if "next_invoice_sequence" in params:
        if params["next_invoice_sequence"] < 1:
            raise SandboxError(400, "This value must be greater than or equal to 1.", param="next_invoice_sequence")
        data["next_invoice_sequence"] = params["next_invoice_sequence"]
    if "invoice_settings" in params:
        data["invoice_settings"] = _invoice_settings(data["invoice_settings"], params["invoice_settings"])


def _reject_unsupported(params: dict[str, Any]) -> None:
    for name in _UNSUPPORTED:
        if name in params:
            raise not_supported(name)


def _validate_location(data: Document, params: dict[str, Any]) -> None:
    """`tax[validate_location]=immediately`: Stripe Tax must be able to place the customer, or nothing changes."""
    if (params.get("tax") or {}).get("validate_location") == "immediately":
        tax.require_location(data)


def create(req: Request) -> Document:
    params = req.params
    _reject_unsupported(params)
    data: Document = {
        "id": req.store.new_id(OBJECT_TYPE),
        "object": OBJECT_TYPE,
        "address": None,
        "balance": 0,
        "business_name": None,
        "created": req.now,
        "currency": None,
        "customer_account": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": None,
        "individual_name": None,
        "invoice_prefix": random_token(8).upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": metadata.initial(params.get("metadata")),
        "name": None,
        "next_invoice_sequence": 1,
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }
    _apply(data, params)
    _validate_location(data, params)
    store = req.store
    method = None
    if params.get("payment_method"):
        # Locked: attaching rewrites it, and another request may be attaching it elsewhere.
        method = payment_methods.resolve(store, params["payment_method"], param="payment_method", for_update=True)
    default = data["invoice_settings"]["default_payment_method"]
    if default:
        # Only the `payment_method` passed along (a test token too) can already be the default.
        if method is None or default not in (params["payment_method"], method.id):
            payment_methods.require_attached(store, data["id"], default, param=_DEFAULT_PAYMENT_METHOD)
        data["invoice_settings"]["default_payment_method"] = method.id if method is not None else None
    row = store.insert(OBJECT_TYPE, data)
    events.created(store, row)
    if method is not None:
        payment_methods.attach(store, method, row.id)
    return store.present(row)


def retrieve(req: Request) -> Document:
    customer_id = req.path_params["customer"]
    # A deleted customer stays retrievable, as `{id, object, deleted: true}`.
    row = req.store.get(OBJECT_TYPE, customer_id, include_deleted=True)
    if row is None:
        raise resource_missing("customer", customer_id)
    return req.store.present(row)


def update(req: Request) -> Document:
    params, store = req.params, req.store
    _reject_unsupported(params)
    row = store.require(OBJECT_TYPE, req.path_params["customer"], for_update=True)
    before = store.present(row)
    data = copy.deepcopy(row.data)
    default = params.get("invoice_settings", {}).get("default_payment_method")
    if default:
        payment_methods.require_attached(store, row.id, default, param=_DEFAULT_PAYMENT_METHOD)
    _apply(data, params)
    _validate_location(data, params)
    if "metadata" in params:
        data["metadata"] = metadata.merged(data["metadata"], params["metadata"])
    store.update(row, data)
    events.updated(store, row, before)
    return store.present(row)


def delete(req: Request) -> Document:
    store = req.store
    row = store.require(OBJECT_TYPE, req.path_params["customer"], for_update=True)
    subscriptions.cancel_all_for_customer(store, row.id)
    last = store.present(row)
    stub = {"id": row.id, "object": OBJECT_TYPE, "deleted": True}
    store.mark_deleted(row, stub)
    events.deleted(store, row, last)
    return dict(stub)


def list_(req: Request) -> Document:
    params = req.params
    if params.get("test_clock"):
        raise resource_missing("test_clock", params["test_clock"], param="test_clock", status=400)
    where = []
    if "email" in params:
        where.append(SandboxObject.data["email"].as_string() == params["email"])
    return list_endpoint(req.store, params, OBJECT_TYPE, URL, where=where)


def search_(req: Request) -> Document:
    return search.search(
        req.store, req.params, OBJECT_TYPE, URL + "/search", {"created", "email", "metadata", "name", "phone"}
    )


def register(router: Router) -> None:
    router.add_kind(KIND)
    router.add("POST", URL, create, CustomerCreateParams)
    router.add("GET", URL, list_, CustomerListParams)
    router.add("GET", URL + "/search", search_, CustomerSearchParams)
    router.add("GET", URL + "/{customer}", retrieve, CustomerRetrieveParams)
    router.add("POST", URL + "/{customer}", update, CustomerUpdateParams)
    router.add("DELETE", URL + "/{customer}", delete, CustomerDeleteParams)
