"""Invoice history with cursors, and previews through Stripe's create_preview."""

from __future__ import annotations

from typing import Any

import stripe
from stripe.params import (
    InvoiceCreatePreviewParams,
    InvoiceCreatePreviewParamsSubscriptionDetails,
    InvoiceCreatePreviewParamsSubscriptionDetailsItem,
    InvoiceListParams,
)

from billing.access import AccountAccess
from billing.errors import ApiError
from billing.state import current
from billing.subscriptions.service import ItemChange, current_items, get_subscription, plan_change

STRIPE_PAGE = 100  # Stripe's largest page


def _view(invoices: list[stripe.Invoice]) -> list[dict[str, Any]]:
    """Invoices with every line (Stripe embeds only the first page) and product names."""
    gateway = current().gateway
    views: list[dict[str, Any]] = [
        {"invoice": inv.to_dict(), "lines": [line.to_dict() for line in gateway.invoice_lines(inv)]}
        for inv in invoices
    ]
    products = {
        ((line.get("pricing") or {}).get("price_details") or {}).get("product")
        for view in views for line in view["lines"]
    }
    names = current().prices.product_names({p for p in products if isinstance(p, str)})
    for view in views:
        view["product_names"] = names
    return views


def _check_cursor(customer_id: str, invoice_id: str) -> None:
    """A cursor must be one of this customer's invoices (no paging through others')."""
    invoice = current().gateway.retrieve_invoice(invoice_id)
    customer = invoice.customer if invoice else None
    if invoice is None or (customer if isinstance(customer, str) or customer is None else customer.id) != customer_id:
        raise ApiError(422, "validation_failed", "Unknown cursor.", errors={"cursor": ["No such invoice."]})


def list_invoices(ctx: AccountAccess, query: dict[str, Any]) -> dict[str, Any]:
    customer_id = ctx.customer_id
    limit: int = query["limit"]
    after, before = query.get("after"), query.get("before")
    for cursor in (after, before):
        if cursor:
            _check_cursor(customer_id, cursor)
    gateway = current().gateway
    collected: list[stripe.Invoice] = []
    more = False
    while len(collected) < limit:
        params: InvoiceListParams = {"customer": customer_id, "limit": min(STRIPE_PAGE, limit - len(collected)),
                                     "expand": ["data.discounts"]}
        if before:
            params["ending_before"] = collected[0].id if collected else before
        elif after or collected:
            params["starting_after"] = collected[-1].id if collected else str(after)
        page = gateway.list_invoices(params)
        collected = list(page.data) + collected if before else collected + list(page.data)
        more = page.has_more
        if not more or not page.data:
            break
    if before:
        next_cursor = collected[-1].id if collected else None
        previous_cursor = collected[0].id if collected and more else None
    else:
        next_cursor = collected[-1].id if collected and more else None
        previous_cursor = collected[0].id if collected and after else None
    return {"data": _view(collected), "has_more": more, "next_cursor": next_cursor,
            "previous_cursor": previous_cursor}


def preview_invoice(ctx: AccountAccess, data: dict[str, Any]) -> dict[str, Any]:
    """What Stripe would bill for a new subscription, a change or a cancellation.
    Nothing is changed: this is Stripe's create_preview."""
    prices = current().prices
    items: list[dict[str, Any]] = data.get("items") or []
    params: InvoiceCreatePreviewParams = {"customer": ctx.customer_id}
    subscription_id = data.get("subscription_id")
    if not subscription_id:
        params["subscription_details"] = {"items": [
            {"price": prices.price_id(i["product_type"], ctx.currency, i.get("interval") or "month"),
             "quantity": i["quantity"]}
            for i in items if i["quantity"] > 0
        ]}
    else:
        subscription = get_subscription(ctx, subscription_id)
        params["subscription"] = subscription.id
        if data.get("cancel_subscription"):
            # Cancelling ends service at period end and credits nothing.
            params["subscription_details"] = {"cancel_now": True, "proration_behavior": "none"}
        else:
            params["subscription_details"] = _change_details(subscription, ctx.currency, items)
    invoice = current().gateway.preview_invoice(params)
    return _view([invoice])[0]


def _preview_item(change: ItemChange) -> InvoiceCreatePreviewParamsSubscriptionDetailsItem:
    if change.item_id is None:
        return {"price": str(change.price), "quantity": change.quantity}
    if change.quantity == 0:
        return {"id": change.item_id, "deleted": True}
    return {"id": change.item_id, "quantity": change.quantity}


def _change_details(subscription: stripe.Subscription, currency: str,
                    items: list[dict[str, Any]]) -> InvoiceCreatePreviewParamsSubscriptionDetails:
    """The PATCH plan for these items (the products not named keep their
    quantities): with increases, what is charged now; without, the next
    period's invoice at the new quantities."""
    desired = {product: item.quantity for product, item in current_items(subscription).items()}
    desired.update({item["product_type"]: item["quantity"] for item in items})
    plan = plan_change(subscription, currency, desired)
    if plan.raises:
        return {"items": [_preview_item(c) for c in plan.raises], "proration_behavior": "always_invoice"}
    return {"items": [_preview_item(c) for c in plan.cuts], "proration_behavior": "none"}
