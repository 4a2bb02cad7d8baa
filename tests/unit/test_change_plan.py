"""The change plan of a subscription (billing.subscriptions.service.plan_change), on
Stripe objects built in memory: no app, no database, no HTTP."""

from __future__ import annotations

from typing import Any, cast

import pytest
import stripe

from billing.catalog import PRODUCT_KEY, CatalogProducts
from billing.db import Database
from billing.errors import ApiError
from billing.state import BillingState
from billing.subscriptions.service import ChangePlan, CurrentItem, ItemChange, current_items, plan_change


def subscription(items: dict[str, int], interval: str = "month") -> stripe.Subscription:
    """A subscription with one item per product (item id `si_<product>`), its prices'
    products expanded as the service reads them."""
    data: list[dict[str, Any]] = [
        {
            "object": "subscription_item",
            "id": f"si_{product}",
            "quantity": quantity,
            "price": {
                "object": "price",
                "id": f"price_{product}",
                "lookup_key": f"{product}_usd_{interval}",
                "recurring": {"interval": interval},
                "product": {"object": "product", "id": f"prod_{product}", "metadata": {PRODUCT_KEY: product}},
            },
        }
        for product, quantity in items.items()
    ]
    return stripe.Subscription.construct_from(
        {"object": "subscription", "id": "sub_1", "items": {"object": "list", "data": data}}, "sk_test_unit"
    )


class Prices:
    """The price list's one call a plan makes (a new product's price), answered from memory."""

    def price_id(self, product: str, currency: str, interval: str) -> str:
        return f"price_{product}_{currency}_{interval}_new"


class State:
    """What a plan reads of the app's state: the price list and the catalog's products
    (every price here names its product, so the copy is never read: no database)."""

    prices = Prices()
    products = CatalogProducts(cast(Database, None))


STATE = cast(BillingState, State())


def test_current_items_by_product() -> None:
    assert current_items(STATE, subscription({"users": 3, "sso": 1}, "year")) == {
        "users": CurrentItem("si_users", 3, "year"),
        "sso": CurrentItem("si_sso", 1, "year"),
    }


def test_an_item_of_a_product_outside_the_catalog_is_not_one_of_ours() -> None:
    sub = subscription({"users": 2})
    sub["items"].data[0].price.product.metadata[PRODUCT_KEY] = "printer_ink"
    sub["items"].data[0].price.lookup_key = "printer_ink_usd_month"
    assert current_items(STATE, sub) == {}


def test_an_increase_is_a_raise_and_a_decrease_a_cut() -> None:
    plan = plan_change(STATE, subscription({"users": 3, "sso": 2}), "usd", {"users": 5, "sso": 1})
    assert plan == ChangePlan(
        "month", raises=[ItemChange("users", 5, item_id="si_users")], cuts=[ItemChange("sso", 1, item_id="si_sso")]
    )


def test_unchanged_quantities_plan_nothing() -> None:
    assert plan_change(STATE, subscription({"users": 3}), "usd", {"users": 3}) == ChangePlan("month")


def test_a_product_left_out_or_at_zero_is_removed() -> None:
    plan = plan_change(STATE, subscription({"users": 3, "sso": 2, "locations": 1}), "usd", {"users": 3, "sso": 0})
    assert plan.raises == []
    assert plan.cuts == [ItemChange("sso", 0, item_id="si_sso"), ItemChange("locations", 0, item_id="si_locations")]


def test_a_new_product_is_a_raise_at_the_price_of_the_subscriptions_interval() -> None:
    plan = plan_change(STATE, subscription({"users": 3}, "year"), "eur", {"users": 3, "sso": 2})
    assert plan == ChangePlan("year", raises=[ItemChange("sso", 2, price="price_sso_eur_year_new")])


@pytest.mark.parametrize("desired", [{}, {"users": 0}, {"users": 0, "sso": 0}])
def test_nothing_left_is_refused(desired: dict[str, int]) -> None:
    with pytest.raises(ApiError) as refused:
        plan_change(STATE, subscription({"users": 3}), "usd", desired)
    assert (refused.value.status, refused.value.code) == (422, "cannot_remove_last_product")
