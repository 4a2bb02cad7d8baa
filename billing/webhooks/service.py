"""Verify Stripe's events, store them, and apply them on workers.

Delivery only stores (`receive`): the event goes into the inbox
(`billing.webhooks.inbox`, deduplicated by id) and a queue task is asked to
apply it, so Stripe's request is answered at once and costs no Stripe call.
The task (`apply_object`) takes every waiting event about one object and
applies them together. Handlers never trust the payload's snapshot: they
re-read the object from Stripe (one request; the gateway stores it in the
copy), so events may arrive in any order; events older than the stored view
cost nothing. A task is put off until a few seconds after its event
arrived, so the events one change makes (a renewal makes several) share one read.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import stripe
from sqlalchemy import select

from billing import metrics, replica
from billing.audit import trail
from billing.billing_accounts.service import forget_account
from billing.budget import BudgetExhausted, background
from billing.errors import ApiError
from billing.models import BillingAccountIndex, StripeCopy, now_stamp, stamp_of
from billing.payment_methods.service import enforce_limit, ensure_default_payment_method
from billing.state import BillingState
from billing.stripe_ids import id_of, invoice_subscription
from billing.subscriptions.pending import OWING
from billing.webhooks import inbox
from billing.webhooks.event_checks import check_event

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
    check_event(event, text)
    return event


def receive(state: BillingState, event: dict[str, Any]) -> bool:
    """Store a verified event and ask for it to be applied; False for a
    duplicate. Costs no Stripe call and waits on nothing but the insert."""
    key = object_key(event)
    stored = inbox.store(state.db, event, key)
    metrics.webhook_events_received.labels(str(not stored.new).lower()).inc()
    if not stored.new:
        return False
    if key is not None and not stored.task_waiting:  # else the waiting one's task takes this too
        try:
            state.queue.apply_later(key, delay=COALESCE_SECONDS)
        except Exception as error:  # stored durably: the sweep queues it again
            log.warning("event %s stored, not queued (%s)", event["id"], type(error).__name__)
    return True


def object_key(event: dict[str, Any]) -> str | None:
    """`<object type>:<id>` of what the event is about, or None if the copy holds nothing of it."""
    object_type, object_id, _customer = _subject(str(event["type"]), _object_of(event))
    return f"{object_type}:{object_id}" if object_id else None


# A task is put off this long after its event arrives, so that the events one
# change makes (a renewal makes several, sent together) share one read.
COALESCE_SECONDS = 2.0
# Our clock and Stripe's may differ by this much: a stored view counts as newer
# than an event when it was fetched this long after the event was created.
CLOCK_SKEW_SECONDS = 5


# How long applying waits for room in the Stripe request budget before it is put off.
BUDGET_WAIT_SECONDS = 20.0


class ObjectGone(Exception):
    """Stripe no longer has the object an event is about: retrying can't help."""


def apply_object(state: BillingState, key: str) -> float | None:
    """Apply every event about one object that may run now. Returns the delay
    before the object's task should run again (after a failure, or for an event
    that came in meanwhile; None: nothing left)."""
    db = state.db
    events = inbox.claim(db, key)
    if not events:
        return None
    ids = [event.id for event in events]
    try:
        # Background work: Stripe requests within what users leave of the budget.
        # What the copy learns here came from Stripe: the audit trail names the newest event.
        newest = max(events, key=lambda event: (event.created, event.received_at))
        with background("webhook", deadline_seconds=BUDGET_WAIT_SECONDS), trail.learnt_from_event(newest.id):
            apply_events(state, key, events)
    except BudgetExhausted:  # Stripe is busy with users' requests: not a failure of these events
        return inbox.put_off(db, ids, BUDGET_WAIT_SECONDS)
    except Exception as error:  # recorded on the events; the task itself never fails
        permanent = isinstance(error, (ObjectGone, stripe.InvalidRequestError))
        delay = inbox.fail(db, ids, f"{type(error).__name__}: {_describe(error)}", permanent=permanent)
        metrics.webhook_events_failed.labels("parked" if delay is None else "retry").inc(len(ids))
        log.warning(
            "events %s about %s: %s (%s)",
            ",".join(ids),
            key,
            type(error).__name__,
            "parked" if delay is None else f"retry in {delay:.0f}s",
        )
        return delay
    # An event that came in while these were claimed may have queued no task (store()).
    more = inbox.finish(db, ids, key)
    metrics.webhook_events_applied.inc(len(ids))
    return COALESCE_SECONDS if more else None


def _describe(error: Exception) -> str:
    # Stripe's own message for Stripe errors (no secret in them); for anything
    # else only the type, as the request log does: a message may carry data.
    if isinstance(error, stripe.StripeError):
        return f"{error.code or ''} {error.user_message or ''}".strip() or str(error.http_status)
    return str(error) if isinstance(error, ObjectGone) else ""


def _object_of(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data") or {}
    obj = data.get("object") if isinstance(data, dict) else None
    return obj if isinstance(obj, dict) else {}


def _indexed(state: BillingState, customer_id: str | None) -> bool:
    if not customer_id:
        return False
    with state.db.read() as session:
        return (
            session.scalar(select(BillingAccountIndex.id).where(BillingAccountIndex.customer_id == customer_id))
            is not None
        )


def _subject(event_type: str, obj: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(object type, object id, customer id) of what the event is about."""
    kind = obj.get("object")
    if event_type.startswith("invoice_payment."):
        return "invoice", id_of(obj.get("invoice")), None
    if event_type.startswith("setup_intent."):
        return "payment_method", id_of(obj.get("payment_method")), id_of(obj.get("customer"))
    if kind == "customer":
        return "customer", id_of(obj.get("id")), id_of(obj.get("id"))
    if kind in ("subscription", "invoice", "payment_method", "product", "payment_intent", "tax_id"):
        return str(kind), id_of(obj.get("id")), id_of(obj.get("customer"))
    return "", None, None


def _refetch(
    state: BillingState, object_type: str, object_id: str, stored: StripeCopy | None = None
) -> stripe.StripeObject | None:
    """One Stripe request; the gateway keeps what it returns."""
    gateway = state.gateway
    if object_type == "invoice":
        return _refetch_invoice(state, object_id, stored)
    if object_type == "customer":
        return gateway.retrieve_customer(object_id)
    if object_type == "subscription":
        return gateway.retrieve_subscription(object_id)
    if object_type == "payment_method":
        return gateway.retrieve_payment_method(object_id)
    if object_type == "payment_intent":
        return gateway.retrieve_payment_intent(object_id)
    if object_type == "tax_id":  # its verification, which Stripe settles a moment after the add
        return gateway.retrieve_tax_id(object_id)
    return gateway.retrieve_product(object_id)


def _refetch_invoice(state: BillingState, invoice_id: str, stored: StripeCopy | None) -> stripe.StripeObject | None:
    """The invoice, from whichever of two endpoints has room this second. A
    subscription's latest invoice also comes with the subscription's read
    (expanded), and Stripe counts each endpoint's requests apart (25 a second
    in live mode): when renewals' invoices fill the invoices' second, the rest
    are read through their subscriptions, and the copy catches up twice as fast."""
    gateway = state.gateway
    subscription_id = _renewing_subscription(state, invoice_id, stored)
    if subscription_id is None:
        return gateway.retrieve_invoice(invoice_id)
    if not _owes(state, subscription_id):
        try:
            with background("webhook", deadline_seconds=0):  # no room now: raises at once
                return gateway.retrieve_invoice(invoice_id)
        except BudgetExhausted:
            pass
    # Also whenever the subscription owes this invoice (its pending_payment): the two
    # are read, and kept, together, so the API never shows it owing with nothing
    # pending, or the invoice paid while the subscription still waits for it.
    subscription = gateway.retrieve_subscription(subscription_id)
    latest = getattr(subscription, "latest_invoice", None) if subscription is not None else None
    if isinstance(latest, stripe.Invoice) and latest.id == invoice_id and not latest.lines.has_more:
        return latest
    return gateway.retrieve_invoice(invoice_id)  # no longer its latest (a newer one came meanwhile), or long


def _owes(state: BillingState, subscription_id: str) -> bool:
    """Whether the copy shows the subscription waiting on its latest invoice (pending_payment)."""
    return (replica.subscription_document(state.db, subscription_id) or {}).get("status") in OWING


def _read_what_it_paid(state: BillingState, customer_id: str, payment_intent_id: str) -> None:
    """A PaymentIntent that succeeded pays an open invoice: when that invoice is
    what an owing subscription waits for, the subscription is read too (it brings
    the invoice), so the three change together: pending_payment never says the
    payment failed, or goes, while the subscription still reads incomplete."""
    intent = replica.payment_intent(state.db, payment_intent_id)
    if intent is None or intent.get("status") != "succeeded":
        return
    invoice = replica.open_invoice_paid_with(state.db, customer_id, payment_intent_id)
    subscription_id = _renewing_subscription(state, invoice.id, invoice) if invoice is not None else None
    if subscription_id is not None and _owes(state, subscription_id):
        state.gateway.retrieve_subscription(subscription_id)


def _applied_its_subscription(state: BillingState, events: list[inbox.Claimed]) -> bool:
    """A new invoice's events that came before its subscription's (a renewal in a
    storm's shuffled deliveries): apply the subscription's waiting events first,
    here. Its read brings its latest invoice, this one, so both cost one read."""
    applied = False
    for subscription_id in {_subscription_of(event) for event in events} - {None}:
        key = f"subscription:{subscription_id}"
        if inbox.untried(state.db, key):
            apply_object(state, key)
            applied = True
    return applied


def _subscription_of(event: inbox.Claimed) -> str | None:
    return invoice_subscription(_object_of(event.payload))


def _renewing_subscription(state: BillingState, invoice_id: str, stored: StripeCopy | None) -> str | None:
    """The subscription whose latest invoice (as the copy knows it) is this one, if any."""
    if stored is None or stored.deleted:
        return None
    subscription_id = invoice_subscription(stored.data)
    if subscription_id is None:
        return None
    subscription = replica.subscription_document(state.db, subscription_id)
    if subscription is None or id_of(subscription.get("latest_invoice")) != invoice_id:
        return None
    return subscription_id


# A PaymentIntent matters to the API only while its invoice waits on the
# customer (pending_payment's reason): one that needs them is copied, and one
# the copy holds is kept current; a renewal paid at once costs no read for it.
NEEDS_CUSTOMER = frozenset({"payment_intent.requires_action", "payment_intent.payment_failed"})


# An invoice's lifecycle: a stored view that has reached the end of it holds
# everything these events (each about reaching a step of it) can say.
INVOICE_ENDS = frozenset({"paid", "void", "uncollectible"})
INVOICE_LIFECYCLE = frozenset(
    {"invoice.created", "invoice.finalized", "invoice.paid", "invoice.payment_succeeded", "invoice_payment.paid"}
)


def _known_since(object_type: str, stored: StripeCopy | None, events: list[inbox.Claimed]) -> bool:
    """Whether the stored view already says what the events say, so that no
    Stripe read is needed: it was fetched after they reached us (causality, on
    our clock), or well after they were created (Stripe's clock: it holds in
    production; after a sandbox advance, whose events are dated in the past,
    only the first rule applies); or they only say it was created; or it is an
    invoice at the end of its lifecycle and they are steps of that lifecycle."""
    if stored is None:
        return False
    if not stored.deleted and all(event.type.endswith(".created") for event in events):
        return True  # they say only that it exists: any view of it is as new (a later change has its own event)
    if stored.fetched_at > max(event.received_at for event in events):
        return True
    if stored.fetched_at > stamp_of(max(event.created for event in events) + CLOCK_SKEW_SECONDS):
        return True
    return (
        object_type == "invoice"
        and not stored.deleted
        and stored.data.get("status") in INVOICE_ENDS
        and {event.type for event in events} <= INVOICE_LIFECYCLE
    )


def apply_events(state: BillingState, key: str, events: list[inbox.Claimed]) -> None:
    """Bring the copy up to date with the object the events are about (one
    read at most), then apply the rules that follow from them (a deleted
    customer's index row, a first default payment method)."""
    object_type, object_id = key.split(":", 1)
    stored = replica.stored_view(state.db, object_type, object_id)
    subjects = [_subject(event.type, _object_of(event.payload)) for event in events]
    customer_id = next((customer for _, _, customer in subjects if customer), None)
    if object_type == "invoice" and customer_id is None and stored is not None and not stored.deleted:
        customer_id = replica.customer_of(stored.data)
    if object_type != "product" and not _indexed(state, customer_id):
        return  # not one of ours
    types = {event.type for event in events}
    if object_type == "payment_intent" and stored is None and not types & NEEDS_CUSTOMER:
        return
    if object_type == "invoice" and stored is None and _applied_its_subscription(state, events):
        stored = replica.stored_view(state.db, object_type, object_id)
    if not _known_since(object_type, stored, events):
        read_at = now_stamp()
        if _refetch(state, object_type, object_id, stored) is None and object_type != "customer":
            if not any(t.endswith(".deleted") for t in types):
                raise ObjectGone(f"{object_type} {object_id} no longer exists in Stripe")
            if object_type == "tax_id":  # deleted in Stripe (the Dashboard): the copy says so too
                replica.forget_tax_id(state.db, object_id, stamp=read_at)
    if object_type == "customer" and replica.customer(state.db, object_id) is None:  # deleted in Stripe
        forget_account(state, object_id)
    if object_type == "payment_intent" and customer_id:
        _read_what_it_paid(state, customer_id, object_id)
    if types & {"payment_method.attached", "setup_intent.succeeded"} and customer_id:
        ensure_default_payment_method(state, customer_id)
        enforce_limit(state, customer_id)
