"""Payment methods: /v1/payment_methods and /v1/customers/{customer}/payment_methods.

There is no card entry in the sandbox: payment methods come from Stripe's test
tokens (`pm_card_visa`, ...), passed wherever a payment method id is accepted
(attach, SetupIntent confirm, customer create, invoice pay). As on Stripe, each
use of a token creates a new `pm_...` object. Each token behaves as Stripe's
testing docs say (TEST_CARDS): approved, declined (most decline cards are refused
already when attached or set up), or needing 3-D Secure; the token, and whether
the card was set up with authentication, are kept with the object, hidden from
responses.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime

from stripe.params import (
    CustomerPaymentMethodListParams,
    CustomerPaymentMethodRetrieveParams,
    PaymentMethodAttachParams,
    PaymentMethodDetachParams,
    PaymentMethodListParams,
    PaymentMethodRetrieveParams,
)

from stripe_sandbox import events
from stripe_sandbox.errors import SandboxError, card_declined, parameter_missing, resource_missing
from stripe_sandbox.listing import list_endpoint
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.router import Request, Router
from stripe_sandbox.store import INTERNAL, Document, ObjectKind, Store, random_token

OBJECT_TYPE = "payment_method"
URL = "/v1/payment_methods"
NOUN = "PaymentMethod"  # "No such PaymentMethod: 'pm_x'"

KIND = ObjectKind(object_type=OBJECT_TYPE, id_prefix="pm", noun=NOUN)


@dataclass(frozen=True)
class Decline:
    """An issuer's refusal, as Stripe reports it (docs.stripe.com/testing#declined-payments)."""

    decline_code: str
    code: str = "card_declined"
    message: str = "Your card was declined."
    param: str | None = None


@dataclass(frozen=True)
class _TestCard:
    brand: str
    display_brand: str
    last4: str
    # What the issuer answers to a charge (None: it approves).
    decline: Decline | None = None
    # Stripe checks a card with its issuer when it is attached or set up, so a
    # declining card is refused there; 4000000000000341 alone attaches and then fails.
    declines_at_attach: bool = True
    # 3-D Secure: "always" (every payment and setup), "unless_set_up" (a setup
    # needs it; payments after an authenticated setup do not), or None.
    authentication: str | None = None


_GENERIC = Decline("generic_decline")
_LOST = Decline("lost_card")
_STOLEN = Decline("stolen_card")
_FUNDS = Decline("insufficient_funds", message="Your card has insufficient funds.")
TEST_CARDS = {
    "pm_card_visa": _TestCard("visa", "visa", "4242"),
    "pm_card_mastercard": _TestCard("mastercard", "mastercard", "4444"),
    "pm_card_amex": _TestCard("amex", "american_express", "8431"),
    "pm_card_authenticationRequired": _TestCard("visa", "visa", "3184", authentication="always"),
    "pm_card_authenticationRequiredOnSetup": _TestCard("visa", "visa", "3155", authentication="unless_set_up"),
    "pm_card_chargeDeclined": _TestCard("visa", "visa", "0002", _GENERIC),
    "pm_card_visa_chargeDeclined": _TestCard("visa", "visa", "0002", _GENERIC),
    "pm_card_chargeDeclinedInsufficientFunds": _TestCard("visa", "visa", "9995", _FUNDS),
    "pm_card_visa_chargeDeclinedInsufficientFunds": _TestCard("visa", "visa", "9995", _FUNDS),
    "pm_card_chargeDeclinedLostCard": _TestCard("visa", "visa", "9987", _LOST),
    "pm_card_visa_chargeDeclinedLostCard": _TestCard("visa", "visa", "9987", _LOST),
    "pm_card_chargeDeclinedStolenCard": _TestCard("visa", "visa", "9979", _STOLEN),
    "pm_card_visa_chargeDeclinedStolenCard": _TestCard("visa", "visa", "9979", _STOLEN),
    "pm_card_chargeDeclinedExpiredCard": _TestCard(
        "visa", "visa", "0069", Decline("expired_card", "expired_card", "Your card has expired.", "exp_month")
    ),
    "pm_card_chargeDeclinedIncorrectCvc": _TestCard(
        "visa",
        "visa",
        "0127",
        Decline("incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect.", "cvc"),
    ),
    "pm_card_chargeDeclinedProcessingError": _TestCard(
        "visa",
        "visa",
        "0119",
        Decline(
            "processing_error",
            "processing_error",
            "An error occurred while processing your card. Try again in a little bit.",
        ),
    ),
    "pm_card_chargeDeclinedFraudulent": _TestCard("visa", "visa", "0019", Decline("fraudulent")),
    "pm_card_chargeCustomerFail": _TestCard("visa", "visa", "0341", _GENERIC, declines_at_attach=False),
}
US_BANK_ACCOUNT_TOKEN = "pm_usBankAccount"
TEST_TOKENS = (*TEST_CARDS, US_BANK_ACCOUNT_TOKEN)


def _billing_details() -> Document:
    return {
        "address": dict.fromkeys(("city", "country", "line1", "line2", "postal_code", "state")),
        "email": None,
        "name": None,
        "phone": None,
        "tax_id": None,
    }


def _from_token(store: Store, token: str) -> Document:
    data: Document = {
        "id": store.new_id(OBJECT_TYPE),
        "object": OBJECT_TYPE,
        "allow_redisplay": "unspecified",
        "billing_details": _billing_details(),
        "created": store.now,
        "customer": None,
        "customer_account": None,
        "livemode": False,
        "metadata": {},
        "radar_options": None,
    }
    if token == US_BANK_ACCOUNT_TOKEN:
        data["type"] = "us_bank_account"
        data["us_bank_account"] = {
            "account_holder_type": "individual",
            "account_type": "checking",
            "bank_name": "STRIPE TEST BANK",
            "financial_connections_account": None,
            "fingerprint": random_token(16),
            "last4": "6789",
            "networks": {"preferred": "ach", "supported": ["ach"]},
            "routing_number": "110000000",
            "status_details": None,
        }
    else:
        card = TEST_CARDS[token]
        data["type"] = "card"
        data["card"] = {
            "brand": card.brand,
            "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "unchecked"},
            "country": "US",
            "display_brand": card.display_brand,
            "exp_month": 12,
            "exp_year": datetime.fromtimestamp(store.now, tz=UTC).year + 3,
            "fingerprint": random_token(16),
            "funding": "credit",
            "generated_from": None,
            "last4": card.last4,
            "networks": {"available": [card.brand], "preferred": None},
            "regulated_status": "unregulated",
            "three_d_secure_usage": {"supported": True},
            "wallet": None,
        }
    # `detached`: Stripe refuses to attach a payment method again once detached.
    # `set_up`: authenticated through a SetupIntent (see _TestCard.authentication).
    data[INTERNAL] = {"token": token, "detached": False, "set_up": False}
    return data


def resolve(store: Store, value: str, *, param: str, status: int = 400, for_update: bool = False) -> SandboxObject:
    """The payment method `value` names: a new one for a test token, else the stored one."""
    if value in TEST_TOKENS:
        return store.insert(OBJECT_TYPE, _from_token(store, value))
    row = store.get(OBJECT_TYPE, value, for_update=for_update)
    if row is None:
        raise resource_missing(NOUN, value, param=param, status=status)
    return row


def require_attached(store: Store, customer_id: str, value: str, *, param: str) -> SandboxObject:
    """A payment method of this customer's, as `default_payment_method` parameters require."""
    row = store.get(OBJECT_TYPE, value)
    if row is None and value not in TEST_TOKENS:
        raise resource_missing(NOUN, value, param=param, status=400)
    if row is None or row.data["customer"] != customer_id:
        raise SandboxError(
            400,
            f"The customer does not have a payment method with the ID {value}. The payment method must "
            "be attached to the customer.",
            code="resource_missing",
            param=param,
        )
    return row


def attached(store: Store, customer_id: str, payment_method_id: str | None) -> SandboxObject | None:
    """The payment method if it is (still) attached to the customer."""
    if not payment_method_id:
        return None
    row = store.get(OBJECT_TYPE, payment_method_id)
    return row if row is not None and row.data["customer"] == customer_id else None


def test_card(row: SandboxObject) -> _TestCard | None:
    """The test card a payment method was made from (None: not a card)."""
    return TEST_CARDS.get(row.data.get(INTERNAL, {}).get("token", ""))


def decline_error(store: Store, row: SandboxObject, decline: Decline, **extra: object) -> SandboxError:
    return card_declined(
        decline.decline_code,
        store.present(row),
        code=decline.code,
        message=decline.message,
        param=decline.param,
        extra=dict(extra),
    )


def charge_error(store: Store, row: SandboxObject) -> SandboxError | None:
    """What the issuer answers to a charge now (None: it approves).

    Bank debits succeed at once here; on Stripe they stay `processing` for days.
    """
    card = test_card(row)
    return decline_error(store, row, card.decline) if card is not None and card.decline is not None else None


def needs_authentication(row: SandboxObject) -> bool:
    """Whether a payment with this method needs 3-D Secure now."""
    card = test_card(row)
    if card is None or card.authentication is None:
        return False
    return card.authentication == "always" or not row.data.get(INTERNAL, {}).get("set_up")


def setup_needs_authentication(row: SandboxObject) -> bool:
    card = test_card(row)
    return card is not None and card.authentication is not None


def mark_set_up(store: Store, row: SandboxObject) -> None:
    """Authenticated through a SetupIntent: later off-session payments may skip 3-D Secure."""
    data = copy.deepcopy(row.data)
    data[INTERNAL] = {**data.get(INTERNAL, {}), "set_up": True}
    store.update(row, data)


def check_with_issuer(store: Store, row: SandboxObject) -> SandboxError | None:
    """The card check Stripe runs when a card is attached or set up (None: it passes)."""
    card = test_card(row)
    if card is None or card.decline is None or not card.declines_at_attach:
        return None
    return decline_error(store, row, card.decline)


def attach(store: Store, row: SandboxObject, customer_id: str) -> None:
    """Attach to a customer (an existing one: callers check), recording payment_method.attached.

    A card its issuer refuses is not attached: Stripe's card error.
    """
    owner = row.data["customer"]
    if owner == customer_id:
        return
    if owner is not None:
        raise SandboxError(
            400, "The payment method you provided has already been attached to a customer.", param="customer"
        )
    if row.data.get(INTERNAL, {}).get("detached"):
        raise SandboxError(
            400,
            "This PaymentMethod was previously used without being attached to a Customer or was detached "
            "from a Customer, and may not be used again.",
            param="payment_method",
        )
    refused = check_with_issuer(store, row)
    if refused is not None:
        raise refused
    before = store.present(row)
    store.update(row, {**copy.deepcopy(row.data), "customer": customer_id})
    store.set_customer(row, customer_id)
    events.updated(store, row, before, action="attached")


# -- routes -------------------------------------------------------------------------


def attach_route(req: Request) -> Document:
    store = req.store
    customer_id = req.params.get("customer")
    if "customer_account" in req.params:
        raise SandboxError(400, "The Stripe sandbox does not support `customer_account` yet.", param="customer_account")
    if not customer_id:
        raise parameter_missing("customer")
    customer = store.require("customer", customer_id, param="customer", status=400)
    row = resolve(store, req.path_params["payment_method"], param="payment_method", status=404, for_update=True)
    attach(store, row, customer.id)
    return store.present(row)


def detach_route(req: Request) -> Document:
    store = req.store
    row = store.require(OBJECT_TYPE, req.path_params["payment_method"], for_update=True)
    customer_id = row.data["customer"]
    if customer_id is None:
        raise SandboxError(
            400, "The payment method you provided is not attached to a customer so detachment is impossible."
        )
    before = store.present(row)
    internal = {**row.data.get(INTERNAL, {}), "detached": True}
    store.update(row, {**copy.deepcopy(row.data), "customer": None, INTERNAL: internal})
    store.set_customer(row, None)
    events.updated(store, row, before, action="detached")
    customer = store.get("customer", customer_id, for_update=True)
    if customer is not None and customer.data["invoice_settings"]["default_payment_method"] == row.id:
        # Stripe clears a default that no longer belongs to the customer.
        customer_before = store.present(customer)
        data = copy.deepcopy(customer.data)
        data["invoice_settings"]["default_payment_method"] = None
        store.update(customer, data)
        events.updated(store, customer, customer_before)
    return store.present(row)


def retrieve(req: Request) -> Document:
    return req.store.present(req.store.require(OBJECT_TYPE, req.path_params["payment_method"]))


def _list(req: Request, customer: str | None, url: str) -> Document:
    where = []
    if "type" in req.params:
        where.append(SandboxObject.data["type"].as_string() == req.params["type"])
    if "allow_redisplay" in req.params:
        where.append(SandboxObject.data["allow_redisplay"].as_string() == req.params["allow_redisplay"])
    return list_endpoint(req.store, req.params, OBJECT_TYPE, url, customer=customer, where=where)


def list_(req: Request) -> Document:
    if "customer_account" in req.params:
        raise SandboxError(400, "The Stripe sandbox does not support `customer_account` yet.", param="customer_account")
    customer = req.params.get("customer")
    if customer:
        req.store.require("customer", customer, param="customer", status=400)
    return _list(req, customer, URL)


def customer_list(req: Request) -> Document:
    customer = req.store.require("customer", req.path_params["customer"])
    return _list(req, customer.id, f"/v1/customers/{customer.id}/payment_methods")


def customer_retrieve(req: Request) -> Document:
    customer = req.store.require("customer", req.path_params["customer"])
    payment_method_id = req.path_params["payment_method"]
    row = attached(req.store, customer.id, payment_method_id)
    if row is None:
        raise resource_missing(NOUN, payment_method_id)
    return req.store.present(row)


def register(router: Router) -> None:
    router.add_kind(KIND)
    router.add("GET", URL, list_, PaymentMethodListParams)
    router.add("GET", URL + "/{payment_method}", retrieve, PaymentMethodRetrieveParams)
    router.add("POST", URL + "/{payment_method}/attach", attach_route, PaymentMethodAttachParams)
    router.add("POST", URL + "/{payment_method}/detach", detach_route, PaymentMethodDetachParams)
    router.add("GET", "/v1/customers/{customer}/payment_methods", customer_list, CustomerPaymentMethodListParams)
    router.add(
        "GET",
        "/v1/customers/{customer}/payment_methods/{payment_method}",
        customer_retrieve,
        CustomerPaymentMethodRetrieveParams,
    )
