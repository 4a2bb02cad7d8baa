"""What the sandbox-only routes do. Tenancy holds here too: an admin can only
act on their own workspace's customers."""

from __future__ import annotations

from typing import Any

from billing import stripe_ids
from billing.access import AccountAccess
from billing.errors import ApiError, not_found
from billing.payment_methods.service import attaching, shown
from billing.state import BillingState, SandboxAuthenticator, SandboxClock
from billing.webhooks import inbox
from stripe_sandbox import hosted_invoices
from stripe_sandbox.clock import ClockAdvancing
from stripe_sandbox.errors import SandboxError


def _clock(state: BillingState) -> SandboxClock:
    clock = state.sandbox_clock
    if clock is None:  # not reachable: the blueprint exists only in sandbox mode
        raise not_found("route")
    return clock


def copy_behind(state: BillingState, advanced_to: int | None) -> bool:
    """Whether the service has received events of the last advance (dated at or
    before the time it moved to: traffic meanwhile doesn't count) that its
    workers have not applied yet (parked ones aside: they wait for an operator)."""
    return inbox.pending_created_by(state.db, advanced_to)


def _status(state: BillingState, emulator_status: str, advanced_to: int | None) -> str:
    """`ready` only once what came due is readable through the API: the emulator
    has run every transition and delivered their webhooks (`published`), and the
    service has applied them."""
    if emulator_status != "ready":
        return emulator_status
    return "advancing" if copy_behind(state, advanced_to) else "ready"


def clock_now(state: BillingState) -> dict[str, Any]:
    reading = _clock(state).published()
    return {"now": reading.now, "status": _status(state, reading.status, reading.advanced_to)}


def advance_clock(state: BillingState, data: dict[str, Any]) -> dict[str, Any]:
    """Move sandbox time forward and start running what came due (trial ends,
    renewals, scheduled cancellations) in the background, as Stripe's test
    clocks do; their webhooks follow, as from Stripe."""
    seconds = (
        data.get("seconds", 0) + 60 * data.get("minutes", 0) + 3600 * data.get("hours", 0) + 86400 * data.get("days", 0)
    )
    if seconds <= 0:
        raise ApiError(
            422,
            "validation_failed",
            "Advance by a positive amount of time.",
            errors={"seconds": ["Give seconds, minutes, hours or days."]},
        )
    try:
        reading = _clock(state).advance_in_background(seconds)
    except ClockAdvancing:
        raise ApiError(
            409,
            "clock_advancing",
            "The sandbox clock is still advancing: wait until GET /sandbox/clock says ready.",
            headers={"Retry-After": "1"},
        ) from None
    return {"now": reading.now, "advanced_seconds": seconds, "status": reading.status}


def attach_test_payment_method(state: BillingState, ctx: AccountAccess, token: str, request_key: str) -> dict[str, Any]:
    """An attach the service makes itself: the limit holds under concurrency, and
    the answer says whether it became the default (payment_methods.attaching)."""
    ctx.for_billing_write()
    with attaching(state, ctx.customer_id):
        method = state.gateway.attach_payment_method(token, ctx.customer_id, idempotency_key=f"{request_key}:attach")
    return shown(state, ctx.customer_id, [method.to_dict()])[0]


def confirm_setup_intent(
    state: BillingState, ctx: AccountAccess, setup_intent_id: str, token: str, request_key: str
) -> dict[str, Any]:
    ctx.for_billing_write()
    customer_id = ctx.customer_id
    gateway = state.gateway
    intent = gateway.retrieve_setup_intent(setup_intent_id)
    owner = stripe_ids.id_of(intent.customer)
    if owner != customer_id:
        raise not_found("setup intent")
    confirmed = gateway.confirm_setup_intent(setup_intent_id, token, idempotency_key=f"{request_key}:confirm")
    method = confirmed.payment_method
    return {"id": confirmed.id, "status": confirmed.status, "payment_method": stripe_ids.id_of(method)}


def _authenticator(state: BillingState) -> SandboxAuthenticator:
    authenticator = state.sandbox_authenticator
    if authenticator is None:  # not reachable: the blueprint exists only in sandbox mode
        raise not_found("route")
    return authenticator


def authenticate(state: BillingState, ctx: AccountAccess, client_secret: str, succeed: bool) -> dict[str, Any]:
    """Answer the 3-D Secure challenge of one of this account's PaymentIntents or SetupIntents."""
    ctx.for_billing_write()
    gateway = state.gateway
    intent_id = stripe_ids.intent_id(client_secret)
    intent: Any = None
    if intent_id.startswith("pi_"):
        intent = gateway.retrieve_payment_intent(intent_id)
    elif intent_id.startswith("seti_"):
        intent = gateway.retrieve_setup_intent(intent_id)  # unknown: Stripe's resource_missing, a 404
    owner = stripe_ids.id_of(getattr(intent, "customer", None))
    if intent is None or owner != ctx.customer_id or intent.client_secret != client_secret:
        raise not_found("payment")  # another account's secret is as unknown as a made-up one
    try:
        status = _authenticator(state).complete(client_secret, succeed)
    except SandboxError as error:  # e.g. already succeeded: nothing is waiting for the customer
        raise ApiError(409, "nothing_to_authenticate", error.message) from None
    return {"status": status}


def hosted_invoice(state: BillingState, invoice_id: str, token: str) -> dict[str, Any]:
    """The finalized invoice a hosted page's URL names (404 for any other URL, as for a made-up one)."""
    invoice = hosted_invoices.find(state.db, invoice_id, token)
    if invoice is None:
        raise not_found("invoice")
    return invoice
