"""Subscriptions: /v1/subscriptions, their billing, and what time does to them.

The stored document is the API shape except that each item's `price` holds
the price id: responses embed the price (and the legacy `plan`) as they are
when read, like Stripe's references. Items live inside their subscription.

Billing: creation invoices the first period (a 0 invoice for a trial) and,
for `charge_automatically`, charges the default payment method (the
subscription's, else the customer's invoice default). Item changes prorate
by the second, as pending invoice items or (`always_invoice`) an invoice
charged at once. Changes over time (trial end, renewal, cancel_at, incomplete
expiry, pause_collection.resumes_at) run in `advance()` when the clock reaches
the row's `due_at` (see clock.py), one transition at its own moment.

Every change records its events (customer.subscription.created/updated/
deleted/paused/resumed/trial_will_end, invoice.*, invoiceitem.created).
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
    SubscriptionResumeParams,
    SubscriptionRetrieveParams,
    SubscriptionUpdateParams,
)

from stripe_sandbox import events, invoicing, metadata, payment_methods, prices
from stripe_sandbox.errors import (
    SandboxError,
    no_payment_method,
    not_supported,
    parameter_missing,
    parameters_exclusive,
    resource_missing,
)
from stripe_sandbox.listing import list_endpoint, list_object
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.periods import add_interval, period_containing
from stripe_sandbox.router import Request, Router
from stripe_sandbox.store import INTERNAL, Document, ObjectKind, Store, random_token

OBJECT_TYPE = "subscription"
URL = "/v1/subscriptions"
ENDED = ("canceled", "incomplete_expired")
# Statuses whose periods renew (and whose item changes prorate).
BILLED = ("active", "past_due", "unpaid")
INCOMPLETE_EXPIRES_AFTER = 23 * 60 * 60  # Stripe expires an unpaid first invoice after 23 hours
TRIAL_WILL_END_BEFORE = 3 * 86400  # customer.subscription.trial_will_end, three days ahead
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
    "transfer_data", "trial_from_plan",
)
_UNSUPPORTED_ITEM = ("billing_thresholds", "clear_usage", "current_trial", "discounts", "tax_rates")
_UNSUPPORTED_PREVIEW_DETAILS = ("billing_cycle_anchor", "billing_mode", "billing_schedules", "default_tax_rates",
                                "pause", "resume_at", "start_date")


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


# -- state helpers --------------------------------------------------------------

def _internal(data: Document) -> Document:
    internal: Document = data.setdefault(INTERNAL, {})
    return internal


def due_at(data: Document) -> int | None:
    """When the subscription next changes without a request (see module docstring)."""
    if data["status"] in ENDED:
        return None
    moments: list[int] = []
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
        moments.append(_current_period_end(data))
    return min(moments) if moments else None


def _save(store: Store, row: SandboxObject, data: Document) -> None:
    store.update(row, data, due_at=due_at(data))


def _changed(store: Store, row: SandboxObject, before: Document) -> None:
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


def _payment_method(store: Store, data: Document, customer: SandboxObject) -> SandboxObject | None:
    """The payment method charges use: the subscription's default, else the customer's (if still attached)."""
    return (payment_methods.attached(store, customer.id, data["default_payment_method"])
            or payment_methods.attached(store, customer.id,
                                        customer.data.get("invoice_settings", {}).get("default_payment_method")))


def _needs_payment_method(store: Store, data: Document) -> bool:
    return data["collection_method"] == "charge_automatically" and _amount_due(data, _price_rows(store, data)) > 0


def _set_periods(data: Document, start: int, end: int) -> None:
    for item in data["items"]["data"]:
        item["current_period_start"] = start
        item["current_period_end"] = end


def _current_period(data: Document) -> tuple[int, int]:
    first = data["items"]["data"][0]
    return int(first["current_period_start"]), int(first["current_period_end"])


def _current_period_end(data: Document) -> int:
    return _current_period(data)[1]


def _cancel(data: Document, now: int, details: dict[str, Any] | None = None, *, scheduled: bool = False) -> None:
    data["status"] = "canceled"
    # A scheduled cancellation keeps the time it was requested (Stripe's `canceled_at`).
    if not (scheduled and data["canceled_at"] is not None):
        data["canceled_at"] = now
    data["ended_at"] = now
    data["cancellation_details"] = {
        "comment": (details or {}).get("comment") or data["cancellation_details"]["comment"],
        "feedback": (details or {}).get("feedback") or data["cancellation_details"]["feedback"],
        "reason": "cancellation_requested",
    }


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
    # Stripe's canceled_at: when the (still pending) cancellation was last requested.
    data["canceled_at"] = (now if "cancel_at" in params or "cancel_at_period_end" in params
                           else data["canceled_at"]) if scheduled else None


def _future_trial_end(value: int, now: int) -> int:
    if value <= now:
        raise SandboxError(400, "Invalid timestamp: must be an integer Unix timestamp in the future.",
                           param="trial_end")
    if value > now + MAX_TRIAL_SECONDS:
        raise SandboxError(400, "Invalid timestamp: can be no more than two years in the future.",
                           param="trial_end")
    return value


# -- billing ------------------------------------------------------------------------

def _item_lines(store: Store, data: Document, period: tuple[int, int], *, trial: bool = False) -> list[Document]:
    return [invoicing.subscription_line(store, data, item, store.present(price), period, trial=trial)
            for item, price in zip(data["items"]["data"], _price_rows(store, data), strict=True)]


def _invoice(store: Store, data: Document, customer: SandboxObject, billing_reason: str, lines: list[Document], *,
             period: tuple[int, int], invoice_id: str | None = None,
             proration_date: int | None = None) -> SandboxObject:
    """A draft invoice of `lines` and the pending items this subscription's invoices collect."""
    pending = invoicing.pending_items(store, customer.id, subscription_id=data["id"])
    return invoicing.create_invoice(
        store, customer=customer, subscription=data, billing_reason=billing_reason,
        collection_method=data["collection_method"], days_until_due=data["days_until_due"],
        currency=data["currency"], lines=lines, pending=pending, period=period, invoice_id=invoice_id,
        proration_date=proration_date)


def _bill(store: Store, data: Document, customer: SandboxObject, invoice: SandboxObject, *, attempt: bool = True,
          raise_on_failure: bool = False, preview: bool = False) -> str:
    """Finalize and collect a new invoice of this subscription.

    Returns "paid", "sent" (send_invoice: open until paid), "unattempted"
    (default_incomplete: open, no charge tried) or "failed" (declined, or no
    payment method). With `raise_on_failure` a failure raises its error, which
    rolls the whole request back (error_if_incomplete). A preview stops at the
    draft.
    """
    if preview:
        return "unattempted"
    invoicing.finalize(store, invoice)
    if invoice.data["status"] == "paid":
        return "paid"
    if data["collection_method"] == "send_invoice":
        return "sent"
    if not attempt:
        return "unattempted"
    error = invoicing.attempt_payment(store, invoice, _payment_method(store, data, customer))
    if error is None:
        return "paid"
    if raise_on_failure:
        raise error
    return "failed"


def _proration_item(store: Store, data: Document, customer_id: str, item: Document, at: int, end: int,
                    fraction: decimal.Decimal, *, credit: bool) -> SandboxObject | None:
    quantity = item["quantity"] or 0
    if quantity == 0:
        return None
    price_row = store.get(prices.OBJECT_TYPE, item["price"])
    assert price_row is not None
    price = store.present(price_row)
    unit = invoicing.to_decimal(price["unit_amount_decimal"]) * fraction
    name = invoicing.product_name(store, price["product"])
    amount = invoicing.round_amount(unit * quantity)
    words = "Unused time" if credit else "Remaining time"
    return invoicing.create_item(
        store, customer_id=customer_id, currency=price["currency"], quantity=quantity,
        unit_amount_decimal=-unit if credit else unit, amount=-amount if credit else amount,
        description=f"{words} on {quantity} × {name} after {invoicing.format_date(at)}",
        period=(at, end), price=price, subscription_id=data["id"], subscription_item_id=item["id"], proration=True)


def _prorate(store: Store, data: Document, customer_id: str, old_items: list[Document], new_items: list[Document],
             at: int, period: tuple[int, int]) -> list[SandboxObject]:
    """Pending invoice items for the rest of `period` from `at`: a credit for each changed or removed
    item's unused time, a charge for each changed or added item's remaining time (by the second)."""
    start, end = period
    if not start <= at < end:
        return []
    fraction = decimal.Decimal(end - at) / decimal.Decimal(end - start)
    old_by_id = {item["id"]: item for item in old_items}
    new_by_id = {item["id"]: item for item in new_items}

    def same(a: Document | None, b: Document | None) -> bool:
        return a is not None and b is not None and (a["price"], a["quantity"]) == (b["price"], b["quantity"])

    created = []
    for item in old_items:
        if not same(item, new_by_id.get(item["id"])):
            created.append(_proration_item(store, data, customer_id, item, at, end, fraction, credit=True))
    for item in new_items:
        if not same(old_by_id.get(item["id"]), item):
            created.append(_proration_item(store, data, customer_id, item, at, end, fraction, credit=False))
    return [row for row in created if row is not None]


def _next_period(store: Store, data: Document, after: int) -> tuple[int, int]:
    """The billing period that starts at `after` (a period end), per the cycle anchor."""
    _, interval, interval_count = _cadence(_price_rows(store, data))
    _, end = period_containing(data["billing_cycle_anchor"], interval, interval_count, after)
    return after, end


def _fresh_period(store: Store, data: Document, start: int) -> tuple[int, int]:
    """A new cycle anchored at `start` (trial end, interval change, resume with anchor=now)."""
    _, interval, interval_count = _cadence(_price_rows(store, data))
    data["billing_cycle_anchor"] = start
    period = (start, add_interval(start, interval, interval_count))
    _set_periods(data, *period)
    return period




def _settle(store: Store, data: Document, customer: SandboxObject, invoice: SandboxObject, *, attempt: bool,
            raise_on_failure: bool, preview: bool) -> SandboxObject:
    """Bill an invoice a request made (update, resume): an unpaid one leaves the subscription past_due."""
    data["latest_invoice"] = invoice.id
    outcome = _bill(store, data, customer, invoice, attempt=attempt, raise_on_failure=raise_on_failure,
                    preview=preview)
    if outcome in ("failed", "unattempted") and data["status"] in BILLED:
        data["status"] = "past_due"
    elif outcome == "paid" and data["status"] == "past_due":
        data["status"] = "active"
    return invoice


def _void_open_invoice(store: Store, data: Document) -> None:
    if data["latest_invoice"]:
        invoice = store.get(invoicing.INVOICE, data["latest_invoice"], for_update=True)
        if invoice is not None and invoice.data["status"] == "open":
            invoicing.void(store, invoice)


def _end_trial(store: Store, data: Document, customer: SandboxObject, at: int, *, billing_reason: str,
               attempt: bool = True, raise_on_failure: bool = False, preview: bool = False) -> SandboxObject | None:
    """The trial ends at `at`: a new cycle starts, invoiced and charged at once.

    Without a payment method, `trial_settings.end_behavior.missing_payment_method`
    decides: cancel, pause (Stripe's `paused` status, no invoice), or
    create_invoice (an open invoice, status past_due).
    """
    trial_period = _current_period(data)
    data["trial_end"] = at
    period = _fresh_period(store, data, at)
    if data["cancel_at_period_end"]:
        data["cancel_at"] = period[1]
    if not preview and _needs_payment_method(store, data) and _payment_method(store, data, customer) is None:
        behavior = data["trial_settings"]["end_behavior"]["missing_payment_method"]
        if behavior == "cancel":
            _cancel(data, at)
            return None
        if behavior == "pause":
            data["status"] = "paused"
            return None
    invoice = _invoice(store, data, customer, billing_reason, _item_lines(store, data, period),
                       period=(trial_period[0], at))
    data["latest_invoice"] = invoice.id
    outcome = _bill(store, data, customer, invoice, attempt=attempt, raise_on_failure=raise_on_failure,
                    preview=preview)
    data["status"] = "active" if outcome in ("paid", "sent") else "past_due"
    return invoice


def _renew(store: Store, data: Document, customer: SandboxObject) -> None:
    """The current period ended: the next one starts, invoiced in advance and collected."""
    old = _current_period(data)
    period = _next_period(store, data, old[1])
    _set_periods(data, *period)
    invoice = _invoice(store, data, customer, "subscription_cycle", _item_lines(store, data, period), period=old)
    data["latest_invoice"] = invoice.id
    pause = data["pause_collection"]
    if pause is not None:
        # Collection paused: the invoice stays a draft, or is finalized and voided / written off.
        if pause["behavior"] != "keep_as_draft":
            invoicing.finalize(store, invoice)
            if invoice.data["status"] == "open":
                if pause["behavior"] == "void":
                    invoicing.void(store, invoice)
                else:
                    invoicing.mark_uncollectible(store, invoice)
        return
    outcome = _bill(store, data, customer, invoice)
    data["status"] = "active" if outcome in ("paid", "sent") else "past_due"


def _trial_will_end(store: Store, data: Document) -> None:
    internal = _internal(data)
    if not internal.get("trial_will_end_sent"):
        internal["trial_will_end_sent"] = True
        events.record(store, "customer.subscription.trial_will_end", store.present_document(OBJECT_TYPE, data))


def advance(store: Store, row: SandboxObject) -> None:
    """What is due at `store.now` (the row's due_at), run by the clock."""
    at = store.now
    before = store.present(row)
    data = copy.deepcopy(row.data)
    customer = store.get("customer", data["customer"], include_deleted=True)
    assert customer is not None
    if data["status"] == "incomplete" and at >= data["created"] + INCOMPLETE_EXPIRES_AFTER:
        data.update(status="incomplete_expired", ended_at=at)
        _void_open_invoice(store, data)
    elif data["cancel_at"] is not None and at >= data["cancel_at"]:
        _cancel(data, data["cancel_at"], scheduled=True)
    else:
        pause = data["pause_collection"]
        if pause and pause["resumes_at"] and at >= pause["resumes_at"]:
            data["pause_collection"] = None
        if data["status"] == "trialing":
            if at >= data["trial_end"] - TRIAL_WILL_END_BEFORE:
                _trial_will_end(store, data)
            if at >= data["trial_end"]:
                _end_trial(store, data, customer, data["trial_end"], billing_reason="subscription_cycle")
        elif data["status"] in BILLED and at >= _current_period_end(data):
            _renew(store, data, customer)
    _save(store, row, data)
    _changed(store, row, before)


def invoice_paid(store: Store, invoice: Document) -> None:
    """An invoice was paid by request: the subscription waiting on it (incomplete, past_due) becomes active."""
    subscription_id = invoicing.subscription_of(invoice)
    row = store.get(OBJECT_TYPE, subscription_id, for_update=True) if subscription_id else None
    if row is None or row.data["latest_invoice"] != invoice["id"] or row.data["status"] not in ("incomplete",
                                                                                                "past_due"):
        return
    before = store.present(row)
    _save(store, row, {**copy.deepcopy(row.data), "status": "active"})
    _changed(store, row, before)


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


def _create(store: Store, params: dict[str, Any], *, preview: bool = False) -> tuple[SandboxObject, SandboxObject]:
    """Insert the subscription and bill its first invoice; returns both (a preview keeps the draft)."""
    now = store.now
    _reject(params, _UNSUPPORTED_CREATE)
    if "customer" not in params:
        raise parameter_missing("customer")
    customer = _customer(store, params["customer"])
    if not params.get("items"):
        raise parameter_missing("items")
    behavior = params.get("payment_behavior", "allow_incomplete")
    if behavior == "pending_if_incomplete":
        raise SandboxError(400, "`payment_behavior=pending_if_incomplete` can only be used when updating a "
                           "subscription.", param="payment_behavior")
    subscription_id = store.new_id(OBJECT_TYPE)
    items = [_new_item(store, subscription_id, spec, f"items[{i}]") for i, spec in enumerate(params["items"])]
    _check_distinct_prices(items)
    default_payment_method = None
    if params.get("default_payment_method"):
        default_payment_method = payment_methods.require_attached(
            store, customer.id, params["default_payment_method"], param="default_payment_method").id
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
        "default_payment_method": default_payment_method,
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
        INTERNAL: {"trial_will_end_sent": False},
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
        lines = _item_lines(store, data, (now, trial_end), trial=True)
    else:
        period = (now, add_interval(now, interval, interval_count))
        _set_periods(data, *period)
        lines = _item_lines(store, data, period)
        needs_payment = _needs_payment_method(store, data)
        if (needs_payment and behavior != "default_incomplete" and not preview
                and _payment_method(store, data, customer) is None):
            raise no_payment_method()
        # default_incomplete leaves the first invoice open for the customer to pay;
        # otherwise a failing charge raises below and nothing is created.
        data["status"] = "incomplete" if needs_payment and behavior == "default_incomplete" else "active"
    _schedule_cancel(data, params, now)
    invoice_id = store.new_id(invoicing.INVOICE)
    data["latest_invoice"] = invoice_id
    row = store.insert(OBJECT_TYPE, data, customer=customer.id, due_at=due_at(data))
    events.created(store, row)
    invoice = _invoice(store, data, customer, "subscription_create", lines, period=(now, now), invoice_id=invoice_id)
    _bill(store, data, customer, invoice, attempt=behavior != "default_incomplete", raise_on_failure=True,
          preview=preview)
    return row, invoice


def create(req: Request) -> Document:
    row, _ = _create(req.store, req.params)
    return req.store.present(row)


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


def _proration_date(params: dict[str, Any], period: tuple[int, int], now: int) -> int:
    if "proration_date" not in params:
        return now
    value = int(params["proration_date"])
    if not period[0] <= value <= period[1]:
        raise SandboxError(400, "The proration_date must be within the current billing period of the subscription.",
                           param="proration_date")
    return value


def _change_items(store: Store, data: Document, customer: SandboxObject, params: dict[str, Any], *,
                  attempt: bool, raise_on_failure: bool, preview: bool) -> SandboxObject | None:
    """Apply `items` changes with their prorations; returns the invoice billed now, if any."""
    now = store.now
    old_items = copy.deepcopy(data["items"]["data"])
    old_cadence = _cadence(_price_rows(store, data))[1:]
    period = _current_period(data)
    _apply_item_changes(store, data, params["items"])
    currency, interval, interval_count = _cadence(_price_rows(store, data))
    if currency != data["currency"]:
        raise SandboxError(400, "Currency and interval fields must match across all plans on this "
                           "subscription. Found mismatch in currency field.", param="items")
    data["items"]["total_count"] = len(data["items"]["data"])
    behavior = params.get("proration_behavior", "create_prorations")
    at = _proration_date(params, period, now)
    billed = data["status"] in BILLED
    billing = {"attempt": attempt, "raise_on_failure": raise_on_failure, "preview": preview}
    if (interval, interval_count) != old_cadence and data["status"] != "trialing":
        # A new billing interval restarts the cycle now (Stripe resets the anchor)
        # and invoices the new period at once, with a credit for the old one.
        if billed and behavior != "none":
            _prorate(store, data, customer.id, old_items, [], at, period)
        new_period = _fresh_period(store, data, now)
        if not billed:
            return None
        invoice = _invoice(store, data, customer, "subscription_update", _item_lines(store, data, new_period),
                           period=(now, now))
        return _settle(store, data, customer, invoice, **billing)
    _set_periods(data, *period)  # new items join the current period
    if not billed or behavior == "none":
        return None  # `none`: the new amounts apply from the next period
    prorations = _prorate(store, data, customer.id, old_items, data["items"]["data"], at, period)
    if behavior != "always_invoice" or not prorations:
        return None  # create_prorations: the next invoice collects them
    invoice = _invoice(store, data, customer, "subscription_update", [], period=(now, now),
                       proration_date=at if "proration_date" in params else None)
    return _settle(store, data, customer, invoice, **billing)


def _update(store: Store, row: SandboxObject, params: dict[str, Any], *, preview: bool = False) -> SandboxObject | None:
    """Apply an update to the row; returns the invoice it billed at once, if any."""
    now = store.now
    data = copy.deepcopy(row.data)
    if data["status"] in ENDED and set(params) - {"metadata", "cancellation_details", "expand"}:
        raise SandboxError(400, "A canceled subscription can only update its cancellation_details and metadata.")
    _reject(params, _UNSUPPORTED_UPDATE)
    behavior = params.get("payment_behavior", "allow_incomplete")
    if behavior == "pending_if_incomplete":
        raise SandboxError(400, "The Stripe sandbox does not support `payment_behavior=pending_if_incomplete` yet.",
                           param="payment_behavior")
    customer = store.get("customer", data["customer"], include_deleted=True)
    assert customer is not None

    if "metadata" in params:
        data["metadata"] = metadata.merged(data["metadata"], params["metadata"])
    if "description" in params:
        data["description"] = params["description"] or None
    if "default_payment_method" in params:
        value = params["default_payment_method"]
        if value:
            value = payment_methods.require_attached(store, customer.id, value, param="default_payment_method").id
        data["default_payment_method"] = value or None
    if "cancellation_details" in params:
        details = params["cancellation_details"]
        for field in ("comment", "feedback"):
            if field in details:
                data["cancellation_details"][field] = details[field] or None
    if data["status"] in ENDED:
        _save(store, row, data)
        return None

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

    # error_if_incomplete: a failed charge fails the request, which then changes nothing.
    billing = {"attempt": behavior != "default_incomplete", "raise_on_failure": behavior == "error_if_incomplete",
               "preview": preview}
    invoice = None
    if "items" in params:
        invoice = _change_items(store, data, customer, params, **billing)
    if "trial_end" in params:
        invoice = _update_trial_end(store, data, params["trial_end"], customer, **billing) or invoice
    if "cancel_at" in params or "cancel_at_period_end" in params:
        _schedule_cancel(data, params, now)
    elif data["cancel_at_period_end"]:
        data["cancel_at"] = _current_period_end(data)  # the period may have moved
    _save(store, row, data)
    return invoice


def update(req: Request) -> Document:
    row = req.store.require(OBJECT_TYPE, req.path_params["id"], for_update=True)
    before = req.store.present(row)
    _update(req.store, row, req.params)
    _changed(req.store, row, before)
    return req.store.present(row)


def _update_trial_end(store: Store, data: Document, value: Any, customer: SandboxObject, *, attempt: bool,
                      raise_on_failure: bool, preview: bool) -> SandboxObject | None:
    now = store.now
    if value == "now":
        if data["status"] != "trialing":
            return None
        _trial_will_end(store, data)  # Stripe sends it when a trial is ended early too
        return _end_trial(store, data, customer, now, billing_reason="subscription_update", attempt=attempt,
                          raise_on_failure=raise_on_failure, preview=preview)
    trial_end = _future_trial_end(value, now)
    if data["status"] != "trialing":
        data["trial_start"] = now
        start = now
    else:
        start = _current_period(data)[0]
    data.update(status="trialing", trial_end=trial_end, billing_cycle_anchor=trial_end)
    _internal(data)["trial_will_end_sent"] = False
    _set_periods(data, start, trial_end)
    return None


def resume(req: Request) -> Document:
    """Resume a `paused` subscription (a trial that ended without a payment method)."""
    params, store, now = req.params, req.store, req.now
    row = store.require(OBJECT_TYPE, req.path_params["id"], for_update=True)
    if row.data["status"] != "paused":
        raise SandboxError(400, f"Subscription {row.id} cannot be resumed because its status is "
                           f"{row.data['status']}; only `paused` subscriptions can be resumed.")
    before = store.present(row)
    data = copy.deepcopy(row.data)
    customer = store.get("customer", data["customer"], include_deleted=True)
    assert customer is not None
    if _needs_payment_method(store, data) and _payment_method(store, data, customer) is None:
        raise no_payment_method()
    # resume_on_payment_success: a failed charge fails the request and the subscription stays paused.
    raise_on_failure = params.get("payment_behavior") == "resume_on_payment_success"
    data["status"] = "active"
    if params.get("billing_cycle_anchor", {}).get("type", "now") == "now":
        period = _fresh_period(store, data, now)
        invoice = _invoice(store, data, customer, "subscription_update", _item_lines(store, data, period),
                           period=(now, now))
        _settle(store, data, customer, invoice, attempt=True, raise_on_failure=raise_on_failure, preview=False)
    else:
        _, interval, interval_count = _cadence(_price_rows(store, data))
        period = period_containing(data["billing_cycle_anchor"], interval, interval_count, now)
        _set_periods(data, *period)
        behavior = params.get("proration_behavior", "create_prorations")
        if behavior != "none":
            at = _proration_date(params, period, now)
            prorations = _prorate(store, data, customer.id, [], data["items"]["data"], at, period)
            if behavior == "always_invoice" and prorations:
                invoice = _invoice(store, data, customer, "subscription_update", [], period=(now, now))
                _settle(store, data, customer, invoice, attempt=True, raise_on_failure=raise_on_failure,
                        preview=False)
    if data["cancel_at_period_end"]:
        data["cancel_at"] = _current_period_end(data)
    _save(store, row, data)
    _changed(store, row, before)
    return store.present(row)


def cancel(req: Request) -> Document:
    store, params = req.store, req.params
    row = store.require(OBJECT_TYPE, req.path_params["id"], for_update=True)
    if row.data["status"] in ENDED:
        # Stripe no longer finds a subscription to cancel once it has ended.
        raise resource_missing("subscription", row.id)
    before = store.present(row)
    data = copy.deepcopy(row.data)
    customer = store.get("customer", data["customer"], include_deleted=True)
    assert customer is not None
    if params.get("prorate") and data["status"] in BILLED:
        _prorate(store, data, customer.id, data["items"]["data"], [], store.now, _current_period(data))
    if data["status"] == "incomplete":
        _void_open_invoice(store, data)  # as Stripe does: nothing is left to pay
    _cancel(data, store.now, params.get("cancellation_details"))
    if params.get("invoice_now") and not customer.deleted:
        # A final invoice of what is pending for this subscription (prorations).
        pending = invoicing.pending_items(store, customer.id, subscription_id=data["id"], include_unattached=False)
        if pending:
            invoice = invoicing.create_invoice(
                store, customer=customer, subscription=data, billing_reason="subscription_update",
                collection_method=data["collection_method"], days_until_due=data["days_until_due"],
                currency=data["currency"], lines=[], pending=pending)
            data["latest_invoice"] = invoice.id
            _bill(store, data, customer, invoice)
    _save(store, row, data)
    _changed(store, row, before)
    return store.present(row)


def cancel_all_for_customer(store: Store, customer_id: str) -> None:
    """Deleting a customer cancels its subscriptions immediately."""
    rows = store.session.scalars(
        select(SandboxObject)
        .where(SandboxObject.customer == customer_id, SandboxObject.object_type == OBJECT_TYPE)
        .order_by(SandboxObject.seq)
        .with_for_update())
    for row in rows:
        if row.data["status"] not in ENDED:
            before = store.present(row)
            data = copy.deepcopy(row.data)
            _cancel(data, store.now)
            _save(store, row, data)
            _changed(store, row, before)


# -- previews (POST /v1/invoices/create_preview) -------------------------------------

def _upcoming_none(customer_id: str) -> SandboxError:
    return SandboxError(404, f"No upcoming invoices for customer: {customer_id}", code="invoice_upcoming_none")


def _upcoming(store: Store, data: Document, customer: SandboxObject, *, include_pending: bool) -> SandboxObject:
    """The invoice the subscription's next renewal (or trial end) would make."""
    start, end = _current_period(data)
    if (data["status"] not in (*BILLED, "trialing") or (data["cancel_at"] is not None and data["cancel_at"] <= end)):
        raise _upcoming_none(customer.id)
    period = _next_period(store, data, end)
    pending = (invoicing.pending_items(store, customer.id, subscription_id=data["id"]) if include_pending else [])
    return invoicing.create_invoice(
        store, customer=customer, subscription=data, billing_reason="subscription_cycle",
        collection_method=data["collection_method"], days_until_due=data["days_until_due"],
        currency=data["currency"], lines=_item_lines(store, data, period), pending=pending, period=(start, end))


def preview_invoice(store: Store, params: dict[str, Any]) -> SandboxObject:
    """The draft invoice a preview describes, made for real: the caller rolls everything back.

    Previewing through the same code as the change itself keeps the two equal.
    """
    details = params.get("subscription_details", {})
    _reject(details, _UNSUPPORTED_PREVIEW_DETAILS, "subscription_details")
    mode = params.get("preview_mode", "next")
    customer_id = params.get("customer")
    if params.get("subscription"):
        row = store.get(OBJECT_TYPE, params["subscription"], for_update=True)
        if row is None:
            raise resource_missing("subscription", params["subscription"], param="subscription", status=400)
        if customer_id and customer_id != row.data["customer"]:
            raise SandboxError(400, f"The subscription {row.id} does not belong to the customer {customer_id}.",
                               param="subscription")
        customer = store.get("customer", row.data["customer"], include_deleted=True)
        assert customer is not None
        if row.data["status"] in ENDED:
            raise _upcoming_none(customer.id)
        if details.get("cancel_now"):
            data = copy.deepcopy(row.data)
            period = _current_period(data)
            if details.get("proration_behavior", "create_prorations") != "none" and data["status"] in BILLED:
                _prorate(store, data, customer.id, data["items"]["data"], [],
                         _proration_date(details, period, store.now), period)
            pending = invoicing.pending_items(store, customer.id, subscription_id=data["id"],
                                              include_unattached=False)
            return invoicing.create_invoice(
                store, customer=customer, subscription=data, billing_reason="subscription_update",
                collection_method=data["collection_method"], days_until_due=data["days_until_due"],
                currency=data["currency"], lines=[], pending=pending)
        update_params = {key: details[key] for key in ("items", "proration_behavior", "proration_date", "metadata",
                                                       "cancel_at", "cancel_at_period_end", "trial_end")
                         if key in details}
        immediate = _update(store, row, update_params, preview=True)
        if immediate is not None and mode == "next":
            return immediate
        return _upcoming(store, row.data, customer, include_pending=mode == "next")
    if not customer_id:
        raise parameter_missing("customer")
    if details.get("items"):
        create_params = {key: details[key] for key in ("items", "metadata", "cancel_at", "cancel_at_period_end",
                                                       "trial_end") if key in details}
        row, first = _create(store, {"customer": customer_id, **create_params}, preview=True)
        if mode == "next":
            return first
        customer = store.get("customer", customer_id)
        assert customer is not None
        return _upcoming(store, row.data, customer, include_pending=False)
    customer = _customer(store, customer_id)
    pending = invoicing.pending_items(store, customer.id, subscription_id=None)
    if not pending:
        raise SandboxError(400, f"Nothing to invoice for customer {customer.id}.",
                           code="invoice_no_customer_line_items", param="customer")
    return invoicing.create_invoice(
        store, customer=customer, subscription=None, billing_reason="manual", collection_method="charge_automatically",
        days_until_due=None, currency=pending[0].data["currency"], lines=[], pending=pending)


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


KIND = ObjectKind(object_type=OBJECT_TYPE, id_prefix="sub", noun="subscription", present=_present, advance=advance)


def register(router: Router) -> None:
    router.add_kind(KIND)
    router.add("POST", URL, create, SubscriptionCreateParams)
    router.add("GET", URL, list_, SubscriptionListParams)
    router.add("GET", URL + "/{id}", retrieve, SubscriptionRetrieveParams)
    router.add("POST", URL + "/{id}", update, SubscriptionUpdateParams)
    router.add("DELETE", URL + "/{id}", cancel, SubscriptionCancelParams)
    router.add("POST", URL + "/{id}/resume", resume, SubscriptionResumeParams)
