"""A subscription's `pending_payment`: money owed that needs the customer, read from the copy.

The subscription's latest invoice, still open (incomplete: its first invoice;
past_due: a renewal whose collection failed; with a `pending_update`: an increase
that applies once it is paid), with the secret Stripe.js confirms it with. The
reason comes from the invoice's PaymentIntent: waiting for 3-D Secure, or refused
after a failed authentication, is `authentication_required`; any other failure
is `payment_failed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from billing import replica
from billing.db import Database
from billing.stripe_ids import id_of, intent_id

OWING = frozenset({"incomplete", "past_due", "unpaid"})
REASONS = ("authentication_required", "payment_failed")
AUTHENTICATION_FAILURE = "payment_intent_authentication_failure"


def _reason(db: Database, client_secret: str | None) -> str:
    intent = replica.payment_intent(db, intent_id(client_secret)) if client_secret else None
    if intent is not None and (
        intent.get("status") == "requires_action"
        or (intent.get("last_payment_error") or {}).get("code") == AUTHENTICATION_FAILURE
    ):
        return "authentication_required"
    return "payment_failed"


def pending_payment(db: Database, subscription: Mapping[str, Any]) -> dict[str, Any] | None:
    """None when nothing is owed, or the customer need not act (also once it has ended)."""
    if subscription.get("status") not in OWING and not subscription.get("pending_update"):
        return None
    invoice_id = id_of(subscription.get("latest_invoice"))
    invoice = replica.invoice(db, invoice_id) if invoice_id else None
    if invoice is None or invoice.get("status") != "open" or not invoice.get("amount_remaining"):
        return None
    secret = (invoice.get("confirmation_secret") or {}).get("client_secret")
    return {
        "invoice_id": invoice["id"],
        "amount_due": invoice["amount_due"],
        "currency": invoice["currency"],
        "reason": _reason(db, secret),
        "client_secret": secret,
        "hosted_invoice_url": invoice.get("hosted_invoice_url"),
    }
