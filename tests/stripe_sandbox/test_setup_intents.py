"""SetupIntents: create, confirm with a test token or a saved payment method, cancel."""

from __future__ import annotations

import re

import pytest
import stripe


def test_create_shape(client: stripe.StripeClient, customer: stripe.Customer) -> None:
    intent = client.v1.setup_intents.create(
        params={
            "customer": customer.id,
            "allowed_payment_method_types": ["card"],
            "metadata": {"workspace_id": "ws_1"},
            "automatic_payment_methods": {"enabled": False},
        }
    )
    assert re.fullmatch(r"seti_[A-Za-z0-9]{24}", intent.id)
    assert intent.client_secret and re.fullmatch(rf"{intent.id}_secret_[A-Za-z0-9]+", intent.client_secret)
    assert (intent.object, intent.status, intent.usage, intent.customer) == (
        "setup_intent",
        "requires_payment_method",
        "off_session",
        customer.id,
    )
    # This API version restricts types with `allowed_payment_method_types`; the object reports both.
    assert intent.payment_method_types == ["card"] and intent.allowed_payment_method_types == ["card"]
    assert intent.automatic_payment_methods is None
    assert intent.payment_method is None and intent.last_setup_error is None
    assert intent.metadata.to_dict() == {"workspace_id": "ws_1"}
    assert client.v1.setup_intents.retrieve(intent.id).to_dict() == intent.to_dict()
    automatic = client.v1.setup_intents.create(
        params={"customer": customer.id, "usage": "on_session", "automatic_payment_methods": {"enabled": True}}
    )
    assert automatic.usage == "on_session"
    assert automatic.automatic_payment_methods.enabled is True
    assert automatic.allowed_payment_method_types is None
    assert automatic.payment_method_types == ["card", "us_bank_account"]


def test_confirm_with_token_attaches_but_does_not_set_default(
    client: stripe.StripeClient, customer: stripe.Customer
) -> None:
    intent = client.v1.setup_intents.create(params={"customer": customer.id})
    confirmed = client.v1.setup_intents.confirm(intent.id, params={"payment_method": "pm_card_visa"})
    assert confirmed.status == "succeeded"
    method = client.v1.payment_methods.retrieve(confirmed.payment_method)  # type: ignore[arg-type]
    assert (method.customer, method.card.last4) == (customer.id, "4242")
    # Making it the default is the integration's job (from the webhook), as on Stripe.
    assert client.v1.customers.retrieve(customer.id).invoice_settings.default_payment_method is None
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.setup_intents.confirm(intent.id, params={"payment_method": "pm_card_visa"})
    assert raised.value.code == "setup_intent_unexpected_state"
    assert len(client.v1.customers.payment_methods.list(customer.id).data) == 1


def test_confirm_with_saved_payment_method_and_create_confirm(
    client: stripe.StripeClient, customer: stripe.Customer
) -> None:
    saved = client.v1.payment_methods.attach("pm_card_amex", params={"customer": customer.id})
    intent = client.v1.setup_intents.create(params={"customer": customer.id, "payment_method": saved.id})
    assert (intent.status, intent.payment_method) == ("requires_confirmation", saved.id)
    assert client.v1.setup_intents.confirm(intent.id).payment_method == saved.id
    at_once = client.v1.setup_intents.create(
        params={"customer": customer.id, "payment_method": "pm_usBankAccount", "confirm": True}
    )
    assert at_once.status == "succeeded"
    assert client.v1.payment_methods.retrieve(at_once.payment_method).type == "us_bank_account"  # type: ignore[arg-type]


def test_cancel(client: stripe.StripeClient, customer: stripe.Customer) -> None:
    intent = client.v1.setup_intents.create(params={"customer": customer.id})
    canceled = client.v1.setup_intents.cancel(intent.id, params={"cancellation_reason": "abandoned"})
    assert (canceled.status, canceled.cancellation_reason) == ("canceled", "abandoned")
    for call in (
        lambda: client.v1.setup_intents.cancel(intent.id),
        lambda: client.v1.setup_intents.confirm(intent.id, params={"payment_method": "pm_card_visa"}),
    ):
        with pytest.raises(stripe.InvalidRequestError) as raised:
            call()
        assert raised.value.code == "setup_intent_unexpected_state"
    done = client.v1.setup_intents.create(
        params={"customer": customer.id, "payment_method": "pm_card_visa", "confirm": True}
    )
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.setup_intents.cancel(done.id)


def test_errors(client: stripe.StripeClient, customer: stripe.Customer) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.setup_intents.create(params={"customer": "cus_missing"})
    assert (raised.value.code, raised.value.param) == ("resource_missing", "customer")
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.setup_intents.create(params={"payment_method_types": ["card"]})  # type: ignore[arg-type]
    assert (raised.value.code, raised.value.param) == ("parameter_unknown", "payment_method_types")
    cards_only = client.v1.setup_intents.create(
        params={"customer": customer.id, "allowed_payment_method_types": ["card"]}
    )
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.setup_intents.confirm(cards_only.id, params={"payment_method": "pm_usBankAccount"})
    assert raised.value.param == "payment_method"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.setup_intents.confirm(cards_only.id)
    assert raised.value.param == "payment_method"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.setup_intents.confirm(cards_only.id, params={"payment_method": "pm_missing"})
    assert raised.value.code == "resource_missing"
    assert client.v1.setup_intents.retrieve(cards_only.id).status == "requires_payment_method"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.setup_intents.retrieve("seti_missing")
    assert raised.value.http_status == 404
