"""Payment methods: test tokens, attach/detach, lists, and the defaults that must be attached."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import stripe

ID = re.compile(r"pm_[A-Za-z0-9]{24}\Z")


def _attach(client: stripe.StripeClient, token: str, customer: stripe.Customer) -> stripe.PaymentMethod:
    return client.v1.payment_methods.attach(token, params={"customer": customer.id})


@pytest.mark.parametrize(
    ("token", "brand", "last4"),
    [
        ("pm_card_visa", "visa", "4242"),
        ("pm_card_mastercard", "mastercard", "4444"),
        ("pm_card_amex", "amex", "8431"),
        ("pm_card_chargeCustomerFail", "visa", "0341"),
        ("pm_card_authenticationRequired", "visa", "3184"),
        ("pm_card_authenticationRequiredOnSetup", "visa", "3155"),
    ],
)
def test_card_tokens(
    client: stripe.StripeClient, customer: stripe.Customer, token: str, brand: str, last4: str
) -> None:
    method = _attach(client, token, customer)
    assert ID.match(method.id)
    data = method.to_dict()
    assert (data["object"], data["type"], data["customer"], data["livemode"]) == (
        "payment_method",
        "card",
        customer.id,
        False,
    )
    assert (data["card"]["brand"], data["card"]["last4"], data["card"]["funding"]) == (brand, last4, "credit")
    assert data["card"]["exp_year"] > 2000 and 1 <= data["card"]["exp_month"] <= 12
    assert data["billing_details"]["address"]["country"] is None
    assert "us_bank_account" not in data and "_sandbox" not in data
    assert client.v1.payment_methods.retrieve(method.id).to_dict() == data


def test_us_bank_account_token(client: stripe.StripeClient, customer: stripe.Customer) -> None:
    method = _attach(client, "pm_usBankAccount", customer)
    assert method.type == "us_bank_account"
    account = method.us_bank_account
    assert (account.bank_name, account.last4, account.account_type) == ("STRIPE TEST BANK", "6789", "checking")
    assert "card" not in method.to_dict()


def test_each_token_use_is_a_new_payment_method(client: stripe.StripeClient, customer: stripe.Customer) -> None:
    first = _attach(client, "pm_card_visa", customer)
    second = _attach(client, "pm_card_visa", customer)
    assert first.id != second.id
    assert first.card.fingerprint != "" and second.customer == customer.id


def test_lists(client: stripe.StripeClient, customer: stripe.Customer) -> None:
    visa = _attach(client, "pm_card_visa", customer)
    bank = _attach(client, "pm_usBankAccount", customer)
    amex = _attach(client, "pm_card_amex", customer)
    other = client.v1.customers.create()
    _attach(client, "pm_card_mastercard", other)

    every = client.v1.customers.payment_methods.list(customer.id)
    assert [m.id for m in every.data] == [amex.id, bank.id, visa.id]  # all types, newest first
    assert every.url == f"/v1/customers/{customer.id}/payment_methods"
    cards = client.v1.customers.payment_methods.list(customer.id, params={"type": "card"})
    assert [m.id for m in cards.data] == [amex.id, visa.id]
    page = client.v1.customers.payment_methods.list(customer.id, params={"limit": 2})
    assert ([m.id for m in page.data], page.has_more) == ([amex.id, bank.id], True)
    rest = client.v1.customers.payment_methods.list(customer.id, params={"limit": 2, "starting_after": bank.id})
    assert ([m.id for m in rest.data], rest.has_more) == ([visa.id], False)
    top = client.v1.payment_methods.list(params={"customer": customer.id, "type": "us_bank_account"})
    assert [m.id for m in top.data] == [bank.id]
    assert client.v1.customers.payment_methods.retrieve(customer.id, visa.id).id == visa.id
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.customers.payment_methods.retrieve(other.id, visa.id)
    assert raised.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.customers.payment_methods.list("cus_missing")
    assert raised.value.http_status == 404


def test_attach_errors(client: stripe.StripeClient, customer: stripe.Customer) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.payment_methods.attach("pm_card_visa", params={})
    assert (raised.value.code, raised.value.param) == ("parameter_missing", "customer")
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.payment_methods.attach("pm_card_visa", params={"customer": "cus_missing"})
    assert (raised.value.http_status, raised.value.code, raised.value.param) == (400, "resource_missing", "customer")
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.payment_methods.attach("pm_missing", params={"customer": customer.id})
    assert raised.value.http_status == 404
    assert raised.value.user_message == "No such PaymentMethod: 'pm_missing'"
    method = _attach(client, "pm_card_visa", customer)
    assert _attach(client, method.id, customer).id == method.id  # again to the same customer: a no-op
    with pytest.raises(stripe.InvalidRequestError) as raised:
        _attach(client, method.id, client.v1.customers.create())
    assert "already been attached" in raised.value.user_message
    client.v1.payment_methods.detach(method.id)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        _attach(client, method.id, customer)
    assert "may not be used again" in raised.value.user_message
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.payment_methods.detach(method.id)
    assert "not attached to a customer" in raised.value.user_message


def test_detach_clears_the_customer_default(
    client: stripe.StripeClient, customer_with: Callable[[str], stripe.Customer]
) -> None:
    customer = customer_with("pm_card_visa")
    default = customer.invoice_settings.default_payment_method
    other = _attach(client, "pm_card_amex", customer)
    client.v1.payment_methods.detach(other.id)
    assert client.v1.customers.retrieve(customer.id).invoice_settings.default_payment_method == default
    detached = client.v1.payment_methods.detach(default)  # type: ignore[arg-type]
    assert detached.customer is None
    assert client.v1.customers.retrieve(customer.id).invoice_settings.default_payment_method is None
    assert client.v1.customers.payment_methods.list(customer.id).data == []


def test_customer_create_with_payment_method(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(
        params={
            "payment_method": "pm_card_mastercard",
            "invoice_settings": {"default_payment_method": "pm_card_mastercard"},
        }
    )
    default = customer.invoice_settings.default_payment_method
    assert ID.match(default)  # type: ignore[arg-type]
    assert client.v1.payment_methods.retrieve(default).customer == customer.id  # type: ignore[arg-type]
    attached_only = client.v1.customers.create(params={"payment_method": "pm_card_visa"})
    assert attached_only.invoice_settings.default_payment_method is None
    assert len(client.v1.customers.payment_methods.list(attached_only.id).data) == 1
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.customers.create(params={"invoice_settings": {"default_payment_method": "pm_card_visa"}})
    assert raised.value.param == "invoice_settings[default_payment_method]"
    assert len(client.v1.customers.list().data) == 2  # the failed create left nothing


def test_default_payment_method_must_be_attached(
    client: stripe.StripeClient, customer: stripe.Customer, monthly: stripe.Price
) -> None:
    theirs = _attach(client, "pm_card_visa", client.v1.customers.create())
    for value, message in (
        (theirs.id, f"The customer does not have a payment method with the ID {theirs.id}"),
        ("pm_missing", "No such PaymentMethod: 'pm_missing'"),
    ):
        with pytest.raises(stripe.InvalidRequestError) as raised:
            client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": value}})
        assert (raised.value.code, raised.value.param) == (
            "resource_missing",
            "invoice_settings[default_payment_method]",
        )
        assert raised.value.user_message.startswith(message)
        with pytest.raises(stripe.InvalidRequestError) as raised:
            client.v1.subscriptions.create(
                params={"customer": customer.id, "items": [{"price": monthly.id}], "default_payment_method": value}
            )
        assert raised.value.param == "default_payment_method"
    mine = _attach(client, "pm_card_visa", customer)
    updated = client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": mine.id}})
    assert updated.invoice_settings.default_payment_method == mine.id
