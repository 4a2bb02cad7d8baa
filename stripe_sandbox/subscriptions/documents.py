"""The subscription document: its shape, how it is presented, and the helpers that read it.

The stored document is the API shape except that each item's `price` holds
the price id; `present()` embeds the price (and the legacy `plan`) as they are
when read. Also here: the document of a new subscription and its settings
sub-objects, its item prices and cadence, its periods, when it is next due,
and saving a changed document with its events.
"""

from __future__ import annotations

import decimal
from typing import Any

from stripe_sandbox import events, metadata, payment_methods, prices
from stripe_sandbox.errors import SandboxError, not_supported, parameter_missing
from stripe_sandbox.listing import list_object
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.store import INTERNAL, Document, Store

OBJECT_TYPE = "subscription"
URL = "/v1/subscriptions"
ENDED = ("canceled", "incomplete_expired")
# Statuses whose periods renew (and whose item changes prorate).
BILLED = ("active", "past_due", "unpaid")
INCOMPLETE_EXPIRES_AFTER = 23 * 60 * 60  # Stripe expires an unpaid first invoice after 23 hours
# A pending update (payment_behavior=pending_if_incomplete) expires at the trial's or the period's end,
# or 23 hours after the update, whichever comes first (Stripe's pending updates reference, "Expiration").
PENDING_UPDATE_EXPIRES_AFTER = 23 * 60 * 60
TRIAL_WILL_END_BEFORE = 3 * 86400  # customer.subscription.trial_will_end, three days ahead
MAX_TRIAL_SECONDS = 730 * 86400


# -- presentation -------------------------------------------------------------


def legacy_plan(price: Document) -> Document:
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


def _present_items(store: Store, items: list[Document]) -> None:
    for item in items:
        row = store.get(prices.OBJECT_TYPE, item["price"])
        price = store.present(row) if row is not None else {"id": item["price"], "object": "price"}
        item["price"] = price
        item["plan"] = legacy_plan(price) if price.get("recurring") else None


def present(store: Store, data: Document) -> Document:
    _present_items(store, data["items"]["data"])
    if data.get("pending_update"):  # the items it would set are items too
        _present_items(store, data["pending_update"]["subscription_items"] or [])
    return data


def customer_subscriptions(store: Store, customer: Document) -> Document:
    """`expand[]=subscriptions` on a customer: its subscriptions that have not ended."""
    rows, has_more = store.list_page(
        OBJECT_TYPE, limit=10, customer=customer["id"], where=[SandboxObject.data["status"].as_string().not_in(ENDED)]
    )
    return list_object(f"/v1/customers/{customer['id']}/subscriptions", [store.present(row) for row in rows], has_more)


# -- state ----------------------------------------------------------------------


def internal_state(data: Document) -> Document:
    internal: Document = data.setdefault(INTERNAL, {})
    return internal


def due_at(data: Document) -> int | None:
    """When the subscription next changes without a request (see the package docstring)."""
    if data["status"] in ENDED:
        return None
    moments: list[int] = []
    if data.get("pending_update"):
        moments.append(data["pending_update"]["expires_at"])
    if data["cancel_at"] is not None:
        moments.append(data["cancel_at"])
    if data["status"] == "incomplete":
        # An incomplete subscription does not renew; it only expires.
        moments.append(data["created"] + INCOMPLETE_EXPIRES_AFTER)
        return min(moments)
    if data["pause_collection"] and data["pause_collection"]["resumes_at"]:
        moments.append(data["pause_collection"]["resumes_at"])
    if data["status"] == "trialing" and data["trial_end"] is not None:
        moments.append(data["trial_end"])
        if not data.get(INTERNAL, {}).get("trial_will_end_sent"):
            moments.append(max(data["trial_end"] - TRIAL_WILL_END_BEFORE, data["trial_start"] or data["created"]))
    elif data["status"] in BILLED:
        moments.append(current_period_end(data))
    return min(moments) if moments else None


def save(store: Store, row: SandboxObject, data: Document) -> None:
    store.update(row, data, due_at=due_at(data))


def changed(store: Store, row: SandboxObject, before: Document) -> None:
    """The events for a subscription that went from `before` (presented) to its current state."""
    old_status, new_status = before["status"], row.data["status"]
    if new_status in ENDED and old_status not in ENDED:
        events.deleted(store, row)
        return
    events.updated(store, row, before)
    if new_status == "paused" and old_status != "paused":
        events.record(store, "customer.subscription.paused", store.present(row))
    elif old_status == "paused" and new_status != "paused":
        events.record(store, "customer.subscription.resumed", store.present(row))


def mark_canceled(
    data: Document,
    now: int,
    details: dict[str, Any] | None = None,
    *,
    scheduled: bool = False,
    reason: str = "cancellation_requested",
) -> None:
    data["status"] = "canceled"
    # A scheduled cancellation keeps the time it was requested (Stripe's `canceled_at`).
    if not (scheduled and data["canceled_at"] is not None):
        data["canceled_at"] = now
    data["ended_at"] = now
    data["cancellation_details"] = {
        "comment": (details or {}).get("comment") or data["cancellation_details"]["comment"],
        "feedback": (details or {}).get("feedback") or data["cancellation_details"]["feedback"],
        "reason": reason,
    }


# -- customer, prices and payment ---------------------------------------------------


def require_customer(store: Store, customer_id: str) -> SandboxObject:
    """The `customer` a request names (a 400 if there is none)."""
    return store.require("customer", customer_id, param="customer", status=400)


def customer_of(store: Store, data: Document) -> SandboxObject:
    """The subscription's customer, deleted or not."""
    customer = store.get("customer", data["customer"], include_deleted=True)
    assert customer is not None
    return customer


def item_price_rows(store: Store, data: Document) -> list[SandboxObject]:
    rows = []
    for item in data["items"]["data"]:
        row = store.get(prices.OBJECT_TYPE, item["price"])
        assert row is not None, f"subscription {data['id']} references missing price {item['price']}"
        rows.append(row)
    return rows


def cadence(price_rows: list[SandboxObject]) -> tuple[str, str, int]:
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
                    400,
                    "Currency and interval fields must match across all plans on this "
                    f"subscription. Found mismatch in {field} field.",
                    param="items",
                )
    return first["currency"], first["recurring"]["interval"], first["recurring"]["interval_count"]


def amount_due(data: Document, price_rows: list[SandboxObject]) -> decimal.Decimal:
    total = decimal.Decimal(0)
    for item, row in zip(data["items"]["data"], price_rows, strict=True):
        total += decimal.Decimal(row.data["unit_amount_decimal"] or 0) * (item["quantity"] or 0)
    return total


def payment_method(store: Store, data: Document, customer: SandboxObject) -> SandboxObject | None:
    """The payment method charges use: the subscription's default, else the customer's (if still attached)."""
    return payment_methods.attached(store, customer.id, data["default_payment_method"]) or payment_methods.attached(
        store, customer.id, customer.data.get("invoice_settings", {}).get("default_payment_method")
    )


def needs_payment_method(store: Store, data: Document) -> bool:
    return data["collection_method"] == "charge_automatically" and amount_due(data, item_price_rows(store, data)) > 0


# -- periods ------------------------------------------------------------------------


def set_periods(data: Document, start: int, end: int) -> None:
    for item in data["items"]["data"]:
        item["current_period_start"] = start
        item["current_period_end"] = end


def current_period(data: Document) -> tuple[int, int]:
    first = data["items"]["data"][0]
    return int(first["current_period_start"]), int(first["current_period_end"])


def current_period_end(data: Document) -> int:
    return current_period(data)[1]


# -- parameters and settings -----------------------------------------------------------


def reject(params: dict[str, Any], names: tuple[str, ...], prefix: str = "") -> None:
    """Stripe parameters the emulator does not support: a clear error rather than a silent difference."""
    for name in names:
        if name in params:
            raise not_supported(f"{prefix}[{name}]" if prefix else name)


def payment_settings(value: dict[str, Any] | None) -> Document:
    value = value or {}
    return {
        "payment_method_options": value.get("payment_method_options") or None,
        "payment_method_types": value.get("payment_method_types") or None,
        "save_default_payment_method": value.get("save_default_payment_method", "off"),
    }


def automatic_tax(value: dict[str, Any] | None) -> Document:
    value = value or {}
    liability = value.get("liability")
    return {
        "disabled_reason": None,
        "enabled": value.get("enabled", False),
        "liability": {"account": liability.get("account"), "type": liability["type"]} if liability else None,
    }


def invoice_settings(current: Document, value: dict[str, Any]) -> Document:
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
        settings["issuer"] = {
            "type": value["issuer"]["type"],
            **({"account": value["issuer"]["account"]} if "account" in value["issuer"] else {}),
        }
    return settings


def billing_mode(value: dict[str, Any] | None, now: int) -> Document:
    # The pinned API version defaults new subscriptions to flexible billing mode.
    value = value or {}
    mode = value.get("type", "flexible")
    flexible = {"proration_discounts": value.get("flexible", {}).get("proration_discounts", "included")}
    return {"flexible": flexible if mode == "flexible" else None, "type": mode, "updated_at": now}


def trial_settings(value: dict[str, Any] | None) -> Document:
    end_behavior = (value or {}).get("end_behavior", {})
    return {
        "end_behavior": {
            "billing_cycle_anchor": end_behavior.get("billing_cycle_anchor"),
            "missing_payment_method": end_behavior.get("missing_payment_method", "create_invoice"),
        }
    }


def pending_invoice_item_interval(value: dict[str, Any] | None) -> Document | None:
    if not value:
        return None
    return {"interval": value["interval"], "interval_count": value.get("interval_count", 1)}


def apply_collection(data: Document, params: dict[str, Any]) -> None:
    """`collection_method` / `days_until_due`, shared by create and update."""
    if "collection_method" in params:
        data["collection_method"] = params["collection_method"]
    if "days_until_due" in params:
        data["days_until_due"] = params["days_until_due"]
    if data["collection_method"] == "send_invoice":
        if data["days_until_due"] is None:
            raise parameter_missing("days_until_due")
    elif "days_until_due" in params:
        raise SandboxError(
            400, "`days_until_due` can only be set when `collection_method=send_invoice`.", param="days_until_due"
        )
    else:
        data["days_until_due"] = None


def pause_collection(value: Any, now: int) -> Document | None:
    if not value:
        return None
    resumes_at = value.get("resumes_at")
    if resumes_at is not None and resumes_at <= now:
        raise SandboxError(
            400,
            "Invalid timestamp: must be an integer Unix timestamp in the future.",
            param="pause_collection[resumes_at]",
        )
    return {"behavior": value["behavior"], "resumes_at": resumes_at}


# -- a new subscription ------------------------------------------------------------------


def new_document(
    subscription_id: str,
    customer_id: str,
    items: list[Document],
    default_payment_method: str | None,
    params: dict[str, Any],
    now: int,
) -> Document:
    """A new subscription as `incomplete`, before its first period is set."""
    return {
        "id": subscription_id,
        "object": OBJECT_TYPE,
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": automatic_tax(params.get("automatic_tax")),
        "billing_cycle_anchor": now,
        "billing_cycle_anchor_config": None,
        "billing_mode": billing_mode(params.get("billing_mode"), now),
        "billing_schedules": [],
        "billing_thresholds": None,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically",
        "created": now,
        "currency": None,
        "customer": customer_id,
        "customer_account": None,
        "days_until_due": None,
        "default_payment_method": default_payment_method,
        "default_source": None,
        "default_tax_rates": [],
        "description": params.get("description") or None,
        "discounts": [],
        "ended_at": None,
        "invoice_settings": invoice_settings(
            {
                "account_tax_ids": None,
                "custom_fields": None,
                "description": None,
                "footer": None,
                "issuer": {"type": "self"},
            },
            params.get("invoice_settings", {}),
        ),
        "items": {
            "object": "list",
            "data": items,
            "has_more": False,
            "total_count": len(items),
            "url": f"/v1/subscription_items?subscription={subscription_id}",
        },
        "latest_invoice": None,
        "livemode": False,
        "managed_payments": None,
        "metadata": metadata.initial(params.get("metadata")),
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": payment_settings(params.get("payment_settings")),
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
        "trial_settings": trial_settings(params.get("trial_settings")),
        "trial_start": None,
        INTERNAL: {"trial_will_end_sent": False},
    }
