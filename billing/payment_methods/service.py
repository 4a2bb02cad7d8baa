"""Rules for payment methods: the limit, the default, and the detach guards."""

from __future__ import annotations

from typing import Any

import stripe

from billing.access import Access, account_in_workspace
from billing.errors import ApiError, not_found
from billing.state import current
from billing.subscriptions.service import default_payment_method, has_active_subscription

MAX_PAYMENT_METHODS = 5


def list_payment_methods(access: Access, customer_id: str) -> list[dict[str, Any]]:
    account_in_workspace(access.workspace.id, customer_id)
    gateway = current().gateway
    customer, methods = gateway.together(
        lambda: gateway.retrieve_customer(customer_id), lambda: gateway.list_payment_methods(customer_id)
    )
    default = default_payment_method(customer_id, customer)
    return [{**m.to_dict(), "is_default": m.id == default} for m in methods]


def create_setup_intent(access: Access, customer_id: str, request_key: str) -> dict[str, str]:
    """A SetupIntent the front end confirms with Stripe.js; the card goes from
    the browser to Stripe, never through this service."""
    access.for_billing_write()
    account_in_workspace(access.workspace.id, customer_id)
    gateway = current().gateway
    if len(gateway.list_payment_methods(customer_id)) >= MAX_PAYMENT_METHODS:
        raise ApiError(409, "payment_method_limit_reached",
                       f"A billing account can hold at most {MAX_PAYMENT_METHODS} payment methods.")
    intent = gateway.create_setup_intent(
        {"customer": customer_id, "usage": "off_session", "automatic_payment_methods": {"enabled": True}},
        idempotency_key=f"{request_key}:setup-intent",
    )
    return {"client_secret": str(intent.client_secret), "publishable_key": current().config.stripe_publishable_key}


def _owner(method: stripe.PaymentMethod) -> str | None:
    owner = method.customer
    return owner if isinstance(owner, str) or owner is None else owner.id


def _owned_method(customer_id: str, payment_method_id: str) -> stripe.PaymentMethod:
    method = current().gateway.retrieve_payment_method(payment_method_id)
    if method is None or _owner(method) != customer_id:
        raise not_found("payment method")
    return method


def set_default(access: Access, customer_id: str, payment_method_id: str, request_key: str) -> None:
    access.for_billing_write()
    account_in_workspace(access.workspace.id, customer_id)
    _owned_method(customer_id, payment_method_id)
    current().gateway.set_default_payment_method(
        customer_id, payment_method_id, idempotency_key=f"{request_key}:default-pm"
    )


def detach(access: Access, customer_id: str, payment_method_id: str, request_key: str) -> None:
    access.for_billing_write()
    account_in_workspace(access.workspace.id, customer_id)
    gateway = current().gateway
    method = gateway.retrieve_payment_method(payment_method_id)
    if method is not None and _owner(method) is None:
        # Already detached: by this very request whose answer was lost? Stripe's
        # idempotency remembers; anyone else's detach gets no replay and is a 404.
        try:
            gateway.detach_payment_method(payment_method_id, idempotency_key=f"{request_key}:detach")
            return
        except stripe.InvalidRequestError:
            raise not_found("payment method") from None
    if method is None or _owner(method) != customer_id:
        raise not_found("payment method")
    if len(gateway.list_payment_methods(customer_id)) <= 1:
        raise ApiError(422, "cannot_detach_only_payment_method",
                       "This is the account's only payment method; add another first.")
    if payment_method_id == default_payment_method(customer_id) and has_active_subscription(customer_id):
        raise ApiError(422, "cannot_detach_default_with_subscriptions",
                       "This is the default payment method of an account with active subscriptions; "
                       "make another one the default first.")
    gateway.detach_payment_method(payment_method_id, idempotency_key=f"{request_key}:detach")
