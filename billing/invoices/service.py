"""Invoice history with cursors, and previews through Stripe's create_preview."""

from __future__ import annotations

from typing import Any

import stripe
from stripe.params import InvoiceCreatePreviewParams, InvoiceListParams

from billing.access import Access, account_in_workspace
from billing.errors import ApiError
from billing.state import current
from billing.subscriptions.service import current_items, get_subscription

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


def list_invoices(access: Access, customer_id: str, query: dict[str, Any]) -> dict[str, Any]:
    account_in_workspace(access.workspace.id, customer_id)
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


def preview_invoice(access: Access, customer_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """What Stripe would bill for a new subscription, a change or a cancellation.
    Nothing is changed: this is Stripe's create_preview."""
    row = account_in_workspace(access.workspace.id, customer_id)
    prices = current().prices
    items: list[dict[str, Any]] = data.get("items") or []
    params: InvoiceCreatePreviewParams = {"customer": customer_id}
    subscription_id = data.get("subscription_id")
    if not subscription_id:
        params["subscription_details"] = {"items": [
            {"price": prices.price_id(i["product_type"], row.currency, i.get("interval") or "month"),
             "quantity": i["quantity"]}
            for i in items if i["quantity"] > 0
        ]}
    else:
        subscription = get_subscription(access, customer_id, subscription_id)
        params["subscription"] = subscription.id
        if data.get("cancel_subscription"):
            # Cancelling ends service at period end and credits nothing.
            params["subscription_details"] = {"cancel_now": True, "proration_behavior": "none"}
        else:
            params["subscription_details"] = _change_details(subscription, row.currency, items)
    invoice = current().gateway.preview_invoice(params)
    return _view([invoice])[0]


def _change_details(subscription: stripe.Subscription, currency: str, items: list[dict[str, Any]]) -> Any:
    """Mirror PATCH: increases are charged now (prorated); without any, the
    preview is the next period's invoice at the new quantities (no credit)."""
    existing = current_items(subscription)
    interval = next(iter(existing.values()))[2] if existing else "month"
    prices = current().prices
    raises, cuts = [], []
    for item in items:
        product, quantity = item["product_type"], item["quantity"]
        if product not in existing:
            if quantity > 0:
                raises.append({"price": prices.price_id(product, currency, interval), "quantity": quantity})
        elif quantity == 0:
            cuts.append({"id": existing[product][0], "deleted": True})
        elif quantity > existing[product][1]:
            raises.append({"id": existing[product][0], "quantity": quantity})
        elif quantity < existing[product][1]:
            cuts.append({"id": existing[product][0], "quantity": quantity})
    if existing and not raises and sum(1 for c in cuts if c.get("deleted")) == len(existing):
        raise ApiError(422, "cannot_remove_last_product", "A subscription needs at least one product.")
    if raises:
        return {"items": raises, "proration_behavior": "always_invoice"}
    return {"items": cuts, "proration_behavior": "none"}
