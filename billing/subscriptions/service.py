"""Rules for subscriptions: limits, the once-only trial, changes and cancellation.

Stripe holds every subscription; this module decides what may be asked of it.
Per-account work that checks a limit and then creates runs under a lease so
concurrent requests cannot both pass the check.
"""

from __future__ import annotations

import logging
from typing import Any

import stripe
from sqlalchemy import func, select, update
from stripe.params import SubscriptionCreateParams, SubscriptionUpdateParams

from billing.access import Access, account_in_workspace
from billing.errors import ApiError, not_found
from billing.leases import account_lease_name, lease
from billing.models import BillingAccountIndex, Workspace, utcnow
from billing.state import current
from billing.webhooks.service import ensure_default_payment_method
from schemas.subscriptions import product_of_price

log = logging.getLogger("billing.subscriptions")

# "Active" in the contract means any status but these.
ACTIVE_EXCLUDED = frozenset({"canceled", "incomplete_expired"})
MAX_ACTIVE_SUBSCRIPTIONS = 3
TRIAL_DAYS = 14


def is_active(subscription: stripe.Subscription) -> bool:
    return subscription.status not in ACTIVE_EXCLUDED


def has_active_subscription(customer_id: str) -> bool:
    return any(is_active(s) for s in current().gateway.list_subscriptions(customer_id))


def list_subscriptions(workspace_id: str, customer_id: str) -> list[stripe.Subscription]:
    """The account's subscriptions, newest first (404 outside the workspace)."""
    account_in_workspace(workspace_id, customer_id)
    subscriptions = [
        s for s in current().gateway.list_subscriptions(customer_id) if s.customer == customer_id
    ]
    subscriptions.sort(key=lambda s: (s.created, s.id), reverse=True)
    return subscriptions


def get_subscription(access: Access, customer_id: str, subscription_id: str) -> stripe.Subscription:
    account_in_workspace(access.workspace.id, customer_id)
    subscription = current().gateway.retrieve_subscription(subscription_id)
    if subscription is None or subscription.customer != customer_id:
        raise not_found("subscription")
    return subscription


def default_payment_method(customer_id: str, customer: stripe.Customer | None = None) -> str | None:
    """The customer's default payment method id (reads the customer unless given)."""
    customer = customer or current().gateway.retrieve_customer(customer_id)
    if customer is None:
        raise not_found("billing account")
    settings = customer.invoice_settings
    method = settings.default_payment_method if settings else None
    if method is None:
        return None
    return method if isinstance(method, str) else method.id


def charging_method(customer_id: str) -> str | None:
    """The default payment method for a charge about to be made. A card attached
    moments ago may not have had its webhook yet: apply the webhook's rule (the
    first attached becomes the default) now, instead of refusing."""
    return default_payment_method(customer_id) or ensure_default_payment_method(current().gateway, customer_id)


def _trial_eligible(workspace_id: str, subscriptions: list[stripe.Subscription]) -> bool:
    """Exactly one billing account in the workspace, and never a subscription."""
    if subscriptions:
        return False
    with current().db.read() as session:
        workspace = session.get(Workspace, workspace_id)
        accounts = session.scalar(
            select(func.count()).select_from(BillingAccountIndex).where(
                BillingAccountIndex.workspace_id == workspace_id, BillingAccountIndex.state == "active"
            )
        )
    return workspace is not None and workspace.first_subscription_at is None and accounts == 1


def trial_eligibility(access: Access, customer_id: str) -> dict[str, Any]:
    account_in_workspace(access.workspace.id, customer_id)
    gateway = current().gateway
    subscriptions, customer = gateway.together(
        lambda: gateway.list_subscriptions(customer_id), lambda: gateway.retrieve_customer(customer_id)
    )
    eligible = _trial_eligible(access.workspace.id, subscriptions)
    has_method = default_payment_method(customer_id, customer) is not None
    below_limit = sum(is_active(s) for s in subscriptions) < MAX_ACTIVE_SUBSCRIPTIONS
    return {
        "trial_eligible": eligible,
        "has_payment_method": has_method,
        "can_create_subscription": below_limit and (eligible or has_method) and not access.workspace.archived,
        "trial_info": {
            "trial_days": TRIAL_DAYS,
            "message": f"Your first subscription starts with a {TRIAL_DAYS}-day free trial; "
            "no payment method is needed until it ends.",
        }
        if eligible
        else None,
        "requirements": {} if eligible or has_method else {
            "add_payment_method": "Add a payment method to this billing account before subscribing."
        },
    }


def _items_for(row: BillingAccountIndex, quantities: dict[str, int], interval: str) -> list[dict[str, Any]]:
    prices = current().prices
    return [
        {"price": prices.price_id(product, row.currency, interval), "quantity": quantity}
        for product, quantity in quantities.items()
    ]


def create_subscription(access: Access, customer_id: str, data: dict[str, Any], request_key: str) -> stripe.Subscription:
    access.for_billing_write()
    row = account_in_workspace(access.workspace.id, customer_id)
    items = _items_for(row, data["product_quantities"], data["interval"])  # 422 before any write
    state = current()
    with lease(state.db, account_lease_name(customer_id)):
        with state.db.read() as session:  # archived meanwhile? (archiving takes this lease too)
            if session.scalar(select(Workspace.archived_at).where(Workspace.id == access.workspace.id)):
                raise ApiError(409, "workspace_archived", "The workspace is archived; it can no longer be changed.")
        subscriptions = state.gateway.list_subscriptions(customer_id)
        if sum(is_active(s) for s in subscriptions) >= MAX_ACTIVE_SUBSCRIPTIONS:
            raise ApiError(
                409, "subscription_limit_reached",
                f"A billing account can have at most {MAX_ACTIVE_SUBSCRIPTIONS} active subscriptions.",
            )
        params: SubscriptionCreateParams = {
            "customer": customer_id,
            "items": items,  # type: ignore[typeddict-item]
            "metadata": data.get("metadata") or {},
            # A declined first charge fails the call and leaves no subscription behind.
            "payment_behavior": "error_if_incomplete",
        }
        if _trial_eligible(access.workspace.id, subscriptions):
            params["trial_period_days"] = TRIAL_DAYS
            params["trial_settings"] = {"end_behavior": {"missing_payment_method": "pause"}}
        elif charging_method(customer_id) is None:
            raise ApiError(422, "payment_method_required", "Add a default payment method before subscribing.")
        subscription = state.gateway.create_subscription(params, idempotency_key=f"{request_key}:create-subscription")
        with state.db.write() as session:
            session.execute(
                update(Workspace)
                .where(Workspace.id == access.workspace.id, Workspace.first_subscription_at.is_(None))
                .values(first_subscription_at=utcnow())
            )
    return subscription


# -- changes -------------------------------------------------------------------

OPERATIONS = ("action", "product_quantities", "add_products", "remove_products")


def current_items(subscription: stripe.Subscription) -> dict[str, tuple[str, int, str]]:
    """product -> (item id, quantity, interval)."""
    found = {}
    for item in subscription["items"].data:
        price = item.price.to_dict()
        product = product_of_price(price)
        if product:
            found[product] = (item.id, item.quantity or 0, (price.get("recurring") or {}).get("interval", "month"))
    return found


def update_subscription(
    access: Access, customer_id: str, subscription_id: str, data: dict[str, Any], request_key: str
) -> stripe.Subscription:
    access.for_billing_write()
    operations = [name for name in OPERATIONS if name in data]
    if len(operations) > 1 or ("metadata" in data and operations and operations != ["product_quantities"]):
        raise ApiError(
            422, "multiple_operations",
            "Send exactly one operation (metadata may only accompany product_quantities).",
        )
    row = account_in_workspace(access.workspace.id, customer_id)
    subscription = get_subscription(access, customer_id, subscription_id)
    operation = operations[0] if operations else None
    if data.get("action") == "sync":
        return subscription
    if not is_active(subscription):
        raise ApiError(409, "subscription_not_active", f"The subscription is {subscription.status}.")
    if operation == "action":
        if data["action"] == "pause":
            return _pause(subscription, request_key)
        return _resume(subscription, customer_id, request_key)

    existing = current_items(subscription)
    interval = next(iter(existing.values()))[2] if existing else "month"
    if operation == "product_quantities":
        desired = dict(data["product_quantities"])
    elif operation == "add_products":
        desired = {p: q for p, (_, q, _) in existing.items()}
        for product, quantity in data["add_products"].items():
            desired[product] = desired.get(product, 0) + quantity
    elif operation == "remove_products":
        desired = {p: q for p, (_, q, _) in existing.items() if p not in data["remove_products"]}
        if not desired:
            raise ApiError(422, "cannot_remove_last_product",
                           "A subscription needs at least one product; cancel it instead.")
    else:
        desired = {p: q for p, (_, q, _) in existing.items()}
    metadata = data.get("metadata")
    return _apply_quantities(subscription, row, existing, desired, interval, metadata, request_key)


def _apply_quantities(
    subscription: stripe.Subscription,
    row: BillingAccountIndex,
    existing: dict[str, tuple[str, int, str]],
    desired: dict[str, int],
    interval: str,
    metadata: dict[str, Any] | None,
    request_key: str,
) -> stripe.Subscription:
    """Increases are charged now (prorated); decreases get no credit and simply
    bill less from the next period. Increases go first: if the card declines,
    nothing has changed."""
    gateway = current().gateway
    prices = current().prices
    raises: list[dict[str, Any]] = []
    cuts: list[dict[str, Any]] = []
    for product, quantity in desired.items():
        if product not in existing:
            raises.append({"price": prices.price_id(product, row.currency, interval), "quantity": quantity})
        elif quantity > existing[product][1]:
            raises.append({"id": existing[product][0], "quantity": quantity})
        elif quantity < existing[product][1]:
            cuts.append({"id": existing[product][0], "quantity": quantity})
    for product, (item_id, _, _) in existing.items():
        if product not in desired:
            cuts.append({"id": item_id, "deleted": True})
    meta_params = {k: ("" if v is None else v) for k, v in (metadata or {}).items()}
    result = subscription
    if raises:
        params: SubscriptionUpdateParams = {
            "items": raises,  # type: ignore[typeddict-item]
            "proration_behavior": "always_invoice",
            "payment_behavior": "error_if_incomplete",
        }
        if meta_params:
            params["metadata"] = meta_params
            meta_params = {}
        result = gateway.update_subscription(subscription.id, params, idempotency_key=f"{request_key}:increase")
    if cuts or meta_params:
        params = {"proration_behavior": "none"}
        if cuts:
            params["items"] = cuts  # type: ignore[typeddict-item]
        if meta_params:
            params["metadata"] = meta_params
        result = gateway.update_subscription(subscription.id, params, idempotency_key=f"{request_key}:decrease")
    return result


def _pause(subscription: stripe.Subscription, request_key: str) -> stripe.Subscription:
    if subscription.pause_collection or subscription.status == "paused":
        return subscription
    return current().gateway.update_subscription(
        subscription.id, {"pause_collection": {"behavior": "void"}}, idempotency_key=f"{request_key}:pause"
    )


def _resume(subscription: stripe.Subscription, customer_id: str, request_key: str) -> stripe.Subscription:
    """Undo a pause (of collection, or of a trial that ended without a card) and
    any scheduled cancellation."""
    gateway = current().gateway
    result = subscription
    if subscription.status == "paused":
        if charging_method(customer_id) is None:
            raise ApiError(422, "payment_method_required", "Add a default payment method before resuming.")
        result = gateway.resume_subscription(
            subscription.id,
            # A new period starts now and is charged now; a decline leaves it paused.
            {"billing_cycle_anchor": {"type": "now"}, "proration_behavior": "none",
             "payment_behavior": "resume_on_payment_success"},
            idempotency_key=f"{request_key}:resume",
        )
    params: SubscriptionUpdateParams = {}
    if result.pause_collection:
        params["pause_collection"] = ""
    if result.cancel_at_period_end:
        params["cancel_at_period_end"] = False
    elif result.cancel_at:
        params["cancel_at"] = ""
    if params:
        result = gateway.update_subscription(subscription.id, params, idempotency_key=f"{request_key}:unpause")
    return result


def cancel_subscription(access: Access, customer_id: str, subscription_id: str, request_key: str) -> stripe.Subscription:
    """Cancel at the end of the current period (for a trial: at its end)."""
    access.for_billing_write()
    subscription = get_subscription(access, customer_id, subscription_id)
    if not is_active(subscription) or subscription.cancel_at_period_end:
        return subscription
    return current().gateway.update_subscription(
        subscription.id, {"cancel_at_period_end": True}, idempotency_key=f"{request_key}:cancel"
    )
