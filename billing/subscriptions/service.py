"""Rules for subscriptions: limits, the once-only trial, changes and cancellation.

Stripe holds every subscription; this module decides what may be asked of it.
Per-account work that checks a limit and then creates runs under a lease so
concurrent requests cannot both pass the check. `plan_change` is the one
statement of what a change of quantities does (PATCH and the invoice preview
both use it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import stripe
from sqlalchemy import func, select, update
from stripe.params import (
    SubscriptionCreateParams,
    SubscriptionCreateParamsItem,
    SubscriptionUpdateParams,
    SubscriptionUpdateParamsItem,
)

from billing import replica, taxes
from billing.access import AccountAccess, workspace_archived
from billing.errors import ApiError, StripeAnswerInvalid, not_found
from billing.gateway import LATEST_INVOICE_EXPANSIONS
from billing.leases import account_lease_name, lease, subscription_lease_name
from billing.models import BillingAccountIndex, Workspace, utcnow
from billing.organizations.capacity import holding
from billing.payment_methods.service import charging_method
from billing.state import BillingState
from billing.stripe_ids import intent_id
from billing.subscriptions.active import is_active
from billing.subscriptions.invoice_limits import increase_proration
from billing.subscriptions.pending import pending_payment

log = logging.getLogger("billing.subscriptions")
T = TypeVar("T")

MAX_ACTIVE_SUBSCRIPTIONS = 3
# Metadata naming the request that created a subscription (hidden from the API).
REQUEST_KEY = "billing_api_request"
TRIAL_DAYS = 14


# What SubscriptionSchema shows: the subscription (Stripe's wire form), the catalog
# product of each item's price, in the items' order, and what is owed (the copy's
# invoice): all read here, so the schema only reshapes.
SubscriptionView = dict[str, Any]


def subscription_view(state: BillingState, subscription: stripe.Subscription | replica.Document) -> SubscriptionView:
    data = subscription.to_dict() if isinstance(subscription, stripe.StripeObject) else subscription
    try:
        items = (data.get("items") or {}).get("data") or []
        products = [state.products.of_price(item.get("price") or {}) for item in items]
        owed = pending_payment(state.db, data)
    except (KeyError, TypeError, AttributeError, ValueError) as error:  # Stripe's answer, not ours (as the schema's)
        raise StripeAnswerInvalid("subscription", data.get("id") if isinstance(data, dict) else None, error) from None
    return {"subscription": data, "products": products, "pending_payment": owed}


def list_subscriptions(state: BillingState, ctx: AccountAccess) -> list[SubscriptionView]:
    """The account's subscriptions, newest first."""
    replica.ensure_copied(state, [ctx.account])
    return [subscription_view(state, s) for s in replica.subscriptions(state.db, ctx.customer_id)]


def get_subscription(state: BillingState, ctx: AccountAccess, subscription_id: str) -> SubscriptionView:
    return subscription_view(state, owned_subscription(state, ctx, subscription_id))


def owned_subscription(state: BillingState, ctx: AccountAccess, subscription_id: str) -> stripe.Subscription:
    """The subscription, if it is this account's (404 otherwise)."""
    replica.ensure_copied(state, [ctx.account])
    subscription = replica.subscription(state.db, subscription_id)
    if subscription is None or subscription.customer != ctx.customer_id:
        raise not_found("subscription")
    return subscription


def trial_eligible(state: BillingState, workspace_id: str, subscriptions: list[replica.Document]) -> bool:
    """Exactly one billing account in the workspace, and never a subscription:
    then a new subscription starts with a TRIAL_DAYS trial (the create, the
    eligibility answer and the new subscription's preview all ask here)."""
    if subscriptions:
        return False
    with state.db.read() as session:
        workspace = session.get(Workspace, workspace_id)
        accounts = session.scalar(
            select(func.count())
            .select_from(BillingAccountIndex)
            .where(BillingAccountIndex.workspace_id == workspace_id, BillingAccountIndex.state == "active")
        )
    return workspace is not None and workspace.first_subscription_at is None and accounts == 1


def trial_eligibility(state: BillingState, ctx: AccountAccess) -> dict[str, Any]:
    replica.ensure_copied(state, [ctx.account])
    subscriptions = replica.subscriptions(state.db, ctx.customer_id)
    eligible = trial_eligible(state, ctx.workspace_id, subscriptions)
    has_method = replica.default_payment_method(state.db, ctx.customer_id) is not None
    below_limit = sum(is_active(s) for s in subscriptions) < MAX_ACTIVE_SUBSCRIPTIONS
    return {
        "trial_eligible": eligible,
        "has_payment_method": has_method,
        "can_create_subscription": below_limit and (eligible or has_method) and not ctx.access.workspace.archived,
        "trial_info": {
            "trial_days": TRIAL_DAYS,
            "message": f"Your first subscription starts with a {TRIAL_DAYS}-day free trial; "
            "no payment method is needed until it ends.",
        }
        if eligible
        else None,
        "requirements": {}
        if eligible or has_method
        else {"add_payment_method": "Add a payment method to this billing account before subscribing."},
    }


def create_subscription(
    state: BillingState, ctx: AccountAccess, data: dict[str, Any], request_key: str
) -> SubscriptionView:
    return subscription_view(state, _create(state, ctx, data, request_key))


def _create(state: BillingState, ctx: AccountAccess, data: dict[str, Any], request_key: str) -> stripe.Subscription:
    ctx.for_billing_write()
    prices = state.prices

    def priced_items() -> list[SubscriptionCreateParamsItem]:
        return [
            {"price": prices.price_id(product, ctx.currency, data["interval"]), "quantity": quantity}
            for product, quantity in data["product_quantities"].items()
        ]

    items = priced_items()  # 422 price_not_configured before any write
    with lease(state.db, account_lease_name(ctx.customer_id)):
        with state.db.read() as session:  # archived meanwhile? (archiving takes this lease too)
            if session.scalar(select(Workspace.archived_at).where(Workspace.id == ctx.workspace_id)):
                raise workspace_archived()
        replica.ensure_copied(state, [ctx.account])
        subscriptions = replica.subscriptions(state.db, ctx.customer_id)
        mine = [s for s in subscriptions if (s.get("metadata") or {}).get(REQUEST_KEY) == request_key]
        if mine:  # this very request, retried after its answer was lost: the same result
            return stripe.Subscription.construct_from(mine[0], None)
        if sum(is_active(s) for s in subscriptions) >= MAX_ACTIVE_SUBSCRIPTIONS:
            raise ApiError(
                409,
                "subscription_limit_reached",
                f"A billing account can have at most {MAX_ACTIVE_SUBSCRIPTIONS} active subscriptions.",
            )
        params: SubscriptionCreateParams = {
            "customer": ctx.customer_id,
            "items": items,
            "metadata": {**(data.get("metadata") or {}), REQUEST_KEY: request_key},
            # Stripe's documented "no subscription, 402" when the first invoice can't be paid:
            # a declined card leaves nothing behind (3-D Secure: see _create_awaiting_authentication).
            "payment_behavior": "error_if_incomplete",
            "expand": LATEST_INVOICE_EXPANSIONS,  # the copy gets the invoice with the subscription
        }
        taxes.on_subscription(state.config, params)
        if trial_eligible(state, ctx.workspace_id, subscriptions):
            params["trial_period_days"] = TRIAL_DAYS
            params["trial_settings"] = {"end_behavior": {"missing_payment_method": "pause"}}
        elif charging_method(state, ctx.customer_id) is None:
            raise ApiError(422, "payment_method_required", "Add a default payment method before subscribing.")
        try:
            subscription = _with_fresh_prices(
                state,
                lambda: state.gateway.create_subscription(params, idempotency_key=f"{request_key}:create-subscription"),
                lambda: state.gateway.create_subscription(
                    {**params, "items": priced_items()},
                    idempotency_key=f"{request_key}:create-subscription:fresh-prices",
                ),
            )
        except stripe.CardError as error:
            if error.code != REQUIRES_ACTION:
                raise
            subscription = _create_awaiting_authentication(state, params, request_key)
        with state.db.write() as session:
            session.execute(
                update(Workspace)
                .where(Workspace.id == ctx.workspace_id, Workspace.first_subscription_at.is_(None))
                .values(first_subscription_at=utcnow())
            )
    return subscription


REQUIRES_ACTION = "invoice_payment_intent_requires_action"  # Stripe's 402 when 3-D Secure is needed


def _create_awaiting_authentication(
    state: BillingState, params: SubscriptionCreateParams, request_key: str
) -> stripe.Subscription:
    """The first payment needs the customer's authentication (3-D Secure), which no server can give.

    allow_incomplete is Stripe's documented way to create it anyway: `incomplete`, its first
    invoice open with the PaymentIntent (requires_action) the customer confirms with Stripe.js;
    Stripe makes it active once paid and incomplete_expired after 23 hours. Only this case
    gets it: a plain decline stays error_if_incomplete's 402 with nothing created.
    """
    subscription = state.gateway.create_subscription(
        {**params, "payment_behavior": "allow_incomplete"},
        idempotency_key=f"{request_key}:create-subscription:authenticate",
    )
    _copy_why_it_waits(state, subscription)
    return subscription


def _with_fresh_prices(state: BillingState, call: Callable[[], T], again: Callable[[], T]) -> T:
    """Another worker's sync-catalog may have retired a price this worker still
    has cached (Stripe refuses inactive prices): reload the prices and try once more."""
    try:
        return call()
    except stripe.InvalidRequestError as error:
        if not (error.param or "").endswith("[price]"):
            raise
        log.info("a cached price was refused (%s); prices reloaded", error.param)
        state.prices.clear()
        return again()


# -- changes -------------------------------------------------------------------

OPERATIONS = ("action", "product_quantities", "add_products", "remove_products")


@dataclass(frozen=True)
class CurrentItem:
    item_id: str
    quantity: int
    interval: str


def current_items(state: BillingState, subscription: stripe.Subscription) -> dict[str, CurrentItem]:
    """The subscription's items by product."""
    found = {}
    for item in subscription["items"].data:
        price = item.price.to_dict()
        product = state.products.of_price(price)
        if product:
            interval = (price.get("recurring") or {}).get("interval", "month")
            found[product] = CurrentItem(item.id, item.quantity or 0, interval)
    return found


@dataclass(frozen=True)
class ItemChange:
    """One item's change: `item_id` None adds `price`; quantity 0 removes the item."""

    product: str
    quantity: int
    item_id: str | None = None
    price: str | None = None


@dataclass
class ChangePlan:
    """Increases (new products included) are charged now, prorated; decreases
    and removals take effect from the next period, with no credit."""

    interval: str
    raises: list[ItemChange] = field(default_factory=list)
    cuts: list[ItemChange] = field(default_factory=list)


def plan_change(
    state: BillingState, subscription: stripe.Subscription, currency: str, desired: dict[str, int]
) -> ChangePlan:
    """What it takes to go from the subscription's quantities to `desired`
    (product -> quantity; a product left out, or at 0, is removed).
    422 when nothing would be left, or a new product has no price."""
    existing = current_items(state, subscription)
    interval = next(iter(existing.values())).interval if existing else "month"
    wanted = {product: quantity for product, quantity in desired.items() if quantity > 0}
    if not wanted:
        raise ApiError(
            422, "cannot_remove_last_product", "A subscription needs at least one product; cancel it instead."
        )
    plan = ChangePlan(interval)
    for product, quantity in wanted.items():
        item = existing.get(product)
        if item is None:
            price = state.prices.price_id(product, currency, interval)
            plan.raises.append(ItemChange(product, quantity, price=price))
        elif quantity > item.quantity:
            plan.raises.append(ItemChange(product, quantity, item_id=item.item_id))
        elif quantity < item.quantity:
            plan.cuts.append(ItemChange(product, quantity, item_id=item.item_id))
    for product, item in existing.items():
        if product not in wanted:
            plan.cuts.append(ItemChange(product, 0, item_id=item.item_id))
    return plan


def _desired_quantities(
    state: BillingState, subscription: stripe.Subscription, data: dict[str, Any], operation: str | None
) -> dict[str, int]:
    existing = {product: item.quantity for product, item in current_items(state, subscription).items()}
    if operation == "product_quantities":
        return dict(data["product_quantities"])
    if operation == "add_products":
        for product, quantity in data["add_products"].items():
            existing[product] = existing.get(product, 0) + quantity
    elif operation == "remove_products":
        for product in data["remove_products"]:
            existing.pop(product, None)
    return existing


def _answer(state: BillingState, result: stripe.Subscription) -> stripe.Subscription | replica.Document:
    """A change's answer, still under the subscription's lease: the copy's view
    (which knows when it changed) once it holds what the change returned.

    A read of the subscription that started during the change but reached
    Stripe before it (a queue worker's re-read for an event) is stamped later
    than the change's own view, so it may be stored over it. Then the
    subscription is read once more: that read starts after the change, so the
    copy, and the answer, show the change."""
    stored = replica.subscription_document(state.db, result.id)
    if stored is None or not replica.holds(stored, result):
        state.gateway.retrieve_subscription(result.id)
        stored = replica.subscription_document(state.db, result.id)
    return stored or result


def update_subscription(
    state: BillingState, ctx: AccountAccess, subscription_id: str, data: dict[str, Any], request_key: str
) -> SubscriptionView:
    """One operation (or metadata), under the subscription's lease; answered as `_answer` says."""
    ctx.for_billing_write()
    operations = [name for name in OPERATIONS if name in data]
    if len(operations) > 1 or ("metadata" in data and operations and operations != ["product_quantities"]):
        raise ApiError(
            422,
            "multiple_operations",
            "Send exactly one operation (metadata may only accompany product_quantities).",
        )
    owned_subscription(state, ctx, subscription_id)  # 404 unless it is this account's
    operation = operations[0] if operations else None
    with lease(state.db, subscription_lease_name(subscription_id)):
        answer = _answer(state, _change(state, ctx, subscription_id, data, operation, request_key))
    return subscription_view(state, answer)


def _change(
    state: BillingState,
    ctx: AccountAccess,
    subscription_id: str,
    data: dict[str, Any],
    operation: str | None,
    request_key: str,
) -> stripe.Subscription:
    """The change, under the subscription's lease."""
    # Re-read from Stripe under the lease: the copy may not hold the previous change's answer yet.
    subscription = state.gateway.retrieve_subscription(subscription_id)
    if subscription is None:
        raise not_found("subscription")
    if data.get("action") == "sync":
        return subscription
    if not is_active(subscription):
        raise ApiError(409, "subscription_not_active", f"The subscription is {subscription.status}.")
    if operation == "action":
        if data["action"] == "pause":  # a paused subscription provides nothing
            with holding(state, ctx.workspace_id, ctx.customer_id, subscription.id, {}, cancelling=False):
                return _pause(state, subscription, request_key)
        return _resume(state, subscription, ctx.customer_id, request_key)
    desired = _desired_quantities(state, subscription, data, operation)
    plan = plan_change(state, subscription, ctx.currency, desired)
    if plan.cuts:
        with holding(state, ctx.workspace_id, ctx.customer_id, subscription.id, desired, cancelling=False):
            return _apply_plan(state, subscription, plan, ctx.currency, desired, data, request_key)
    return _apply_plan(state, subscription, plan, ctx.currency, desired, data, request_key)


def _apply_plan(
    state: BillingState,
    subscription: stripe.Subscription,
    plan: ChangePlan,
    currency: str,
    desired: dict[str, int],
    data: dict[str, Any],
    request_key: str,
) -> stripe.Subscription:
    return _with_fresh_prices(
        state,
        lambda: _apply(state, subscription, plan, data.get("metadata"), request_key),
        lambda: _apply(
            state,
            subscription,
            plan_change(state, subscription, currency, desired),
            data.get("metadata"),
            f"{request_key}:fresh-prices",
        ),
    )


def _update_item(change: ItemChange) -> SubscriptionUpdateParamsItem:
    if change.item_id is None:
        return {"price": str(change.price), "quantity": change.quantity}
    if change.quantity == 0:
        return {"id": change.item_id, "deleted": True}
    return {"id": change.item_id, "quantity": change.quantity}


def _apply(
    state: BillingState,
    subscription: stripe.Subscription,
    plan: ChangePlan,
    metadata: dict[str, Any] | None,
    request_key: str,
) -> stripe.Subscription:
    """Increases go first: if the card declines, nothing has changed; if it needs the
    customer's authentication, the increase waits for it (the rest is made now)."""
    gateway = state.gateway
    meta_params = {k: ("" if v is None else v) for k, v in (metadata or {}).items()}
    result = subscription
    if plan.raises:
        params: SubscriptionUpdateParams = {
            "items": [_update_item(change) for change in plan.raises],
            # Invoiced at once, unless Stripe's limits on the subscription's invoices say no more today.
            "proration_behavior": increase_proration(state, subscription),
            "payment_behavior": "error_if_incomplete",
            "expand": LATEST_INVOICE_EXPANSIONS,  # the copy gets the invoice with the subscription
        }
        if meta_params:
            params["metadata"] = meta_params
            meta_params = {}
        taxes.on_subscription(state.config, params)
        try:
            result = gateway.update_subscription(subscription.id, params, idempotency_key=f"{request_key}:increase")
        except stripe.CardError as error:
            if error.code != REQUIRES_ACTION:
                raise
            result = _increase_awaiting_authentication(state, subscription.id, params, request_key)
    if plan.cuts or meta_params:
        params = {"proration_behavior": "none"}
        if plan.cuts:
            params["items"] = [_update_item(change) for change in plan.cuts]
        if meta_params:
            params["metadata"] = meta_params
        if plan.cuts:
            taxes.on_subscription(state.config, params)
        result = gateway.update_subscription(subscription.id, params, idempotency_key=f"{request_key}:decrease")
    return result


def _increase_awaiting_authentication(
    state: BillingState, subscription_id: str, params: SubscriptionUpdateParams, request_key: str
) -> stripe.Subscription:
    """The increase's payment needs the customer's authentication (3-D Secure), which no server can give.

    pending_if_incomplete is Stripe's documented way for an update: the subscription keeps its
    items, its latest invoice is the increase's, open with the PaymentIntent the customer confirms
    with Stripe.js, and `pending_update` holds the increase (and its metadata), which Stripe
    applies once that invoice is paid and discards (voiding it) when it expires: 23 hours later at
    most. Only this case gets it: a plain decline stays error_if_incomplete's 402, nothing changed.
    """
    gateway = state.gateway
    result = gateway.update_subscription(
        subscription_id,
        {**params, "payment_behavior": "pending_if_incomplete"},
        idempotency_key=f"{request_key}:increase:authenticate",
    )
    _copy_why_it_waits(state, result)
    return result


def _copy_why_it_waits(state: BillingState, subscription: stripe.Subscription) -> None:
    """The copy learns why the latest invoice waits (pending_payment's reason) without waiting for the webhook."""
    invoice = subscription.latest_invoice
    secret = getattr(getattr(invoice, "confirmation_secret", None), "client_secret", None)
    if secret:
        state.gateway.retrieve_payment_intent(intent_id(secret))


def _pause(state: BillingState, subscription: stripe.Subscription, request_key: str) -> stripe.Subscription:
    if subscription.pause_collection or subscription.status == "paused":
        return subscription
    return state.gateway.update_subscription(
        subscription.id, {"pause_collection": {"behavior": "void"}}, idempotency_key=f"{request_key}:pause"
    )


def _resume(
    state: BillingState, subscription: stripe.Subscription, customer_id: str, request_key: str
) -> stripe.Subscription:
    """Undo a pause (of collection, or of a trial that ended without a card) and
    any scheduled cancellation."""
    gateway = state.gateway
    result = subscription
    if subscription.status == "paused":
        if charging_method(state, customer_id) is None:
            raise ApiError(422, "payment_method_required", "Add a default payment method before resuming.")
        result = gateway.resume_subscription(
            subscription.id,
            # A new period starts now and is charged now; a decline leaves it paused.
            {
                "billing_cycle_anchor": {"type": "now"},
                "proration_behavior": "none",
                "payment_behavior": "resume_on_payment_success",
            },
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


def cancel_subscription(
    state: BillingState, ctx: AccountAccess, subscription_id: str, request_key: str
) -> SubscriptionView:
    return subscription_view(state, _cancel(state, ctx, subscription_id, request_key))


def _cancel(
    state: BillingState, ctx: AccountAccess, subscription_id: str, request_key: str
) -> stripe.Subscription | replica.Document:
    """Cancel at the end of the current period (for a trial: at its end)."""
    ctx.for_billing_write()
    subscription = owned_subscription(state, ctx, subscription_id)
    with lease(state.db, subscription_lease_name(subscription_id)):
        if is_active(subscription) and not subscription.cancel_at_period_end:
            with holding(state, ctx.workspace_id, ctx.customer_id, subscription.id, {}, cancelling=True):
                cancelled = state.gateway.update_subscription(
                    subscription.id, {"cancel_at_period_end": True}, idempotency_key=f"{request_key}:cancel"
                )
            return _answer(state, cancelled)
    return replica.subscription_document(state.db, subscription_id) or subscription
