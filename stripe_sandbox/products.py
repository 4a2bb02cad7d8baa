"""Products: /v1/products."""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import select
from stripe.params import (
    ProductCreateParams,
    ProductDeleteParams,
    ProductListParams,
    ProductRetrieveParams,
    ProductUpdateParams,
)

from stripe_sandbox import events, metadata
from stripe_sandbox.errors import SandboxError
from stripe_sandbox.listing import list_endpoint
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.router import Request, Router
from stripe_sandbox.store import Document, ObjectKind, Store

OBJECT_TYPE = "product"
URL = "/v1/products"

KIND = ObjectKind(object_type=OBJECT_TYPE, id_prefix="prod", noun="product")


def _package_dimensions(value: Any) -> dict[str, float] | None:
    if not value:
        return None
    return {key: float(value[key]) for key in ("height", "length", "weight", "width")}


def _tax_details(value: Any) -> dict[str, Any] | None:
    if not value:
        return None
    return {
        "performance_location": value.get("performance_location") or None,
        "tax_code": value.get("tax_code") or None,
    }


def _apply(data: Document, params: dict[str, Any]) -> None:
    """Fields create and update share; an empty string unsets."""
    for field in ("active", "name", "shippable"):
        if field in params:
            data[field] = params[field]
    for field in ("description", "statement_descriptor", "tax_code", "unit_label", "url"):
        if field in params:
            data[field] = params[field] or None
    if "images" in params:
        data["images"] = params["images"] or []
    if "marketing_features" in params:
        data["marketing_features"] = [{"name": f["name"]} for f in params["marketing_features"] or []]
    if "package_dimensions" in params:
        data["package_dimensions"] = _package_dimensions(params["package_dimensions"])
    if "tax_details" in params:
        data["tax_details"] = _tax_details(params["tax_details"])


def create_product(store: Store, params: dict[str, Any], *, param_prefix: str = "") -> SandboxObject:
    """Insert a product; also serves `product_data` on price creation."""
    product_id = params.get("id") or store.new_id(OBJECT_TYPE)
    if store.session.get(SandboxObject, product_id) is not None:
        raise SandboxError(
            400,
            "Product already exists.",
            code="resource_already_exists",
            param=f"{param_prefix}[id]" if param_prefix else "id",
        )
    data: Document = {
        "id": product_id,
        "object": OBJECT_TYPE,
        "active": True,
        "created": store.now,
        "default_price": None,
        "description": None,
        "images": [],
        "livemode": False,
        "marketing_features": [],
        "metadata": metadata.initial(params.get("metadata")),
        "name": params["name"],
        "package_dimensions": None,
        "shippable": None,
        "statement_descriptor": None,
        "tax_code": None,
        "tax_details": None,
        "type": params.get("type", "service"),
        "unit_label": None,
        "updated": store.now,
        "url": None,
    }
    _apply(data, params)
    row = store.insert(OBJECT_TYPE, data)
    events.created(store, row)
    return row


def create(req: Request) -> Document:
    params = req.params
    row = create_product(req.store, params)
    if "default_price_data" in params:
        # Imported here: prices imports this module for `product_data`.
        from stripe_sandbox import prices

        price = prices.create_price(
            req.store, {**params["default_price_data"], "product": row.id}, param_prefix="default_price_data"
        )
        req.store.update(row, {**row.data, "default_price": price.id})
    return req.store.present(row)


def retrieve(req: Request) -> Document:
    return req.store.present(req.store.require(OBJECT_TYPE, req.path_params["id"]))


def update(req: Request) -> Document:
    params = req.params
    row = req.store.require(OBJECT_TYPE, req.path_params["id"], for_update=True)
    before = req.store.present(row)
    data = copy.deepcopy(row.data)
    _apply(data, params)
    if "metadata" in params:
        data["metadata"] = metadata.merged(data["metadata"], params["metadata"])
    if "default_price" in params:
        price = req.store.get("price", params["default_price"])
        if price is None or price.data["product"] != row.id:
            raise SandboxError(
                400,
                f"The price `{params['default_price']}` does not belong to product `{row.id}`.",
                param="default_price",
            )
        data["default_price"] = price.id
    data["updated"] = req.now
    req.store.update(row, data)
    events.updated(req.store, row, before)
    return req.store.present(row)


def delete(req: Request) -> Document:
    row = req.store.require(OBJECT_TYPE, req.path_params["id"], for_update=True)
    has_prices = req.store.session.scalar(
        select(SandboxObject.id)
        .where(SandboxObject.object_type == "price", SandboxObject.data["product"].as_string() == row.id)
        .limit(1)
    )
    if has_prices is not None:
        raise SandboxError(400, "This product cannot be deleted because it has one or more user-created prices.")
    stub = {"id": row.id, "object": OBJECT_TYPE, "deleted": True}
    last = req.store.present(row)
    req.store.mark_deleted(row, stub)
    events.deleted(req.store, row, last)
    return dict(stub)


def list_(req: Request) -> Document:
    params = req.params
    o = SandboxObject
    where = []
    if "active" in params:
        where.append(o.data["active"].as_boolean() == params["active"])
    if "shippable" in params:
        where.append(o.data["shippable"].as_boolean() == params["shippable"])
    if "type" in params:
        where.append(o.data["type"].as_string() == params["type"])
    if "url" in params:
        where.append(o.data["url"].as_string() == params["url"])
    if "ids" in params:
        where.append(o.id.in_(params["ids"]))
    return list_endpoint(req.store, params, OBJECT_TYPE, URL, where=where)


def register(router: Router) -> None:
    router.add_kind(KIND)
    router.add("POST", URL, create, ProductCreateParams)
    router.add("GET", URL, list_, ProductListParams)
    router.add("GET", URL + "/{id}", retrieve, ProductRetrieveParams)
    router.add("POST", URL + "/{id}", update, ProductUpdateParams)
    router.add("DELETE", URL + "/{id}", delete, ProductDeleteParams)
