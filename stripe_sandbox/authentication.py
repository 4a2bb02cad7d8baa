"""3-D Secure in the sandbox: what Stripe.js and the customer's bank do in a browser.

A PaymentIntent or SetupIntent left `requires_action` (a test card that needs
authentication) waits for the customer. `SandboxAuthenticator.complete(client_secret,
succeed)` plays Stripe.js confirming the intent with its client secret: the
challenge passes or fails, the intent ends `succeeded` or back in
`requires_payment_method` (with Stripe's authentication failure), and an invoice
paid this way makes its subscription active, all with Stripe's events.
"""

from __future__ import annotations

from stripe_sandbox import invoice_engine, payment_intents, payment_methods, setup_intents, subscriptions
from stripe_sandbox.api import build_router
from stripe_sandbox.clock import sandbox_time
from stripe_sandbox.database import SessionSource
from stripe_sandbox.errors import SandboxError, resource_missing
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.router import Router
from stripe_sandbox.store import INTERNAL, Store
from stripe_sandbox.webhooks import WebhookSender

_CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action")


def intent_id(client_secret: str) -> str:
    """`pi_123_secret_abc` -> `pi_123` (Stripe.js reads the intent from its secret the same way)."""
    return client_secret.split("_secret_", 1)[0]


class SandboxAuthenticator:
    def __init__(
        self, database: SessionSource, *, router: Router | None = None, webhooks: WebhookSender | None = None
    ) -> None:
        self._database = database
        self._router = router or build_router()
        self._webhooks = webhooks

    def complete(self, client_secret: str, succeed: bool) -> str:
        """Confirm the intent of `client_secret` and answer its challenge; returns its new status.

        Raises SandboxError as Stripe.js would report it: resource_missing for an
        unknown secret, `*_unexpected_state` for an intent that cannot be confirmed.
        """
        try:
            with self._database.write() as session:
                store = Store(session, self._router.kinds, sandbox_time(session))
                row = store.get(payment_intents.OBJECT_TYPE, intent_id(client_secret), for_update=True) or store.get(
                    setup_intents.OBJECT_TYPE, intent_id(client_secret), for_update=True
                )
                if row is None or row.data["client_secret"] != client_secret:
                    raise resource_missing("intent", intent_id(client_secret), param="client_secret")
                if row.object_type == setup_intents.OBJECT_TYPE:
                    return self._setup(store, row, succeed)
                return self._payment(store, row, succeed)
        finally:
            if self._webhooks is not None:
                self._webhooks.notify()

    @staticmethod
    def _setup(store: Store, row: SandboxObject, succeed: bool) -> str:
        if row.data["status"] != "requires_action":
            raise SandboxError(
                400,
                f"This SetupIntent has a status of {row.data['status']}; only one that "
                "requires_action can be authenticated.",
                code="setup_intent_unexpected_state",
            )
        setup_intents.authenticate(store, row, succeed)
        return str(row.data["status"])

    @staticmethod
    def _payment(store: Store, row: SandboxObject, succeed: bool) -> str:
        data = row.data
        if data["status"] not in _CONFIRMABLE:
            raise SandboxError(
                400,
                f"This PaymentIntent has a status of {data['status']} and cannot be confirmed.",
                code="payment_intent_unexpected_state",
            )
        invoice_id = data.get(INTERNAL, {}).get("invoice")
        owner = store.get(invoice_engine.INVOICE, invoice_id, for_update=True) if invoice_id else None
        # Stripe.js confirms with the method on the intent, else the one that last failed, else the invoice's.
        failed = (data["last_payment_error"] or {}).get("payment_method") or {}
        method_id = data["payment_method"] or failed.get("id")
        method = store.get(payment_methods.OBJECT_TYPE, method_id, for_update=True) if method_id else None
        if method is None and owner is not None:
            method = invoice_engine.payment_method_for(store, owner.data)
        if method is None:
            raise SandboxError(
                400,
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
                code="payment_intent_unexpected_state",
            )
        payment_intents.authenticate(store, row, method, succeed)
        if row.data["status"] == "succeeded" and owner is not None:
            invoice_engine.paid_by_intent(store, owner)
            subscriptions.invoice_paid(store, owner.data)
        return str(row.data["status"])
