"""Verify and process Stripe events.

Each event id is handled once: a lease serialises simultaneous deliveries of
one event, and `processed_events` remembers it only after its effect is stored,
so a failed handler is retried by Stripe. Handlers never trust the payload's
snapshot: they re-read the object from Stripe, so events may arrive in any order.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import stripe
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from billing.billing_accounts.service import forget_account
from billing.errors import ApiError
from billing.leases import lease
from billing.models import BillingAccountIndex, ProcessedEvent
from billing.payment_methods.service import ensure_default_payment_method
from billing.state import current

log = logging.getLogger("billing.webhooks")

TOLERANCE_SECONDS = 300


def verify_event(payload: bytes, signature: str | None, secrets: tuple[str, ...]) -> dict[str, Any]:
    """The event, if any configured secret signed it within the tolerance."""
    if not signature or not secrets:
        raise ApiError(400, "invalid_signature", "The Stripe-Signature header is missing.")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_signature", "The payload is not UTF-8.") from None
    for secret in secrets:  # two secrets while a rotation is under way
        try:
            stripe.WebhookSignature.verify_header(text, signature, secret, TOLERANCE_SECONDS)
            break
        except stripe.SignatureVerificationError:
            continue
    else:
        raise ApiError(400, "invalid_signature", "The signature does not match or is too old.")
    try:
        event = json.loads(text)
    except ValueError:
        raise ApiError(400, "invalid_json", "The event is not valid JSON.") from None
    if not isinstance(event, dict) or not str(event.get("id", "")).startswith("evt_") or "type" not in event:
        raise ApiError(400, "invalid_event", "The payload is not a Stripe event.")
    return event


def process_event(event: dict[str, Any]) -> bool:
    """Handle the event unless it already was; True when this call handled it."""
    state = current()
    event_id = str(event["id"])
    # A duplicate waits for the first delivery, within Stripe's webhook timeout.
    with lease(state.db, f"event:{event_id}", ttl=120, wait=8):
        with state.db.read() as session:
            if session.get(ProcessedEvent, event_id) is not None:
                return False
        handler = HANDLERS.get(str(event["type"]))
        if handler is not None:
            handler(_object_of(event))
        try:
            with state.db.write() as session:
                session.add(ProcessedEvent(id=event_id, type=str(event["type"])))
        except IntegrityError:
            return False
    return True


def _object_of(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data") or {}
    obj = data.get("object") if isinstance(data, dict) else None
    return obj if isinstance(obj, dict) else {}


def _indexed(customer_id: str | None) -> bool:
    if not customer_id:
        return False
    with current().db.read() as session:
        return session.scalar(
            select(BillingAccountIndex.id).where(BillingAccountIndex.customer_id == customer_id)
        ) is not None


def on_customer_deleted(obj: dict[str, Any]) -> None:
    customer_id = obj.get("id")
    if not isinstance(customer_id, str) or not _indexed(customer_id):
        return
    if current().gateway.retrieve_customer(customer_id) is None:  # confirm with Stripe
        forget_account(customer_id)


def on_payment_method_attached(obj: dict[str, Any]) -> None:
    customer_id = obj.get("customer")
    if isinstance(customer_id, str) and _indexed(customer_id):
        ensure_default_payment_method(customer_id)


HANDLERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "customer.deleted": on_customer_deleted,
    "payment_method.attached": on_payment_method_attached,
    "setup_intent.succeeded": on_payment_method_attached,
}
