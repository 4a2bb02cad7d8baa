"""Invoice previews of subscriptions (POST /v1/invoices/create_preview).

A preview is made for real, through the same code as the change itself (so
the two stay equal), and the caller rolls everything back.
"""

from __future__ import annotations

import copy
from typing import Any

from stripe_sandbox import invoice_engine, tax
from stripe_sandbox.errors import SandboxError, parameter_missing, resource_missing
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.store import Document, Store
from stripe_sandbox.subscriptions import lifecycle
from stripe_sandbox.subscriptions.billing_cycle import item_lines, next_period, prorate, proration_date
from stripe_sandbox.subscriptions.documents import (
    BILLED,
    ENDED,
    OBJECT_TYPE,
    current_period,
    customer_of,
    reject,
    require_customer,
)

UNSUPPORTED_PREVIEW_DETAILS = (
    "billing_cycle_anchor",
    "billing_mode",
    "billing_schedules",
    "default_tax_rates",
    "pause",
    "resume_at",
    "start_date",
)


def _upcoming_none(customer_id: str) -> SandboxError:
    return SandboxError(404, f"No upcoming invoices for customer: {customer_id}", code="invoice_upcoming_none")


def _upcoming(store: Store, data: Document, customer: SandboxObject, *, include_pending: bool) -> SandboxObject:
    """The invoice the subscription's next renewal (or trial end) would make."""
    start, end = current_period(data)
    if data["status"] not in (*BILLED, "trialing") or (data["cancel_at"] is not None and data["cancel_at"] <= end):
        raise _upcoming_none(customer.id)
    period = next_period(store, data, end)
    pending = invoice_engine.pending_items(store, customer.id, subscription_id=data["id"]) if include_pending else []
    row = invoice_engine.create_invoice(
        store,
        customer=customer,
        subscription=data,
        billing_reason="subscription_cycle",
        collection_method=data["collection_method"],
        days_until_due=data["days_until_due"],
        currency=data["currency"],
        lines=item_lines(store, data, period),
        pending=pending,
        period=(start, end),
        discounts=data["discounts"],
    )
    # As on Stripe, an upcoming invoice is dated when it will be created: the period's end.
    store.update(row, {**row.data, "created": end})
    return row


def _cancel_now(store: Store, row: SandboxObject, customer: SandboxObject, details: dict[str, Any]) -> SandboxObject:
    """`subscription_details[cancel_now]`: the final invoice of the prorations canceling now makes."""
    data = copy.deepcopy(row.data)
    period = current_period(data)
    if details.get("proration_behavior", "create_prorations") != "none" and data["status"] in BILLED:
        prorate(store, data, customer.id, data["items"]["data"], [], proration_date(details, period, store.now), period)
    pending = invoice_engine.pending_items(store, customer.id, subscription_id=data["id"], include_unattached=False)
    return lifecycle.invoice_of_pending(store, data, customer, pending)


def _existing_subscription(
    store: Store, subscription_id: str, customer_id: str | None, details: dict[str, Any], mode: str
) -> SandboxObject:
    """A change to an existing subscription: what it bills now (mode `next`), else its next renewal."""
    row = store.get(OBJECT_TYPE, subscription_id, for_update=True)
    if row is None:
        raise resource_missing("subscription", subscription_id, param="subscription", status=400)
    if customer_id and customer_id != row.data["customer"]:
        raise SandboxError(
            400, f"The subscription {row.id} does not belong to the customer {customer_id}.", param="subscription"
        )
    customer = customer_of(store, row.data)
    if row.data["status"] in ENDED:
        raise _upcoming_none(customer.id)
    if details.get("cancel_now"):
        return _cancel_now(store, row, customer, details)
    update_params: dict[str, Any] = {
        key: details[key]
        for key in (
            "automatic_tax",
            "items",
            "proration_behavior",
            "proration_date",
            "metadata",
            "cancel_at",
            "cancel_at_period_end",
            "trial_end",
        )
        if key in details
    }
    immediate = lifecycle.update(store, row, update_params, preview=True)
    if immediate is not None and mode == "next":
        return immediate
    return _upcoming(store, row.data, customer, include_pending=mode == "next")


def _new_subscription(store: Store, customer_id: str, details: dict[str, Any], mode: str) -> SandboxObject:
    """A subscription not created yet: its first invoice (mode `next`), else its first renewal."""
    create_params: dict[str, Any] = {
        key: details[key]
        for key in ("automatic_tax", "items", "metadata", "cancel_at", "cancel_at_period_end", "trial_end")
        if key in details
    }
    row, first = lifecycle.create(store, {"customer": customer_id, **create_params}, preview=True)
    if mode == "next":
        return first
    customer = store.get("customer", customer_id)
    assert customer is not None
    return _upcoming(store, row.data, customer, include_pending=False)


def _pending_items(store: Store, customer_id: str, automatic_tax: bool) -> SandboxObject:
    """No subscription: an invoice of the customer's pending items."""
    customer = require_customer(store, customer_id)
    pending = invoice_engine.pending_items(store, customer.id, subscription_id=None)
    if not pending:
        raise SandboxError(
            400,
            f"Nothing to invoice for customer {customer.id}.",
            code="invoice_no_customer_line_items",
            param="customer",
        )
    return invoice_engine.create_invoice(
        store,
        customer=customer,
        subscription=None,
        billing_reason="manual",
        collection_method="charge_automatically",
        days_until_due=None,
        currency=pending[0].data["currency"],
        lines=[],
        pending=pending,
        automatic_tax=automatic_tax,
    )


def preview_invoice(store: Store, params: dict[str, Any]) -> SandboxObject:
    """The draft invoice a preview describes, made for real: the caller rolls everything back."""
    details = params.get("subscription_details", {})
    reject(details, UNSUPPORTED_PREVIEW_DETAILS, "subscription_details")
    mode = params.get("preview_mode", "next")
    customer_id = params.get("customer")
    taxed = bool((params.get("automatic_tax") or {}).get("enabled"))
    if taxed:
        # Stripe Tax needs the customer's location before it previews anything.
        owner = customer_id or (
            store.require(OBJECT_TYPE, params["subscription"]).data["customer"] if params.get("subscription") else None
        )
        if owner:
            tax.require_location(require_customer(store, owner).data)
        details = {**details, "automatic_tax": params["automatic_tax"]}
    if params.get("subscription"):
        return _existing_subscription(store, params["subscription"], customer_id, details, mode)
    if not customer_id:
        raise parameter_missing("customer")
    if details.get("items"):
        return _new_subscription(store, customer_id, details, mode)
    return _pending_items(store, customer_id, taxed)
