"""Products and prices, lookup keys included."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal

import pytest
import stripe


def test_product_create_retrieve_update(client: stripe.StripeClient) -> None:
    product = client.v1.products.create(params={"name": "Team", "metadata": {"tier": "2"}, "description": "For teams"})
    assert re.fullmatch(r"prod_[A-Za-z0-9]{24}", product.id)
    data = product.to_dict()
    assert (data["object"], data["active"], data["livemode"], data["type"]) == ("product", True, False, "service")
    assert data["images"] == [] and data["marketing_features"] == [] and data["default_price"] is None
    assert data["updated"] == data["created"]
    assert client.v1.products.retrieve(product.id).to_dict() == data
    updated = client.v1.products.update(
        product.id, params={"active": False, "description": "", "metadata": {"tier": "", "x": "y"}}
    )
    assert updated.active is False and updated.description is None
    assert updated.metadata.to_dict() == {"x": "y"}


def test_product_custom_id_and_default_price(client: stripe.StripeClient) -> None:
    product = client.v1.products.create(
        params={
            "id": "pro",
            "name": "Pro",
            "default_price_data": {"currency": "usd", "unit_amount": 500, "recurring": {"interval": "month"}},
        }
    )
    assert product.id == "pro"
    price = client.v1.prices.retrieve(product.default_price)  # type: ignore[arg-type]
    assert (price.product, price.unit_amount, price.recurring.interval) == ("pro", 500, "month")
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.products.create(params={"id": "pro", "name": "Again"})
    assert raised.value.code == "resource_already_exists"


def test_product_list_and_delete(
    client: stripe.StripeClient, make_price: Callable[..., stripe.Price], product: stripe.Product
) -> None:
    empty = client.v1.products.create(params={"name": "Empty", "active": False})
    assert [p.id for p in client.v1.products.list(params={"active": True}).data] == [product.id]
    make_price()
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.products.delete(product.id)
    assert client.v1.products.delete(empty.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.products.retrieve(empty.id)
    assert (raised.value.http_status, raised.value.code) == (404, "resource_missing")


def test_price_shape(client: stripe.StripeClient, product: stripe.Product) -> None:
    price = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "USD",
            "unit_amount": 1999,
            "nickname": "Monthly",
            "recurring": {"interval": "month", "interval_count": 3},
            "metadata": {"plan": "pro"},
        }
    )
    assert re.fullmatch(r"price_[A-Za-z0-9]{24}", price.id)
    data = price.to_dict()
    assert data["currency"] == "usd"
    assert data["type"] == "recurring"
    assert data["recurring"] == {
        "interval": "month",
        "interval_count": 3,
        "meter": None,
        "trial_period_days": None,
        "usage_type": "licensed",
    }
    assert price.unit_amount_decimal == Decimal("1999")  # a string on the wire
    assert (data["billing_scheme"], data["tax_behavior"], data["lookup_key"]) == ("per_unit", "unspecified", None)
    one_time = client.v1.prices.create(params={"product": product.id, "currency": "eur", "unit_amount": 100})
    assert (one_time.type, one_time.recurring) == ("one_time", None)


def test_price_with_product_data(client: stripe.StripeClient) -> None:
    price = client.v1.prices.create(params={"currency": "usd", "unit_amount": 100, "product_data": {"name": "Inline"}})
    assert client.v1.products.retrieve(price.product).name == "Inline"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("params", "code", "param"),
    [
        ({"currency": "usd", "unit_amount": 100}, "parameter_missing", "product"),
        ({"product": "prod_x", "unit_amount": 100}, "parameter_missing", "currency"),
        ({"product": "prod_missing", "currency": "usd", "unit_amount": 100}, "resource_missing", "product"),
        (
            {"product": "{product}", "currency": "usd", "unit_amount": 100, "recurring": {"interval": "fortnight"}},
            None,
            "recurring[interval]",
        ),
        (
            {"product": "{product}", "currency": "usd", "unit_amount": "lots"},
            "parameter_invalid_integer",
            "unit_amount",
        ),
    ],
)
def test_price_create_errors(
    client: stripe.StripeClient, product: stripe.Product, params: dict[str, object], code: str | None, param: str
) -> None:
    params = {k: (product.id if v == "{product}" else v) for k, v in params.items()}
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.prices.create(params=params)  # type: ignore[arg-type]
    assert (raised.value.http_status, raised.value.code, raised.value.param) == (400, code, param)


def test_lookup_key_unique_and_transfer(client: stripe.StripeClient, make_price: Callable[..., stripe.Price]) -> None:
    old = make_price(lookup_key="pro_monthly")
    with pytest.raises(stripe.InvalidRequestError) as raised:
        make_price(lookup_key="pro_monthly")
    assert raised.value.param == "lookup_key"
    assert raised.value.user_message == f"A price (`{old.id}`) already uses that lookup key."

    new = make_price(lookup_key="pro_monthly", unit_amount=1200, transfer_lookup_key=True)
    assert new.lookup_key == "pro_monthly"
    assert client.v1.prices.retrieve(old.id).lookup_key is None
    found = client.v1.prices.list(params={"lookup_keys": ["pro_monthly"]})
    assert [p.id for p in found.data] == [new.id]

    # Moving it back through an update.
    moved = client.v1.prices.update(old.id, params={"lookup_key": "pro_monthly", "transfer_lookup_key": True})
    assert moved.lookup_key == "pro_monthly"
    assert client.v1.prices.retrieve(new.id).lookup_key is None
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.prices.update(new.id, params={"lookup_key": "pro_monthly"})
    # Clearing frees the key.
    client.v1.prices.update(old.id, params={"lookup_key": ""})
    assert client.v1.prices.update(new.id, params={"lookup_key": "pro_monthly"}).lookup_key == "pro_monthly"


def test_price_update(client: stripe.StripeClient, monthly: stripe.Price) -> None:
    updated = client.v1.prices.update(monthly.id, params={"active": False, "nickname": "Old", "metadata": {"a": "b"}})
    assert (updated.active, updated.nickname, updated.metadata.to_dict()) == (False, "Old", {"a": "b"})
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.prices.update(monthly.id, params={"unit_amount": 5})  # type: ignore[arg-type]
    assert (raised.value.code, raised.value.param) == ("parameter_unknown", "unit_amount")


def test_price_list_filters_and_expand(
    client: stripe.StripeClient, product: stripe.Product, make_price: Callable[..., stripe.Price]
) -> None:
    monthly = make_price(lookup_key="m")
    yearly = make_price(lookup_key="y", recurring={"interval": "year"}, unit_amount=10000)
    euro = make_price(currency="eur", lookup_key="e")
    one_time = make_price(recurring=None)
    archived = make_price(active=False)
    other = client.v1.products.create(params={"name": "Other"})
    foreign = client.v1.prices.create(params={"product": other.id, "currency": "usd", "unit_amount": 1})

    def ids(**params: object) -> list[str]:
        return [p.id for p in client.v1.prices.list(params=params).data]  # type: ignore[arg-type]

    assert ids(lookup_keys=["m", "y", "nope"]) == [yearly.id, monthly.id]
    assert ids(lookup_keys=["nope"]) == []
    assert ids(active=False) == [archived.id]
    assert euro.id in ids(currency="eur") and monthly.id not in ids(currency="eur")
    assert ids(type="one_time") == [foreign.id, one_time.id]
    assert ids(product=other.id) == [foreign.id]
    assert ids(recurring={"interval": "year"}) == [yearly.id]

    expanded = client.v1.prices.list(params={"lookup_keys": ["m"], "expand": ["data.product"]})
    assert expanded.data[0].product.id == product.id
    assert expanded.data[0].product.name == "Pro"
    single = client.v1.prices.retrieve(monthly.id, params={"expand": ["product"]})
    assert single.product.object == "product"
