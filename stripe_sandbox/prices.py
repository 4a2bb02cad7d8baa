"""Prices: /v1/prices, including lookup keys."""

from __future__ import annotations

import copy
import decimal
from typing import Any

from sqlalchemy import select
from stripe.params import PriceCreateParams, PriceListParams, PriceRetrieveParams, PriceUpdateParams

from stripe_sandbox import events, metadata, products
from stripe_sandbox.errors import (
    SandboxError,
    not_supported,
    parameter_missing,
    parameters_exclusive,
    resource_missing,
)
from stripe_sandbox.listing import list_endpoint, list_object
from stripe_sandbox.models import SandboxObject, SandboxPriceLookupKey, insert_if_absent
from stripe_sandbox.router import Request, Router
from stripe_sandbox.store import Document, ObjectKind, Store

OBJECT_TYPE = "price"
URL = "/v1/prices"
MAX_LOOKUP_KEYS = 10

KIND = ObjectKind(object_type=OBJECT_TYPE, id_prefix="price", noun="price")

# Stripe caps a billing interval at three years.
_MAX_INTERVAL_COUNT = {"day": 1095, "week": 156, "month": 36, "year": 3}


def _name(prefix: str, param: str) -> str:
    return f"{prefix}[{param}]" if prefix else param


def _decimal_string(value: decimal.Decimal) -> str:
    return format(value.normalize(), "f")  # Decimal("1000") -> "1000", not "1E+3"


def _amounts(params: dict[str, Any], prefix: str) -> tuple[int | None, str | None]:
    """(unit_amount, unit_amount_decimal) as Stripe reports them."""
    if "unit_amount" in params and "unit_amount_decimal" in params:
        raise parameters_exclusive(_name(prefix, "unit_amount"), _name(prefix, "unit_amount_decimal"))
    if "unit_amount" in params:
        amount = params["unit_amount"]
        if amount < 0:
            raise SandboxError(
                400, "This value must be greater than or equal to 0.", param=_name(prefix, "unit_amount")
            )
        return amount, str(amount)
    if "unit_amount_decimal" in params:
        exact = params["unit_amount_decimal"]
        if exact < 0:
            raise SandboxError(
                400, "This value must be greater than or equal to 0.", param=_name(prefix, "unit_amount_decimal")
            )
        return (int(exact) if exact == exact.to_integral_value() else None), _decimal_string(exact)
    return None, None


def _recurring(value: dict[str, Any] | None, prefix: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if "meter" in value:
        raise not_supported(_name(prefix, "recurring[meter]"))
    interval = value["interval"]
    count = value.get("interval_count", 1)
    if not 1 <= count <= _MAX_INTERVAL_COUNT[interval]:
        raise SandboxError(
            400,
            "Invalid recurring[interval_count]: the maximum billing interval is three years and the "
            "minimum is one interval.",
            param=_name(prefix, "recurring[interval_count]"),
        )
    return {
        "interval": interval,
        "interval_count": count,
        "meter": None,
        "trial_period_days": value.get("trial_period_days"),
        "usage_type": value.get("usage_type", "licensed"),
    }


def claim_lookup_key(store: Store, lookup_key: str, price_id: str, *, transfer: bool) -> None:
    if insert_if_absent(store.session, SandboxPriceLookupKey, {"lookup_key": lookup_key, "price_id": price_id}):
        return
    owner = store.session.get(SandboxPriceLookupKey, lookup_key, with_for_update=True, populate_existing=True)
    assert owner is not None
    if owner.price_id == price_id:
        return
    if not transfer:
        raise SandboxError(400, f"A price (`{owner.price_id}`) already uses that lookup key.", param="lookup_key")
    previous = store.get(OBJECT_TYPE, owner.price_id, for_update=True)
    if previous is not None:
        store.update(previous, {**previous.data, "lookup_key": None})
    owner.price_id = price_id


def _release_lookup_key(store: Store, lookup_key: str, price_id: str) -> None:
    owner = store.session.get(SandboxPriceLookupKey, lookup_key, with_for_update=True, populate_existing=True)
    if owner is not None and owner.price_id == price_id:
        store.session.delete(owner)


def create_price(store: Store, params: dict[str, Any], *, param_prefix: str = "", active: bool = True) -> SandboxObject:
    """Insert a price; also serves `default_price_data` and subscription `price_data`."""
    p = param_prefix
    for name in ("currency_options", "tiers", "tiers_mode", "transform_quantity"):
        if name in params:
            raise not_supported(_name(p, name))
    if params.get("billing_scheme") == "tiered":
        raise not_supported(_name(p, "billing_scheme"))
    if "product" in params and "product_data" in params:
        raise parameters_exclusive(_name(p, "product"), _name(p, "product_data"))
    if "product" in params:
        product = store.get(products.OBJECT_TYPE, params["product"])
        if product is None:
            raise resource_missing("product", params["product"], param=_name(p, "product"), status=400)
    elif "product_data" in params:
        product = products.create_product(store, params["product_data"], param_prefix=_name(p, "product_data"))
    else:
        raise parameter_missing(_name(p, "product"))
    currency = params["currency"].lower()
    if len(currency) != 3 or not currency.isalpha():
        raise SandboxError(400, f"Invalid currency: {params['currency']}.", param=_name(p, "currency"))
    unit_amount, unit_amount_decimal = _amounts(params, p)
    custom = params.get("custom_unit_amount")
    if unit_amount_decimal is None and not custom:
        raise parameter_missing(_name(p, "unit_amount"))
    recurring = _recurring(params.get("recurring"), p)
    price_id = store.new_id(OBJECT_TYPE)
    data: Document = {
        "id": price_id,
        "object": OBJECT_TYPE,
        "active": params.get("active", active),
        "billing_scheme": "per_unit",
        "created": store.now,
        "currency": currency,
        "custom_unit_amount": {
            "maximum": custom.get("maximum"),
            "minimum": custom.get("minimum"),
            "preset": custom.get("preset"),
        }
        if custom and custom.get("enabled")
        else None,
        "livemode": False,
        "lookup_key": params.get("lookup_key") or None,
        "metadata": metadata.initial(params.get("metadata"), _name(p, "metadata")),
        "nickname": params.get("nickname") or None,
        "product": product.id,
        "recurring": recurring,
        "tax_behavior": params.get("tax_behavior", "unspecified"),
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring" if recurring else "one_time",
        "unit_amount": unit_amount,
        "unit_amount_decimal": unit_amount_decimal,
    }
    row = store.insert(OBJECT_TYPE, data)
    if data["lookup_key"]:
        claim_lookup_key(store, data["lookup_key"], price_id, transfer=params.get("transfer_lookup_key", False))
    events.created(store, row)
    return row


def create(req: Request) -> Document:
    return req.store.present(create_price(req.store, req.params))


def retrieve(req: Request) -> Document:
    return req.store.present(req.store.require(OBJECT_TYPE, req.path_params["price"]))


def update(req: Request) -> Document:
    params = req.params
    if "currency_options" in params:
        raise not_supported("currency_options")
    row = req.store.require(OBJECT_TYPE, req.path_params["price"], for_update=True)
    before = req.store.present(row)
    data = copy.deepcopy(row.data)
    for field in ("active", "tax_behavior"):
        if field in params:
            data[field] = params[field]
    if "nickname" in params:
        data["nickname"] = params["nickname"] or None
    if "metadata" in params:
        data["metadata"] = metadata.merged(data["metadata"], params["metadata"])
    if "lookup_key" in params:
        new_key = params["lookup_key"] or None
        if new_key != data["lookup_key"]:
            if data["lookup_key"]:
                _release_lookup_key(req.store, data["lookup_key"], row.id)
            if new_key:
                claim_lookup_key(req.store, new_key, row.id, transfer=params.get("transfer_lookup_key", False))
            data["lookup_key"] = new_key
    req.store.update(row, data)
    events.updated(req.store, row, before)
    return req.store.present(row)


def list_(req: Request) -> Document:
    params = req.params
    o = SandboxObject
    where = []
    if "lookup_keys" in params:
        keys = params["lookup_keys"]
        if len(keys) > MAX_LOOKUP_KEYS:
            raise SandboxError(400, f"You can pass up to {MAX_LOOKUP_KEYS} lookup keys.", param="lookup_keys")
        ids = list(
            req.store.session.scalars(
                select(SandboxPriceLookupKey.price_id).where(SandboxPriceLookupKey.lookup_key.in_(keys))
            )
        )
        if not ids:
            return list_object(URL, [], False)
        where.append(o.id.in_(ids))
    if "active" in params:
        where.append(o.data["active"].as_boolean() == params["active"])
    if "currency" in params:
        where.append(o.data["currency"].as_string() == params["currency"].lower())
    if "product" in params:
        where.append(o.data["product"].as_string() == params["product"])
    if "type" in params:
        where.append(o.data["type"].as_string() == params["type"])
    recurring = params.get("recurring", {})
    if "meter" in recurring:
        raise not_supported("recurring[meter]")
    for field in ("interval", "usage_type"):
        if field in recurring:
            where.append(o.data[("recurring", field)].as_string() == recurring[field])
    return list_endpoint(req.store, params, OBJECT_TYPE, URL, where=where)


def register(router: Router) -> None:
    router.add_kind(KIND)
    router.add("POST", URL, create, PriceCreateParams)
    router.add("GET", URL, list_, PriceListParams)
    router.add("GET", URL + "/{price}", retrieve, PriceRetrieveParams)
    router.add("POST", URL + "/{price}", update, PriceUpdateParams)
