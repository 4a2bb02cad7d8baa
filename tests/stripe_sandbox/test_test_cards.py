"""Each of Stripe's test payment methods against what Stripe's testing docs say it does
(docs.stripe.com/testing: declined payments, 3-D Secure, "attach succeeds, charges fail")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import stripe

from stripe_sandbox import SandboxAuthenticator, SqlSessions
from stripe_sandbox.authentication import intent_id
from stripe_sandbox.errors import SandboxError

# token -> (error code, decline code), as the docs' "Declined payments" table gives them.
DECLINES = {
    "pm_card_chargeDeclined": ("card_declined", "generic_decline"),
    "pm_card_visa_chargeDeclined": ("card_declined", "generic_decline"),
    "pm_card_chargeDeclinedInsufficientFunds": ("card_declined", "insufficient_funds"),
    "pm_card_visa_chargeDeclinedInsufficientFunds": ("card_declined", "insufficient_funds"),
    "pm_card_chargeDeclinedLostCard": ("card_declined", "lost_card"),
    "pm_card_visa_chargeDeclinedLostCard": ("card_declined", "lost_card"),
    "pm_card_chargeDeclinedStolenCard": ("card_declined", "stolen_card"),
    "pm_card_visa_chargeDeclinedStolenCard": ("card_declined", "stolen_card"),
    "pm_card_chargeDeclinedFraudulent": ("card_declined", "fraudulent"),
    "pm_card_chargeDeclinedExpiredCard": ("expired_card", "expired_card"),
    "pm_card_chargeDeclinedIncorrectCvc": ("incorrect_cvc", "incorrect_cvc"),
    "pm_card_chargeDeclinedProcessingError": ("processing_error", "processing_error"),
}
APPROVED = ("pm_card_visa", "pm_card_mastercard", "pm_card_amex")


@pytest.fixture
def authenticator(database: SqlSessions) -> SandboxAuthenticator:
    return SandboxAuthenticator(database)


@pytest.fixture
def price(make_price: Callable[..., stripe.Price]) -> stripe.Price:
    return make_price()


def _subscribe(client: stripe.StripeClient, customer: str, price: stripe.Price, **params: Any) -> stripe.Subscription:
    subscription = client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": price.id}], **params}  # type: ignore[arg-type]
    )
    # Stripe expands at most 4 levels deep: the invoice's intent is expanded from the invoice.
    subscription["latest_invoice"] = client.v1.invoices.retrieve(
        str(subscription.latest_invoice),
        params={"expand": ["confirmation_secret", "payments.data.payment.payment_intent"]},
    )
    return subscription


def _default(client: stripe.StripeClient, customer: stripe.Customer, method: str) -> None:
    client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": method}})


@pytest.mark.parametrize("token", APPROVED)
def test_approved_cards_attach_set_up_and_pay(
    client: stripe.StripeClient, customer: stripe.Customer, price: stripe.Price, token: str
) -> None:
    intent = client.v1.setup_intents.create(params={"customer": customer.id})
    confirmed = client.v1.setup_intents.confirm(intent.id, params={"payment_method": token})
    assert (confirmed.status, confirmed.next_action) == ("succeeded", None)
    _default(client, customer, str(confirmed.payment_method))
    subscription = _subscribe(client, customer.id, price)
    assert (subscription.status, subscription.latest_invoice.status) == ("active", "paid")
    assert subscription.latest_invoice.payments.data[0].payment.payment_intent.status == "succeeded"


@pytest.mark.parametrize("token", sorted(DECLINES))
def test_decline_cards_are_refused_at_attach(
    client: stripe.StripeClient, customer: stripe.Customer, token: str
) -> None:
    with pytest.raises(stripe.CardError) as raised:
        client.v1.payment_methods.attach(token, params={"customer": customer.id})
    assert (raised.value.http_status, raised.value.code, raised.value.error.decline_code) == (402, *DECLINES[token])
    assert raised.value.error.type == "card_error"
    assert client.v1.customers.payment_methods.list(customer.id).data == []
    with pytest.raises(stripe.CardError):  # the same check when a customer is created with it
        client.v1.customers.create(params={"payment_method": token})


@pytest.mark.parametrize("token", sorted(DECLINES))
def test_decline_cards_fail_setup(client: stripe.StripeClient, customer: stripe.Customer, token: str) -> None:
    intent = client.v1.setup_intents.create(params={"customer": customer.id})
    with pytest.raises(stripe.CardError) as raised:
        client.v1.setup_intents.confirm(intent.id, params={"payment_method": token})
    assert (raised.value.code, raised.value.error.decline_code) == DECLINES[token]
    assert raised.value.error.setup_intent.id == intent.id
    after = client.v1.setup_intents.retrieve(intent.id)
    assert (after.status, after.payment_method) == ("requires_payment_method", None)
    assert (after.last_setup_error.code, after.last_setup_error.decline_code) == DECLINES[token]
    assert client.v1.customers.payment_methods.list(customer.id).data == []
    assert [e.type for e in client.v1.events.list(params={"type": "setup_intent.setup_failed"}).data] == [
        "setup_intent.setup_failed"
    ]


def test_charge_customer_fail_attaches_then_every_charge_declines(
    client: stripe.StripeClient, customer: stripe.Customer, price: stripe.Price
) -> None:
    method = client.v1.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": customer.id})
    intent = client.v1.setup_intents.create(params={"customer": customer.id})
    assert (
        client.v1.setup_intents.confirm(intent.id, params={"payment_method": "pm_card_chargeCustomerFail"}).status
        == "succeeded"
    )
    _default(client, customer, method.id)
    with pytest.raises(stripe.CardError) as raised:
        _subscribe(client, customer.id, price, payment_behavior="error_if_incomplete")
    assert (raised.value.code, raised.value.error.decline_code) == ("card_declined", "generic_decline")
    subscription = _subscribe(client, customer.id, price)
    intent_after = subscription.latest_invoice.payments.data[0].payment.payment_intent
    assert (subscription.status, intent_after.status) == ("incomplete", "requires_payment_method")
    with pytest.raises(stripe.CardError):
        client.v1.invoices.pay(subscription.latest_invoice.id)


def test_authentication_required_needs_3ds_on_setup_and_on_every_payment(
    client: stripe.StripeClient, customer: stripe.Customer, price: stripe.Price, authenticator: SandboxAuthenticator
) -> None:
    intent = client.v1.setup_intents.create(params={"customer": customer.id})
    pending = client.v1.setup_intents.confirm(intent.id, params={"payment_method": "pm_card_authenticationRequired"})
    assert (pending.status, pending.next_action.type) == ("requires_action", "use_stripe_sdk")
    assert client.v1.customers.payment_methods.list(customer.id).data == []  # not saved until authenticated
    assert authenticator.complete(str(pending.client_secret), succeed=True) == "succeeded"
    method = client.v1.setup_intents.retrieve(intent.id).payment_method
    _default(client, customer, str(method))
    # Set up or not, this card asks again for every payment.
    with pytest.raises(stripe.CardError) as raised:
        _subscribe(client, customer.id, price, payment_behavior="error_if_incomplete")
    assert raised.value.code == "invoice_payment_intent_requires_action"
    subscription = _subscribe(client, customer.id, price, payment_behavior="allow_incomplete")
    invoice = subscription.latest_invoice
    payment = invoice.payments.data[0].payment.payment_intent
    assert (subscription.status, invoice.status, payment.status) == ("incomplete", "open", "requires_action")
    assert invoice.confirmation_secret.client_secret == payment.client_secret
    assert invoice.confirmation_secret.type == "payment_intent"
    assert authenticator.complete(invoice.confirmation_secret.client_secret, succeed=True) == "succeeded"
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"
    assert client.v1.invoices.retrieve(invoice.id).status == "paid"
    types = [e.type for e in client.v1.events.list().data]
    for expected in ("invoice.payment_action_required", "payment_intent.requires_action", "payment_intent.succeeded"):
        assert expected in types


def test_failed_authentication_leaves_the_payment_to_do(
    client: stripe.StripeClient,
    price: stripe.Price,
    customer_with: Callable[[str], stripe.Customer],
    authenticator: SandboxAuthenticator,
) -> None:
    customer = customer_with("pm_card_authenticationRequired")
    subscription = _subscribe(client, customer.id, price)
    secret = subscription.latest_invoice.confirmation_secret.client_secret
    assert authenticator.complete(secret, succeed=False) == "requires_payment_method"
    payment = client.v1.payment_intents.retrieve(intent_id(secret))
    assert payment.last_payment_error.code == "payment_intent_authentication_failure"
    assert client.v1.subscriptions.retrieve(subscription.id).status == "incomplete"
    assert client.v1.invoices.retrieve(subscription.latest_invoice.id).status == "open"
    # The customer may try again with the same secret.
    assert authenticator.complete(secret, succeed=True) == "succeeded"
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"
    with pytest.raises(SandboxError) as raised:
        authenticator.complete(secret, succeed=True)
    assert raised.value.code == "payment_intent_unexpected_state"
    with pytest.raises(SandboxError):
        authenticator.complete(secret + "x", succeed=True)


def test_authentication_required_on_setup_only_asks_once(
    client: stripe.StripeClient, customer: stripe.Customer, price: stripe.Price, authenticator: SandboxAuthenticator
) -> None:
    # Attached without a setup, the card asks for authentication on payment ...
    direct = client.v1.payment_methods.attach("pm_card_authenticationRequiredOnSetup", params={"customer": customer.id})
    _default(client, customer, direct.id)
    assert _subscribe(client, customer.id, price).status == "incomplete"
    # ... set up with 3-D Secure, later off-session payments go through.
    intent = client.v1.setup_intents.create(params={"customer": customer.id})
    pending = client.v1.setup_intents.confirm(
        intent.id, params={"payment_method": "pm_card_authenticationRequiredOnSetup"}
    )
    assert pending.status == "requires_action"
    failed = authenticator.complete(str(pending.client_secret), succeed=False)
    assert failed == "requires_payment_method"
    assert client.v1.setup_intents.retrieve(intent.id).last_setup_error.code == "setup_intent_authentication_failure"
    again = client.v1.setup_intents.confirm(
        intent.id, params={"payment_method": "pm_card_authenticationRequiredOnSetup"}
    )
    assert authenticator.complete(str(again.client_secret), succeed=True) == "succeeded"
    _default(client, customer, str(client.v1.setup_intents.retrieve(intent.id).payment_method))
    subscription = _subscribe(client, customer.id, price, payment_behavior="error_if_incomplete")
    assert (subscription.status, subscription.latest_invoice.status) == ("active", "paid")
