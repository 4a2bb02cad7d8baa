"""Rules for payment methods: the limit, the default, and the detach guards.

The default-payment-method rule lives here only: the first method attached to a
customer becomes its default (applied by the webhook, by reconcile, by an attach
the service makes itself, and just before a charge when the webhook has not come yet).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import stripe

from billing import replica
from billing.access import AccountAccess
from billing.db import Database
from billing.errors import ApiError, not_found
from billing.leases import lease
from billing.state import BillingState
from billing.subscriptions.active import has_active_subscription

log = logging.getLogger("billing.payment_methods")

MAX_PAYMENT_METHODS = 5


def refuse_when_full(db: Database, customer_id: str) -> None:
    """409 `payment_method_limit_reached` when the customer already holds the most it may.
    (A sixth that gets attached anyway, by a path that skips this, is detached: enforce_limit.)"""
    if len(replica.payment_methods(db, customer_id)) >= MAX_PAYMENT_METHODS:
        raise ApiError(
            409,
            "payment_method_limit_reached",
            f"A billing account can hold at most {MAX_PAYMENT_METHODS} payment methods.",
        )


def _lease_name(customer_id: str) -> str:
    """Held while a customer's payment methods are counted, attached or detached
    over the limit, and while its first default is chosen: one at a time."""
    return f"payment-methods:{customer_id}"


def ensure_default_payment_method(state: BillingState, customer_id: str) -> str | None:
    """Make the customer's first attached payment method its default, when it has none."""
    with lease(state.db, _lease_name(customer_id)):  # two appliers never pick two "first" ones
        if replica.customer(state.db, customer_id) is None:
            return None
        existing = replica.default_payment_method(state.db, customer_id)
        if existing:
            return existing
        methods = replica.payment_methods(state.db, customer_id)
        if not methods:
            return None
        first = methods[-1]["id"]  # newest first, as Stripe lists them
        # A fresh key each time: a key reused from an earlier repair would replay
        # that call at Stripe instead of applying this one (setting a default twice is harmless).
        state.gateway.set_default_payment_method(
            customer_id, first, idempotency_key=f"default-pm:{customer_id}:{first}:{uuid.uuid4().hex}"
        )
        log.info("customer %s: first payment method %s made the default", customer_id, first)
        return str(first)


@contextmanager
def attaching(state: BillingState, customer_id: str) -> Iterator[None]:
    """Around an attach the service makes itself (the sandbox's attach route):
    the limit is checked and the method attached under the customer's lease, so
    concurrent adds never pass one check together (the gateway keeps each answer
    in the copy before the lease is let go). Then the rule for the first method
    is applied at once: the answer, trial eligibility and a create all agree."""
    with lease(state.db, _lease_name(customer_id)):
        refuse_when_full(state.db, customer_id)
        yield
        ensure_default_payment_method(state, customer_id)


def shown(state: BillingState, customer_id: str, methods: list[replica.Document]) -> list[replica.Document]:
    """Payment methods as the API shows them: each with whether it is the customer's default."""
    default = replica.default_payment_method(state.db, customer_id)
    return [{**method, "is_default": method["id"] == default} for method in methods]


def enforce_limit(state: BillingState, customer_id: str) -> list[str]:
    """Detach what lies beyond the limit: the default and the oldest others stay.
    Run on every attachment Stripe reports, whatever path the method came by
    (Stripe.js, the Dashboard, concurrent SetupIntents), so a sixth never stays."""
    with lease(state.db, _lease_name(customer_id)):
        methods = replica.payment_methods(state.db, customer_id)  # newest first
        if len(methods) <= MAX_PAYMENT_METHODS:
            return []
        default = replica.default_payment_method(state.db, customer_id)
        keep = {default} if default else set()
        for method in reversed(methods):  # oldest first
            if len(keep) >= MAX_PAYMENT_METHODS:
                break
            keep.add(method["id"])
        extra = [m["id"] for m in methods if m["id"] not in keep]
        for method_id in extra:
            state.gateway.detach_payment_method(method_id, idempotency_key=f"over-limit:{method_id}")
            log.warning(
                "customer %s: payment method %s detached (over the limit of %d)",
                customer_id,
                method_id,
                MAX_PAYMENT_METHODS,
            )
        return extra


def charging_method(state: BillingState, customer_id: str) -> str | None:
    """The default payment method for a charge about to be made. A card attached
    moments ago may not have had its webhook yet: apply the rule now, instead of refusing."""
    return replica.default_payment_method(state.db, customer_id) or ensure_default_payment_method(state, customer_id)


def list_payment_methods(state: BillingState, ctx: AccountAccess) -> list[dict[str, Any]]:
    replica.ensure_copied(state, [ctx.account])
    return shown(state, ctx.customer_id, replica.payment_methods(state.db, ctx.customer_id))


def create_setup_intent(state: BillingState, ctx: AccountAccess, request_key: str) -> dict[str, str]:
    """A SetupIntent the front end confirms with Stripe.js; the card goes from
    the browser to Stripe, never through this service."""
    ctx.for_billing_write()
    gateway = state.gateway
    replica.ensure_copied(state, [ctx.account])
    refuse_when_full(state.db, ctx.customer_id)
    intent = gateway.create_setup_intent(
        {"customer": ctx.customer_id, "usage": "off_session", "automatic_payment_methods": {"enabled": True}},
        idempotency_key=f"{request_key}:setup-intent",
    )
    return {
        "id": intent.id,
        "client_secret": str(intent.client_secret),
        "publishable_key": state.config.stripe_publishable_key,
    }


def _owner(method: replica.Document) -> str | None:
    return replica.customer_of(method)


def set_default(state: BillingState, ctx: AccountAccess, payment_method_id: str, request_key: str) -> None:
    ctx.for_billing_write()
    method = replica.payment_method(state.db, payment_method_id)
    if method is None or _owner(method) != ctx.customer_id:
        raise not_found("payment method")
    state.gateway.set_default_payment_method(
        ctx.customer_id, payment_method_id, idempotency_key=f"{request_key}:default-pm"
    )


def detach(state: BillingState, ctx: AccountAccess, payment_method_id: str, request_key: str) -> None:
    ctx.for_billing_write()
    customer_id = ctx.customer_id
    gateway = state.gateway
    replica.ensure_copied(state, [ctx.account])
    method = replica.payment_method(state.db, payment_method_id)
    if (
        method is not None
        and _owner(method) is None
        and replica.former_owner(state.db, payment_method_id) == customer_id
    ):
        # Detached from this account: by this very request whose answer was lost?
        # Stripe's idempotency remembers; anyone else's detach gets no replay and
        # is a 404. (Another account's card is a 404 without asking Stripe.)
        try:
            gateway.detach_payment_method(payment_method_id, idempotency_key=f"{request_key}:detach")
            return
        except stripe.InvalidRequestError:
            raise not_found("payment method") from None
    if method is None or _owner(method) != customer_id:
        raise not_found("payment method")
    if len(replica.payment_methods(state.db, customer_id)) <= 1:
        raise ApiError(
            422, "cannot_detach_only_payment_method", "This is the account's only payment method; add another first."
        )
    default = replica.default_payment_method(state.db, customer_id)
    if payment_method_id == default and has_active_subscription(state.db, customer_id):
        raise ApiError(
            422,
            "cannot_detach_default_with_subscriptions",
            "This is the default payment method of an account with active subscriptions; "
            "make another one the default first.",
        )
    gateway.detach_payment_method(payment_method_id, idempotency_key=f"{request_key}:detach")
