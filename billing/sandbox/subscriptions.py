"""Subscriptions: /v1/subscriptions.

The stored document is the API shape except that each item's `price` holds
the price id: responses embed the price (and the legacy `plan`) as they are
when read, like Stripe's references. Items live inside their subscription.

State changes over time (trial end, period roll-over, cancel_at, incomplete
expiry) are not run yet; everything they need is in the document (billing
cycle anchor, interval, trial settings) and `due_at()` tells when the next one
is due, stored on the row so advancing the clock can find due subscriptions
by index. `end_trial()` is the transition a trial end will reuse.
"""

from __future__ import annotations

import copy
import decimal
from typing import Any

from sqlalchemy import select
from stripe.params import (
    SubscriptionCancelParams,
    SubscriptionCreateParams,
    SubscriptionListParams,
    SubscriptionRetrieveParams,
    SubscriptionUpdateParams,
)

from billing.sandbox import metadata, prices
from billing.sandbox.errors import (
    SandboxError,
    not_supported,
    parameter_missing,
    parameters_exclusive,
    resource_missing,
)
from billing.sandbox.listing import list_endpoint, list_object
from billing.sandbox.models import SandboxObject
from billing.sandbox.periods import add_interval
from billing.sandbox.router import Request, Router
from billing.sandbox.store import Document, ObjectKind, Store, random_token

OBJECT_TYPE = "subscription"
URL = "/v1/subscriptions"
ENDED = ("canceled", "incomplete_expired")
INCOMPLETE_EXPIRES_AFTER = 23 * 60 * 60  # Stripe expires an unpaid first invoice after 23 hours
MAX_TRIAL_SECONDS = 730 * 86400

# Known to Stripe, not emulated: each would change amounts, periods or
# ownership in ways a response would have to show.
_UNSUPPORTED_CREATE = (
    "add_invoice_items", "application_fee_percent", "backdate_start_date", "billing_cycle_anchor",
    "billing_cycle_anchor_config", "billing_schedules", "billing_thresholds", "customer_account",
    "default_source", "default_tax_rates", "discounts", "on_behalf_of", "transfer_data",
)
_UNSUPPORTED_UPDATE = (
    "add_invoice_items", "application_fee_percent", "billing_cycle_anchor", "billing_schedules",
    "billing_thresholds", "default_source", "default_tax_rates", "discounts", "on_behalf_of",
    "proration_date", "transfer_data", "trial_from_plan",
)
_UNSUPPORTED_ITEM = ("billing_thresholds", "clear_usage", "current_trial", "discounts", "tax_rates")


# -- presentation -------------------------------------------------------------

def _plan(price: Document) -> Document:
    """The legacy `plan` Stripe still embeds next to a recurring price."""
    recurring = price["recurring"] or {}
    return {
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": price["billing_scheme"],
        "created": price["created"],
        "currency": price["currency"],
        "interval": recurring.get("interval"),
        "interval_count": recurring.get("interval_count"),
        "livemode": False,
        "metadata": price["metadata"],
        "meter": None,
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": recurring.get("trial_period_days"),
        "usage_type": recurring.get("usage_type", "licensed"),
    }


def _present(store: Store, data: Document) -> Document:
    for item in data["items"]["data"]:
        row = store.get(prices.OBJECT_TYPE, item["price"])
        price = store.present(row) if row is not None else {"id": item["price"], "object": "price"}
        item["price"] = price
        item["plan"] = _plan(price) if price.get("recurring") else None
    return data


def customer_subscriptions(store: Store, customer: Document) -> Document:
    """`expand[]=subscriptions` on a customer: its subscriptions that have not ended."""
    rows, has_more = store.list_page(
        OBJECT_TYPE, limit=10, customer=customer["id"],
        where=[SandboxObject.data["status"].as_string().not_in(ENDED)])
    return list_object(f"/v1/customers/{customer['id']}/subscriptions",
                       [store.present(row) for row in rows], has_more)


KIND = ObjectKind(object_type=OBJECT_TYPE, id_prefix="sub", noun="subscription", present=_present)


# -- state helpers --------------------------------------------------------------

def due_at(data: Document) -> int | None:
    """When the subscription next changes without a request (see module docstring)."""
    if data["status"] in ENDED:
        return None
    moments = [item["current_period_end"] for item in data["items"]["data"]]
    if data["cancel_at"] is not None:
        moments.append(data["cancel_at"])
    if data["status"] == "trialing" and data["trial_end"] is not None:
        moments.append(data["trial_end"])
    if data["status"] == "incomplete":
        moments.append(data["created"] + INCOMPLETE_EXPIRES_AFTER)
    if data["pause_collection"] and data["pause_collection"]["resumes_at"]:
        moments.append(data["pause_collection"]["resumes_at"])
    return min(moments) if moments else None


def _save(store: Store, row: SandboxObject, data: Document) -> None:
    store.update(row, data, due_at=due_at(data))


def _price_rows(store: Store, data: Document) -> list[SandboxObject]:
    rows = []
    for item in data["items"]["data"]:
        row = store.get(prices.OBJECT_TYPE, item["price"])
        assert row is not None, f"subscription {data['id']} references missing price {item['price']}"
        rows.append(row)
    return rows


def _cadence(price_rows: list[SandboxObject]) -> tuple[str, str, int]:
    """(currency, interval, interval_count) shared by all items, or Stripe's error."""
    first = price_rows[0].data
    for row in price_rows[1:]:
        for field, value, expected in (
            ("currency", row.data["currency"], first["currency"]),
            ("interval", row.data["recurring"]["interval"], first["recurring"]["interval"]),
            ("interval", row.data["recurring"]["interval_count"], first["recurring"]["interval_count"]),
        ):
            if value != expected:
                raise SandboxError(
                    400, "Currency and interval fields must match across all plans on this "
                    f"subscription. Found mismatch in {field} field.", param="items")
    return first["currency"], first["recurring"]["interval"], first["recurring"]["interval_count"]


def _amount_due(data: Document, price_rows: list[SandboxObject]) -> decimal.Decimal:
    total = decimal.Decimal(0)
    for item, row in zip(data["items"]["data"], price_rows, strict=True):
        total += decimal.Decimal(row.data["unit_amount_decimal"] or 0) * (item["quantity"] or 0)
    return total


def _has_payment_method(data: Document, customer: Document) -> bool:
    return bool(data["default_payment_method"] or customer["invoice_settings"]["default_payment_method"]
                or customer["default_source"])


def _set_periods(data: Document, start: int, end: int) -> None:
    for item in data["items"]["data"]:
        item["current_period_start"] = start
        item["current_period_end"] = end


def _current_period_end(data: Document) -> int:
    return int(data["items"]["data"][0]["current_period_end"])


def _cancel(data: Document, now: int, details: dict[str, Any] | None = None) -> None:
    data["status"] = "canceled"
    data["canceled_at"] = now
    data["ended_at"] = now
    data["cancellation_details"] = {
        "comment": (details or {}).get("comment") or data["cancellation_details"]["comment"],
        "feedback": (details or {}).get("feedback") or data["cancellation_details"]["feedback"],
        "reason": "cancellation_requested",
    }


def end_trial(data: Document, price_rows: list[SandboxObject], customer: Document, now: int) -> None:
    """The trial ends at `now`: a new cycle starts and the status follows the payment situation."""
    _, interval, interval_count = _cadence(price_rows)
    data["trial_end"] = now
    data["billing_cycle_anchor"] = now
    _set_periods(data, now, add_interval(now, interval, interval_count))
    if data["cancel_at_period_end"]:
        data["cancel_at"] = _current_period_end(data)
    if (data["collection_method"] == "send_invoice" or _has_payment_method(data, customer)
            or _amount_due(data, price_rows) == 0):
        data["status"] = "active"
        return
    behavior = data["trial_settings"]["end_behavior"]["missing_payment_method"]
    if behavior == "cancel":
        _cancel(data, now)
    elif behavior == "pause":
        data["status"] = "paused"
    else:  # create_invoice: the invoice cannot be charged without a payment method
        data["status"] = "past_due"


def _schedule_cancel(data: Document, params: dict[str, Any], now: int) -> None:
    """`cancel_at` / `cancel_at_period_end`, shared by create and update."""
    if "cancel_at" in params and params.get("cancel_at_period_end"):
        raise parameters_exclusive("cancel_at", "cancel_at_period_end")
    if "cancel_at_period_end" in params:
        data["cancel_at_period_end"] = params["cancel_at_period_end"]
        data["cancel_at"] = _current_period_end(data) if params["cancel_at_period_end"] else None
    if "cancel_at" in params:
        cancel_at = params["cancel_at"]
        data["cancel_at_period_end"] = False
        if cancel_at == "":
            data["cancel_at"] = None
        elif isinstance(cancel_at, str):  # min_period_end / max_period_end / max_billed_until
            data["cancel_at"] = _current_period_end(data)
        elif cancel_at <= now:
            raise SandboxError(400, "Invalid timestamp: must be an integer Unix timestamp in the future.",
                               param="cancel_at")
        else:
            data["cancel_at"] = cancel_at
    scheduled = data["cancel_at"] is not None
    data["cancellation_details"]["reason"] = "cancellation_requested" if scheduled else None


def _future_trial_end(value: int, now: int) -> int:
    if value <= now:
        raise SandboxError(400, "Invalid timestamp: must be an integer Unix timestamp in the future.",
                           param="trial_end")
    if value > now + MAX_TRIAL_SECONDS:
        raise SandboxError(400, "Invalid timestamp: can be no more than two years in the future.",
                           param="trial_end")
    return value


# -- items --------------------------------------------------------------------------

def _reject(params: dict[str, Any], names: tuple[str, ...], prefix: str = "") -> None:
    for name in names:
        if name in params:
            raise not_supported(f"{prefix}[{name}]" if prefix else name)


def _item_price(store: Store, spec: dict[str, Any], prefix: str) -> SandboxObject | None:
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
        raise resource_missing("price" if key == "price" else "plan", spec[key], param=f"{prefix}[{key}]",
                               status=400)
    if row.data["type"] != "recurring":
        raise SandboxError(
            400, "The price specified is set to `type=one_time` but this field only accepts prices "
            "with `type=recurring`.", param=f"{prefix}[{key}]")
    if not row.data["active"]:
        raise SandboxError(400, "The price specified is inactive. This field only accepts active prices.",
                           param=f"{prefix}[{key}]")
    return row


def _quantity(spec: dict[str, Any], prefix: str, default: int | None) -> int | None:
    quantity = spec.get("quantity", default)
    if quantity is not None and quantity < 0:
        raise SandboxError(400, "This value must be greater than or equal to 0.", param=f"{prefix}[quantity]")
    return quantity


def _new_item(store: Store, subscription_id: str, spec: dict[str, Any], prefix: str) -> Document:
    _reject(spec, _UNSUPPORTED_ITEM, prefix)
    if spec.get("deleted"):
        raise parameter_missing(f"{prefix}[id]")
    price = _item_price(store, spec, prefix)
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
        "quantity": _quantity(spec, prefix, 1),
        "subscription": subscription_id,
        "tax_rates": [],
    }


def _check_distinct_prices(items: list[Document]) -> None:
    seen: set[str] = set()
    for item in items:
        if item["price"] in seen:
            raise SandboxError(
                400, f"Cannot add multiple subscription items with the same price: {item['price']}.",
                param="items")
        seen.add(item["price"])


def _apply_item_changes(store: Store, data: Document, changes: list[dict[str, Any]]) -> None:
    items: list[Document] = data["items"]["data"]
    by_id = {item["id"]: item for item in items}
    for index, spec in enumerate(changes):
        prefix = f"items[{index}]"
        if "id" not in spec:
            items.append(_new_item(store, data["id"], spec, prefix))
            continue
        _reject(spec, _UNSUPPORTED_ITEM, prefix)
        item = by_id.get(spec["id"])
        if item is None or item not in items:
            raise resource_missing("subscription item", spec["id"], param=f"{prefix}[id]", status=400)
        if spec.get("deleted"):
            items.remove(item)
            continue
        price = _item_price(store, spec, prefix)
        if price is not None:
            item["price"] = price.id
        item["quantity"] = _quantity(spec, prefix, item["quantity"])
        if "metadata" in spec:
            item["metadata"] = metadata.merged(item["metadata"], spec["metadata"], f"{prefix}[metadata]")
    if not items:
        raise SandboxError(
            400, "A subscription must have at least one active plan. To cancel a subscription, please use "
            "the cancel API endpoint on /v1/subscriptions.", param="items")
    _check_distinct_prices(items)


# -- handlers -----------------------------------------------------------------------

def _payment_settings(value: dict[str, Any] | None) -> Document:
    value = value or {}
    return {
        "payment_method_options": value.get("payment_method_options") or None,
        "payment_method_types": value.get("payment_method_types") or None,
        "save_default_payment_method": value.get("save_default_payment_method", "off"),
    }


def _automatic_tax(value: dict[str, Any] | None) -> Document:
    value = value or {}
    liability = value.get("liability")
    return {
        "disabled_reason": None,
        "enabled": value.get("enabled", False),
        "liability": {"account": liability.get("account"), "type": liability["type"]} if liability else None,
    }


def _invoice_settings(current: Document, value: dict[str, Any]) -> Document:
    settings = dict(current)
    if "account_tax_ids" in value:
        settings["account_tax_ids"] = value["account_tax_ids"] or None
    if "custom_fields" in value:
        fields = value["custom_fields"]
        settings["custom_fields"] = [{"name": f["name"], "value": f["value"]} for f in fields] if fields else None
    for field in ("description", "footer"):
        if field in value:
            settings[field] = value[field] or None
    if "issuer" in value:
        settings["issuer"] = {"type": value["issuer"]["type"], **(
            {"account": value["issuer"]["account"]} if "account" in value["issuer"] else {})}
    return settings


def _billing_mode(value: dict[str, Any] | None, now: int) -> Document:
    # The pinned API version defaults new subscriptions to flexible billing mode.
    value = value or {}
    mode = value.get("type", "flexible")
    flexible = {"proration_discounts": value.get("flexible", {}).get("proration_discounts", "included")}
    return {"flexible": flexible if mode == "flexible" else None, "type": mode, "updated_at": now}


def _trial_settings(value: dict[str, Any] | None) -> Document:
    end_behavior = (value or {}).get("end_behavior", {})
    return {"end_behavior": {
        "billing_cycle_anchor": end_behavior.get("billing_cycle_anchor"),
        "missing_payment_method": end_behavior.get("missing_payment_method", "create_invoice"),
    }}


def _collection(data: Document, params: dict[str, Any]) -> None:
    if "collection_method" in params:
        data["collection_method"] = params["collection_method"]
    if "days_until_due" in params:
        data["days_until_due"] = params["days_until_due"]
    if data["collection_method"] == "send_invoice":
        if data["days_until_due"] is None:
            raise parameter_missing("days_until_due")
    elif "days_until_due" in params:
        raise SandboxError(400, "`days_until_due` can only be set when `collection_method=send_invoice`.",
                           param="days_until_due")
    else:
        data["days_until_due"] = None


def _pause_collection(value: Any, now: int) -> Document | None:
    if not value:
        return None
    resumes_at = value.get("resumes_at")
    if resumes_at is not None and resumes_at <= now:
        raise SandboxError(400, "Invalid timestamp: must be an integer Unix timestamp in the future.",
                           param="pause_collection[resumes_at]")
    return {"behavior": value["behavior"], "resumes_at": resumes_at}


def _customer(store: Store, customer_id: str) -> SandboxObject:
    return store.require("customer", customer_id, param="customer", status=400)


def create(req: Request) -> Document:
    params, store, now = req.params, req.store, req.now
    _reject(params, _UNSUPPORTED_CREATE)
    if "customer" not in params:
        raise parameter_missing("customer")
    customer = _customer(store, params["customer"])
    if not params.get("items"):
        raise parameter_missing("items")
    if params.get("payment_behavior") == "pending_if_incomplete":
        raise SandboxError(400, "`payment_behavior=pending_if_incomplete` can only be used when updating a "
                           "subscription.", param="payment_behavior")
    subscription_id = store.new_id(OBJECT_TYPE)
    items = [_new_item(store, subscription_id, spec, f"items[{i}]") for i, spec in enumerate(params["items"])]
    _check_distinct_prices(items)
    data: Document = {
        "id": subscription_id,
        "object": OBJECT_TYPE,
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": _automatic_tax(params.get("automatic_tax")),
        "billing_cycle_anchor": now,
        "billing_cycle_anchor_config": None,
        "billing_mode": _billing_mode(params.get("billing_mode"), now),
        "billing_schedules": [],
        "billing_thresholds": None,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically",
        "created": now,
        "currency": None,
        "customer": customer.id,
        "customer_account": None,
        "days_until_due": None,
        "default_payment_method": params.get("default_payment_method") or None,
        "default_source": None,
        "default_tax_rates": [],
        "description": params.get("description") or None,
        "discounts": [],
        "ended_at": None,
        "invoice_settings": _invoice_settings(
            {"account_tax_ids": None, "custom_fields": None, "description": None, "footer": None,
             "issuer": {"type": "self"}},
            params.get("invoice_settings", {})),
        "items": {"object": "list", "data": items, "has_more": False, "total_count": len(items),
                  "url": f"/v1/subscription_items?subscription={subscription_id}"},
        "latest_invoice": None,
        "livemode": False,
        "managed_payments": None,
        "metadata": metadata.initial(params.get("metadata")),
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": _payment_settings(params.get("payment_settings")),
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "presentment_details": None,
        "schedule": None,
        "start_date": now,
        "status": "incomplete",
        "status_details": None,
        "test_clock": None,
        "transfer_data": None,
        "trial_end": None,
        "trial_settings": _trial_settings(params.get("trial_settings")),
        "trial_start": None,
    }
    _collection(data, params)
    price_rows = _price_rows(store, data)
    currency, interval, interval_count = _cadence(price_rows)
    if params.get("currency", currency).lower() != currency:
        raise not_supported("currency")
    data["currency"] = currency
    if "pending_invoice_item_interval" in params and params["pending_invoice_item_interval"]:
        pending = params["pending_invoice_item_interval"]
        data["pending_invoice_item_interval"] = {"interval": pending["interval"],
                                                 "interval_count": pending.get("interval_count", 1)}

    trial_end = _trial_end_at_creation(params, price_rows, now)
    if trial_end is not None:
        data.update(status="trialing", trial_start=now, trial_end=trial_end, billing_cycle_anchor=trial_end)
        _set_periods(data, now, trial_end)
    else:
        _set_periods(data, now, add_interval(now, interval, interval_count))
        if (data["collection_method"] == "send_invoice" or _has_payment_method(data, customer.data)
                or _amount_due(data, price_rows) == 0):
            data["status"] = "active"
        elif params.get("payment_behavior") == "default_incomplete":
            data["status"] = "incomplete"
        else:
            raise SandboxError(
                400, "This customer has no attached payment source or default payment method. Please "
                "consider adding a default payment method. For more information, visit "
                "https://stripe.com/docs/billing/subscriptions/payment-methods-setting#payment-method-priority.")
    _schedule_cancel(data, params, now)
    row = store.insert(OBJECT_TYPE, data, customer=customer.id, due_at=due_at(data))
    return store.present(row)


def _trial_end_at_creation(params: dict[str, Any], price_rows: list[SandboxObject], now: int) -> int | None:
    if "trial_end" in params and "trial_period_days" in params:
        raise parameters_exclusive("trial_end", "trial_period_days")
    if "trial_end" in params:
        return None if params["trial_end"] == "now" else _future_trial_end(params["trial_end"], now)
    if "trial_period_days" in params:
        days = params["trial_period_days"]
        if not 0 <= days <= 730:
            raise SandboxError(400, "Invalid trial_period_days: must be between 0 and 730.",
                               param="trial_period_days")
        return now + days * 86400 if days else None
    if params.get("trial_from_plan"):
        days = max((row.data["recurring"]["trial_period_days"] or 0) for row in price_rows)
        return now + days * 86400 if days else None
    return None


def retrieve(req: Request) -> Document:
    return req.store.present(req.store.require(OBJECT_TYPE, req.path_params["id"]))


def update(req: Request) -> Document:
    params, store, now = req.params, req.store, req.now
    row = store.require(OBJECT_TYPE, req.path_params["id"], for_update=True)
    data = copy.deepcopy(row.data)
    if data["status"] in ENDED and set(params) - {"metadata", "cancellation_details", "expand"}:
        raise SandboxError(400, "A canceled subscription can only update its cancellation_details and metadata.")
    _reject(params, _UNSUPPORTED_UPDATE)
    customer = store.get("customer", data["customer"], include_deleted=True)
    assert customer is not None

    if "metadata" in params:
        data["metadata"] = metadata.merged(data["metadata"], params["metadata"])
    if "description" in params:
        data["description"] = params["description"] or None
    if "default_payment_method" in params:
        data["default_payment_method"] = params["default_payment_method"] or None
    if "cancellation_details" in params:
        details = params["cancellation_details"]
        for field in ("comment", "feedback"):
            if field in details:
                data["cancellation_details"][field] = details[field] or None
    if data["status"] in ENDED:
        _save(store, row, data)
        return store.present(row)

    _collection(data, params)
    if "pause_collection" in params:
        data["pause_collection"] = _pause_collection(params["pause_collection"], now)
    if "payment_settings" in params:
        data["payment_settings"] = _payment_settings(params["payment_settings"])
    if "automatic_tax" in params:
        data["automatic_tax"] = _automatic_tax(params["automatic_tax"])
    if "invoice_settings" in params:
        data["invoice_settings"] = _invoice_settings(data["invoice_settings"], params["invoice_settings"])
    if "trial_settings" in params:
        data["trial_settings"] = _trial_settings(params["trial_settings"])
    if "pending_invoice_item_interval" in params:
        pending = params["pending_invoice_item_interval"]
        data["pending_invoice_item_interval"] = {
            "interval": pending["interval"], "interval_count": pending.get("interval_count", 1)} if pending else None

    if "items" in params:
        old_cadence = _cadence(_price_rows(store, data))[1:]
        first = data["items"]["data"][0]
        period = (first["current_period_start"], first["current_period_end"])
        _apply_item_changes(store, data, params["items"])
        currency, interval, interval_count = _cadence(_price_rows(store, data))
        if currency != data["currency"]:
            raise SandboxError(400, "Currency and interval fields must match across all plans on this "
                               "subscription. Found mismatch in currency field.", param="items")
        if (interval, interval_count) != old_cadence and data["status"] != "trialing":
            # A new billing interval restarts the cycle now (Stripe resets the anchor).
            data["billing_cycle_anchor"] = now
            period = (now, add_interval(now, interval, interval_count))
        _set_periods(data, *period)  # new items join the current period
        data["items"]["total_count"] = len(data["items"]["data"])

    if "trial_end" in params:
        _update_trial_end(data, params["trial_end"], _price_rows(store, data), customer.data, now)
    if "cancel_at" in params or "cancel_at_period_end" in params:
        _schedule_cancel(data, params, now)
    elif data["cancel_at_period_end"]:
        data["cancel_at"] = _current_period_end(data)  # the period may have moved
    _save(store, row, data)
    return store.present(row)


def _update_trial_end(data: Document, value: Any, price_rows: list[SandboxObject], customer: Document,
                      now: int) -> None:
    if value == "now":
        if data["status"] == "trialing":
            end_trial(data, price_rows, customer, now)
        return
    trial_end = _future_trial_end(value, now)
    if data["status"] != "trialing":
        data["trial_start"] = now
        start = now
    else:
        start = data["items"]["data"][0]["current_period_start"]
    data.update(status="trialing", trial_end=trial_end, billing_cycle_anchor=trial_end)
    _set_periods(data, start, trial_end)


def cancel(req: Request) -> Document:
    row = req.store.require(OBJECT_TYPE, req.path_params["id"], for_update=True)
    if row.data["status"] in ENDED:
        # Stripe no longer finds a subscription to cancel once it has ended.
        raise resource_missing("subscription", row.id)
    data = copy.deepcopy(row.data)
    _cancel(data, req.now, req.params.get("cancellation_details"))
    _save(req.store, row, data)
    return req.store.present(row)


def cancel_all_for_customer(store: Store, customer_id: str) -> None:
    """Deleting a customer cancels its subscriptions immediately."""
    rows = store.session.scalars(
        select(SandboxObject)
        .where(SandboxObject.customer == customer_id, SandboxObject.object_type == OBJECT_TYPE)
        .with_for_update())
    for row in rows:
        if row.data["status"] not in ENDED:
            data = copy.deepcopy(row.data)
            _cancel(data, store.now)
            _save(store, row, data)


def list_(req: Request) -> Document:
    params = req.params
    _reject(params, ("customer_account", "test_clock"))
    o = SandboxObject
    where = []
    status = params.get("status")
    if status is None:
        where.append(o.data["status"].as_string() != "canceled")
    elif status == "ended":
        where.append(o.data["status"].as_string().in_(ENDED))
    elif status != "all":
        where.append(o.data["status"].as_string() == status)
    if "collection_method" in params:
        where.append(o.data["collection_method"].as_string() == params["collection_method"])
    if "automatic_tax" in params:
        where.append(o.data[("automatic_tax", "enabled")].as_boolean() == params["automatic_tax"]["enabled"])

    wanted_price = params.get("price") or params.get("plan")
    period_filters = {field: params[field] for field in ("current_period_start", "current_period_end")
                      if field in params}

    def matches(data: Document) -> bool:
        items = data["items"]["data"]
        if wanted_price and all(item["price"] != wanted_price for item in items):
            return False
        for field, bound in period_filters.items():
            value = items[0][field]
            if isinstance(bound, int):
                bound = {"gte": bound, "lte": bound}
            checks = {"gt": value.__gt__, "gte": value.__ge__, "lt": value.__lt__, "lte": value.__le__}
            if not all(checks[op](limit) for op, limit in bound.items()):
                return False
        return True

    predicate = matches if wanted_price or period_filters else None
    return list_endpoint(req.store, params, OBJECT_TYPE, URL, customer=params.get("customer"),
                         where=where, predicate=predicate)


def register(router: Router) -> None:
    router.add_kind(KIND)
    router.add("POST", URL, create, SubscriptionCreateParams)
    router.add("GET", URL, list_, SubscriptionListParams)
    router.add("GET", URL + "/{id}", retrieve, SubscriptionRetrieveParams)
    router.add("POST", URL + "/{id}", update, SubscriptionUpdateParams)
    router.add("DELETE", URL + "/{id}", cancel, SubscriptionCancelParams)
