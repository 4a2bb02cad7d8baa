"""Verify and process Stripe events.

Each event id is handled once: a lease serialises simultaneous deliveries of
one event, and `processed_events` remembers it only after its effect is stored,
so a failed handler is retried by Stripe. Handlers never trust the payload's
snapshot: an event about one of our customers' objects re-reads that object
from Stripe (one request; the gateway stores it in the copy), so events may
arrive in any order. An event older than the stored view costs nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import stripe
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from billing import replica
from billing.billing_accounts.service import forget_account
from billing.errors import ApiError
from billing.leases import lease
from billing.models import BillingAccountIndex, ProcessedEvent
from billing.payment_methods.service import enforce_limit, ensure_default_payment_method
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
        apply_event(str(event["type"]), _object_of(event), int(event.get("created") or 0))
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


# Our clock and Stripe's may differ by this much: a stored view counts as newer
# than an event only when it was fetched this long after the event was created.
CLOCK_SKEW_SECONDS = 5


def _subject(event_type: str, obj: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(object type, object id, customer id) of what the event is about."""
    kind = obj.get("object")
    if event_type.startswith("invoice_payment."):
        return "invoice", replica.id_of(obj.get("invoice")), None
    if event_type.startswith("setup_intent."):
        return "payment_method", replica.id_of(obj.get("payment_method")), replica.id_of(obj.get("customer"))
    if kind == "customer":
        return "customer", replica.id_of(obj.get("id")), replica.id_of(obj.get("id"))
    if kind in ("subscription", "invoice", "payment_method", "product", "payment_intent"):
        return str(kind), replica.id_of(obj.get("id")), replica.id_of(obj.get("customer"))
    return "", None, None


def _refetch(object_type: str, object_id: str) -> stripe.StripeObject | None:
    """One Stripe request; the gateway keeps what it returns."""
    gateway = current().gateway
    if object_type == "customer":
        return gateway.retrieve_customer(object_id)
    if object_type == "subscription":
        return gateway.retrieve_subscription(object_id)
    if object_type == "invoice":
        return gateway.retrieve_invoice(object_id)
    if object_type == "payment_method":
        return gateway.retrieve_payment_method(object_id)
    if object_type == "payment_intent":
        return gateway.retrieve_payment_intent(object_id)
    return gateway.retrieve_product(object_id)


def apply_event(event_type: str, obj: dict[str, Any], created: int) -> None:
    """Bring the copy up to date with what the event is about, then apply the
    rules that follow from it (a deleted customer's index row, a first default)."""
    object_type, object_id, customer_id = _subject(event_type, obj)
    if object_id is None:
        return
    if object_type == "invoice" and customer_id is None:
        stored = replica.invoice(object_id)
        customer_id = replica.customer_of(stored) if stored else None
    if object_type != "product" and not _indexed(customer_id):
        return  # not one of ours
    stamp = replica.fetched_at(object_id)
    if stamp is None or stamp <= (created + CLOCK_SKEW_SECONDS) * 1_000_000:
        _refetch(object_type, object_id)
    if object_type == "customer" and replica.customer(object_id) is None:  # deleted in Stripe
        forget_account(object_id)
    if event_type in ("payment_method.attached", "setup_intent.succeeded") and customer_id:
        ensure_default_payment_method(customer_id)
        enforce_limit(customer_id)
