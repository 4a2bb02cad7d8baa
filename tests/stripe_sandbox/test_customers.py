from __future__ import annotations

import re

import pytest
import stripe

ID = re.compile(r"cus_[A-Za-z0-9]{24}\Z")


def test_create_shape(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(
        params={
            "email": "ada@example.com",
            "name": "Ada",
            "phone": "+4712345678",
            "metadata": {"workspace_id": "ws_1"},
            "address": {"line1": "Main St 1", "country": "NO"},
            "preferred_locales": ["nb", "en"],
            "invoice_settings": {"footer": "Thanks"},
        }
    )
    assert ID.match(customer.id)
    data = customer.to_dict()
    assert data["object"] == "customer"
    assert data["livemode"] is False
    assert isinstance(data["created"], int)
    assert data["metadata"] == {"workspace_id": "ws_1"}
    assert data["address"] == {
        "city": None,
        "country": "NO",
        "line1": "Main St 1",
        "line2": None,
        "postal_code": None,
        "state": None,
    }
    assert data["invoice_settings"] == {
        "custom_fields": None,
        "default_payment_method": None,
        "footer": "Thanks",
        "rendering_options": None,
    }
    assert data["preferred_locales"] == ["nb", "en"]
    for field, value in {
        "balance": 0,
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
        "next_invoice_sequence": 1,
    }.items():
        assert data[field] == value, field
    assert re.fullmatch(r"[A-Z0-9]{8}", data["invoice_prefix"])


def test_retrieve(client: stripe.StripeClient, customer: stripe.Customer) -> None:
    assert client.v1.customers.retrieve(customer.id).to_dict() == customer.to_dict()


def test_retrieve_missing(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.customers.retrieve("cus_missing")
    error = raised.value
    assert error.http_status == 404
    assert error.code == "resource_missing"
    assert error.param == "id"
    assert error.user_message == "No such customer: 'cus_missing'"


def test_update_semantics(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(
        params={
            "phone": "+1",
            "description": "vip",
            "metadata": {"a": "1", "b": "2"},
            "address": {"city": "Oslo", "line1": "Old road"},
        }
    )
    updated = client.v1.customers.update(
        customer.id,
        params={"metadata": {"b": "", "c": "3"}, "phone": "", "description": "", "address": {"city": "Bergen"}},
    )
    assert updated.metadata.to_dict() == {"a": "1", "c": "3"}
    assert updated.phone is None
    assert updated.description is None
    assert updated.address.to_dict() == {
        "city": "Bergen",
        "country": None,
        "line1": None,
        "line2": None,
        "postal_code": None,
        "state": None,
    }
    cleared = client.v1.customers.update(customer.id, params={"metadata": "", "address": ""})
    assert cleared.metadata.to_dict() == {}
    assert cleared.address is None
    assert client.v1.customers.retrieve(customer.id).to_dict() == cleared.to_dict()


def test_update_invoice_settings(client: stripe.StripeClient, customer: stripe.Customer) -> None:
    card = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    updated = client.v1.customers.update(
        customer.id,
        params={
            "invoice_settings": {"default_payment_method": card.id, "custom_fields": [{"name": "VAT", "value": "1"}]}
        },
    )
    assert updated.invoice_settings.default_payment_method == card.id
    assert updated.invoice_settings.custom_fields[0].to_dict() == {"name": "VAT", "value": "1"}
    cleared = client.v1.customers.update(customer.id, params={"invoice_settings": {"custom_fields": ""}})
    assert cleared.invoice_settings.custom_fields is None
    assert cleared.invoice_settings.default_payment_method == card.id
    unset = client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": ""}})
    assert unset.invoice_settings.default_payment_method is None


def test_update_unknown_nested_param(client: stripe.StripeClient, customer: stripe.Customer) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.customers.update(customer.id, params={"invoice_settings": {"colour": "red"}})  # type: ignore[arg-type]
    assert (raised.value.code, raised.value.param) == ("parameter_unknown", "invoice_settings[colour]")


def test_delete_and_retrieve_deleted(client: stripe.StripeClient, customer: stripe.Customer) -> None:
    deleted = client.v1.customers.delete(customer.id)
    assert deleted.to_dict() == {"id": customer.id, "object": "customer", "deleted": True}
    again = client.v1.customers.retrieve(customer.id)
    assert again.to_dict() == {"id": customer.id, "object": "customer", "deleted": True}
    assert again.deleted is True
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.customers.update(customer.id, params={"name": "x"})
    assert raised.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.delete(customer.id)
    assert customer.id not in [c.id for c in client.v1.customers.list().data]


def test_delete_cancels_subscriptions(
    client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price
) -> None:
    price = monthly
    subscription = client.v1.subscriptions.create(
        params={"customer": paying_customer.id, "items": [{"price": price.id}]}
    )
    client.v1.customers.delete(paying_customer.id)
    canceled = client.v1.subscriptions.retrieve(subscription.id)
    assert canceled.status == "canceled"
    assert canceled.canceled_at is not None and canceled.ended_at is not None


def test_list_filters_by_email(client: stripe.StripeClient) -> None:
    first = client.v1.customers.create(params={"email": "x@example.com"})
    client.v1.customers.create(params={"email": "y@example.com"})
    second = client.v1.customers.create(params={"email": "x@example.com"})
    found = client.v1.customers.list(params={"email": "x@example.com"})
    assert [c.id for c in found.data] == [second.id, first.id]
    assert found.url == "/v1/customers"
    assert found.has_more is False


def test_list_limit_bounds(client: stripe.StripeClient) -> None:
    for limit in (0, 101):
        with pytest.raises(stripe.InvalidRequestError) as raised:
            client.v1.customers.list(params={"limit": limit})
        assert raised.value.param == "limit"


def test_expand_subscriptions_on_customer(
    client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price
) -> None:
    price = monthly
    subscription = client.v1.subscriptions.create(
        params={"customer": paying_customer.id, "items": [{"price": price.id}]}
    )
    expanded = client.v1.customers.retrieve(paying_customer.id, params={"expand": ["subscriptions"]})
    assert [s.id for s in expanded.subscriptions.data] == [subscription.id]
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.customers.retrieve(paying_customer.id, params={"expand": ["email"]})
    assert "cannot be expanded" in raised.value.user_message
