"""Subscription items: the `items[]` specs of create and update turned into item documents.

Items live inside their subscription's document (no rows of their own); an
item stores its price id.
"""

from __future__ import annotations

from typing import Any

from stripe_sandbox import metadata, prices
from stripe_sandbox.errors import SandboxError, parameter_missing, parameters_exclusive, resource_missing
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.store import Document, Store, random_token
from stripe_sandbox.subscriptions.documents import reject

UNSUPPORTED_ITEM = ("billing_thresholds", "clear_usage", "current_trial", "discounts", "tax_rates")


def item_price(store: Store, spec: dict[str, Any], prefix: str) -> SandboxObject | None:
    """The price an item spec names (`price`, legacy `plan`, or inline `price_data`)."""
    named = [key for key in ("price", "plan", "price_data") if key in spec]
    if len(named) > 1:
        raise parameters_exclusive(*(f"{prefix}[{key}]" for key in named))
    if not named:
        return None
    if "price_data" in spec:
        # Inline prices are created archived, so they stay out of price lists.
        return prices.create_price(store, spec["price_data"], param_prefix=f"{prefix}[price_data]", active=False)
    key = named[0]
    row = store.get(prices.OBJECT_TYPE, spec[key])
    if row is None:
        raise resource_missing("price" if key == "price" else "plan", spec[key], param=f"{prefix}[{key}]", status=400)
    if row.data["type"] != "recurring":
        raise SandboxError(
            400,
            "The price specified is set to `type=one_time` but this field only accepts prices with `type=recurring`.",
            param=f"{prefix}[{key}]",
        )
    if not row.data["active"]:
        raise SandboxError(
            400, "The price specified is inactive. This field only accepts active prices.", param=f"{prefix}[{key}]"
        )
    return row


def quantity(spec: dict[str, Any], prefix: str, default: int | None) -> int | None:
    value = spec.get("quantity", default)
    if value is not None and value < 0:
        raise SandboxError(400, "This value must be greater than or equal to 0.", param=f"{prefix}[quantity]")
    return value


def new_item(store: Store, subscription_id: str, spec: dict[str, Any], prefix: str) -> Document:
    reject(spec, UNSUPPORTED_ITEM, prefix)
    if spec.get("deleted"):
        raise parameter_missing(f"{prefix}[id]")
    price = item_price(store, spec, prefix)
    if price is None:
        raise parameter_missing(f"{prefix}[price]")
    return {
        "id": f"si_{random_token()}",
        "object": "subscription_item",
        "billed_until": None,
        "billing_thresholds": None,
        "created": store.now,
        "current_period_end": None,
        "current_period_start": None,
        "current_trial": None,
        "discounts": [],
        "metadata": metadata.initial(spec.get("metadata"), f"{prefix}[metadata]"),
        "price": price.id,
        "quantity": quantity(spec, prefix, 1),
        "subscription": subscription_id,
        "tax_rates": [],
    }


def check_distinct_prices(items: list[Document]) -> None:
    seen: set[str] = set()
    for item in items:
        if item["price"] in seen:
            raise SandboxError(
                400, f"Cannot add multiple subscription items with the same price: {item['price']}.", param="items"
            )
        seen.add(item["price"])


def apply_item_changes(store: Store, data: Document, changes: list[dict[str, Any]]) -> None:
    """Add, change and delete items as an update's `items[]` says (prorations are the caller's)."""
    items: list[Document] = data["items"]["data"]
    by_id = {item["id"]: item for item in items}
    for index, spec in enumerate(changes):
        prefix = f"items[{index}]"
        if "id" not in spec:
            items.append(new_item(store, data["id"], spec, prefix))
            continue
        reject(spec, UNSUPPORTED_ITEM, prefix)
        item = by_id.get(spec["id"])
        if item is None or item not in items:
            raise resource_missing("subscription item", spec["id"], param=f"{prefix}[id]", status=400)
        if spec.get("deleted"):
            items.remove(item)
            continue
        price = item_price(store, spec, prefix)
        if price is not None:
            item["price"] = price.id
        item["quantity"] = quantity(spec, prefix, item["quantity"])
        if "metadata" in spec:
            item["metadata"] = metadata.merged(item["metadata"], spec["metadata"], f"{prefix}[metadata]")
    if not items:
        raise SandboxError(
            400,
            "A subscription must have at least one active plan. To cancel a subscription, please use "
            "the cancel API endpoint on /v1/subscriptions.",
            param="items",
        )
    check_distinct_prices(items)
