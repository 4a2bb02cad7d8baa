"""PaymentIntents: /v1/payment_intents, the payments Stripe makes for invoices.

The sandbox creates them only the way Billing does: one per finalized invoice
that asks for money, confirmed by each attempt to collect it. A test card that
needs 3-D Secure leaves the intent `requires_action` until the customer
authenticates (`authentication.py`, standing in for Stripe.js); a decline leaves
it `requires_payment_method` with the issuer's answer in `last_payment_error`.
Creating, confirming or capturing intents by request is not emulated.
"""

from __future__ import annotations

import copy

from stripe.params import PaymentIntentListParams, PaymentIntentRetrieveParams

from stripe_sandbox import events, payment_methods
from stripe_sandbox.errors import SandboxError, requires_action
from stripe_sandbox.listing import list_endpoint
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.router import Request, Router
from stripe_sandbox.store import INTERNAL, Document, ObjectKind, Store, random_token

OBJECT_TYPE = "payment_intent"
URL = "/v1/payment_intents"
KIND = ObjectKind(object_type=OBJECT_TYPE, id_prefix="pi", noun="payment_intent")

# What Billing writes on the intents of subscription invoices, by billing_reason.
_DESCRIPTIONS = {
    "subscription_create": "Subscription creation",
    "subscription_cycle": "Subscription update",
    "subscription_update": "Subscription update",
}
AUTHENTICATION_FAILURE = "payment_intent_authentication_failure"


def create_for_invoice(store: Store, invoice: Document) -> SandboxObject:
    """The intent Stripe creates when an invoice is finalized (its confirmation_secret)."""
    intent_id = store.new_id(OBJECT_TYPE)
    data: Document = {
        "id": intent_id,
        "object": OBJECT_TYPE,
        "allowed_payment_method_types": None,
        "amount": invoice["amount_due"],
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": None,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic",
        "client_secret": f"{intent_id}_secret_{random_token(25)}",
        "confirmation_method": "automatic",
        "created": store.now,
        "currency": invoice["currency"],
        "customer": invoice["customer"],
        "customer_account": None,
        "description": _DESCRIPTIONS.get(invoice["billing_reason"]),
        "excluded_payment_method_types": None,
        "hooks": None,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        # Always present (stripe-python PaymentIntent.ManagedPayments: "Set to `true` to enable Managed Payments").
        "managed_payments": {"enabled": False},
        "metadata": {},
        "next_action": None,
        "on_behalf_of": None,
        "payment_details": None,
        "payment_method": None,
        "payment_method_configuration_details": None,
        "payment_method_options": {
            "card": {
                "installments": None,
                "mandate_options": None,
                "network": None,
                "request_three_d_secure": "automatic",
            },
            "us_bank_account": {"verification_method": "automatic"},
        },
        "payment_method_types": ["card", "us_bank_account"],
        "payment_record": None,
        "presentment_details": None,
        "processing": None,
        "receipt_email": None,
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "source": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "requires_payment_method",
        "transfer_data": None,
        "transfer_group": None,
        INTERNAL: {"invoice": invoice["id"]},  # this API version no longer shows it
    }
    row = store.insert(OBJECT_TYPE, data, customer=invoice["customer"])
    events.created(store, row)
    return row


def _three_d_secure(data: Document) -> Document:
    """The next_action Stripe.js handles with its 3-D Secure challenge."""
    return {
        "type": "use_stripe_sdk",
        "use_stripe_sdk": {
            "type": "three_d_secure_redirect",
            "stripe_js": f"https://hooks.stripe.com/3d_secure_2/"
            f"hosted?merchant=acct_sandbox&payment_intent={data['id']}",
            "source": None,
        },
    }


def _save(store: Store, row: SandboxObject, data: Document, event: str) -> None:
    store.update(row, data)
    events.record(store, f"payment_intent.{event}", store.present(row))


def _failed(store: Store, row: SandboxObject, data: Document, error: SandboxError) -> None:
    data.update(
        status="requires_payment_method", payment_method=None, next_action=None, last_payment_error=error.hash()
    )
    _save(store, row, data, "payment_failed")


def _charge(store: Store, row: SandboxObject, data: Document, method: SandboxObject) -> SandboxError | None:
    """The issuer's answer to the charge, once no authentication stands in the way."""
    error = payment_methods.charge_error(store, method)
    if error is not None:
        _failed(store, row, data, error)
        return error
    data.update(status="succeeded", amount_received=data["amount"], next_action=None, last_payment_error=None)
    _save(store, row, data, "succeeded")
    return None


def confirm(store: Store, row: SandboxObject, method: SandboxObject) -> SandboxError | None:
    """An off-session attempt (Billing collecting an invoice); None when the intent succeeded."""
    data = copy.deepcopy(row.data)
    data["payment_method"] = method.id
    if payment_methods.needs_authentication(method):
        data.update(status="requires_action", next_action=_three_d_secure(data), last_payment_error=None)
        _save(store, row, data, "requires_action")
        return requires_action()
    return _charge(store, row, data, method)


def authenticate(store: Store, row: SandboxObject, method: SandboxObject, succeed: bool) -> None:
    """The customer confirms on-session with Stripe.js and answers 3-D Secure (when asked)."""
    data = copy.deepcopy(row.data)
    data["payment_method"] = method.id
    if payment_methods.needs_authentication(method) and not succeed:
        error = SandboxError(
            402,
            "We are unable to authenticate your payment method. Please choose a different payment method and "
            "try again.",
            code=AUTHENTICATION_FAILURE,
            extra={"payment_method": store.present(method)},
        )
        _failed(store, row, data, error)
        return
    _charge(store, row, data, method)


def cancel(store: Store, row: SandboxObject, reason: str) -> None:
    if row.data["status"] in ("succeeded", "canceled"):
        return
    data = {
        **copy.deepcopy(row.data),
        "status": "canceled",
        "canceled_at": store.now,
        "cancellation_reason": reason,
        "next_action": None,
    }
    _save(store, row, data, "canceled")


# -- routes -------------------------------------------------------------------------


def retrieve(req: Request) -> Document:
    return req.store.present(req.store.require(OBJECT_TYPE, req.path_params["intent"]))


def list_(req: Request) -> Document:
    return list_endpoint(req.store, req.params, OBJECT_TYPE, URL, customer=req.params.get("customer"))


def register(router: Router) -> None:
    router.add_kind(KIND)
    router.add("GET", URL, list_, PaymentIntentListParams)
    router.add("GET", URL + "/{intent}", retrieve, PaymentIntentRetrieveParams)
