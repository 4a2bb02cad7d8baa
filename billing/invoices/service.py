"""Invoice history with cursors, and previews through Stripe's create_preview."""

from __future__ import annotations

from typing import Any

import stripe
from stripe.params import (
    InvoiceCreatePreviewParams,
    InvoiceCreatePreviewParamsSubscriptionDetails,
    InvoiceCreatePreviewParamsSubscriptionDetailsItem,
)

from billing import replica, taxes
from billing.access import AccountAccess
from billing.errors import ApiError, validation_error
from billing.state import BillingState
from billing.subscriptions.invoice_limits import increase_proration
from billing.subscriptions.service import (
    TRIAL_DAYS,
    ItemChange,
    current_items,
    owned_subscription,
    plan_change,
    trial_eligible,
)


def _views(state: BillingState, invoices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored invoices (every line included), with the names of their products."""
    products = {
        ((line.get("pricing") or {}).get("price_details") or {}).get("product")
        for invoice in invoices
        for line in invoice["lines"]["data"]
    }
    names = replica.product_names(state.db, {p for p in products if isinstance(p, str)})
    return [{"invoice": invoice, "lines": invoice["lines"]["data"], "product_names": names} for invoice in invoices]


def _stored_view(text: str, product_names: dict[str, str]) -> dict[str, Any]:
    """What the invoice list's schema dumps for an invoice: its stored document as the copy's JSON
    text (parsed, as `_views` hands it over, only if that text was not dumped before) and its products' names."""
    return {"stored": text, "product_names": product_names}


def _check_cursor(state: BillingState, customer_id: str, invoice_id: str) -> None:
    """A cursor must be one of this customer's invoices (no paging through others')."""
    invoice = replica.invoice(state.db, invoice_id)
    if invoice is None or replica.customer_of(invoice) != customer_id:
        raise ApiError(422, "validation_failed", "Unknown cursor.", errors={"cursor": ["No such invoice."]})


def list_invoices(state: BillingState, ctx: AccountAccess, query: dict[str, Any]) -> dict[str, Any]:
    """Newest first, from the copy; `after`/`before` page from a cursor invoice."""
    replica.ensure_copied(state, [ctx.account])
    after, before = query.get("after"), query.get("before")
    for cursor in (after, before):
        if cursor:
            _check_cursor(state, ctx.customer_id, cursor)
    page, more = replica.named_invoices_page(state.db, ctx.customer_id, query["limit"], after=after, before=before)
    first, last = (page[0][0], page[-1][0]) if page else (None, None)
    if before:
        next_cursor, previous_cursor = last, first if more else None
    else:
        next_cursor, previous_cursor = last if more else None, first if after else None
    return {
        "data": [_stored_view(text, names) for _, text, names in page],
        "has_more": more,
        "next_cursor": next_cursor,
        "previous_cursor": previous_cursor,
    }


def preview_invoice(state: BillingState, ctx: AccountAccess, data: dict[str, Any]) -> dict[str, Any]:
    """What Stripe would bill for a new subscription, a change or a cancellation.
    Nothing is changed: this is Stripe's create_preview."""
    prices = state.prices
    items: list[dict[str, Any]] = data.get("items") or []
    params: InvoiceCreatePreviewParams = {"customer": ctx.customer_id}
    subscription_id = data.get("subscription_id")
    if not subscription_id:
        details: InvoiceCreatePreviewParamsSubscriptionDetails = {
            "items": [
                {
                    "price": prices.price_id(i["product_type"], ctx.currency, i.get("interval") or "month"),
                    "quantity": i["quantity"],
                }
                for i in items
                if i["quantity"] > 0
            ]
        }
        replica.ensure_copied(state, [ctx.account])
        if trial_eligible(state, ctx.workspace_id, replica.subscriptions(state.db, ctx.customer_id)):
            # The create would start a trial and charge nothing now: the first invoice
            # that charges is the trial-end one (Stripe's preview of the recurring
            # invoice, dated when it will be issued).
            details["trial_end"] = int(state.gateway.clock()) + TRIAL_DAYS * 86400
            params["preview_mode"] = "recurring"
        params["subscription_details"] = details
    else:
        subscription = owned_subscription(state, ctx, subscription_id)
        params["subscription"] = subscription.id
        if data.get("cancel_subscription"):
            # Cancelling ends service at period end and credits nothing.
            params["subscription_details"] = {"cancel_now": True, "proration_behavior": "none"}
        else:
            params["subscription_details"] = _change_details(state, subscription, ctx.currency, items)
    taxes.on_preview(state.config, params)
    preview = state.gateway.preview_invoice(params)
    data = preview.to_dict()
    data["lines"] = {"data": [line.to_dict() for line in preview.lines.data]}  # a preview has no more pages to read
    return _views(state, [data])[0]


def _preview_item(change: ItemChange) -> InvoiceCreatePreviewParamsSubscriptionDetailsItem:
    if change.item_id is None:
        return {"price": str(change.price), "quantity": change.quantity}
    if change.quantity == 0:
        return {"id": change.item_id, "deleted": True}
    return {"id": change.item_id, "quantity": change.quantity}


def _change_details(
    state: BillingState, subscription: stripe.Subscription, currency: str, items: list[dict[str, Any]]
) -> InvoiceCreatePreviewParamsSubscriptionDetails:
    """The PATCH plan for these items (the products not named keep their
    quantities): with increases, what is charged now; without, the next
    period's invoice at the new quantities."""
    existing = current_items(state, subscription)
    interval = next(iter(existing.values())).interval if existing else "month"
    if any(item.get("interval", interval) != interval for item in items):
        # No change can switch a subscription's interval (PATCH takes none): nothing to preview.
        raise validation_error({"items": [f"This subscription is billed every {interval}; its interval can't change."]})
    desired = {product: item.quantity for product, item in existing.items()}
    desired.update({item["product_type"]: item["quantity"] for item in items})
    plan = plan_change(state, subscription, currency, desired)
    if plan.raises:
        proration = increase_proration(state, subscription)
        return {"items": [_preview_item(c) for c in plan.raises], "proration_behavior": proration}
    return {"items": [_preview_item(c) for c in plan.cuts], "proration_behavior": "none"}
