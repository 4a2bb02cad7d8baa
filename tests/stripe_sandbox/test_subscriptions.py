from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import stripe

from stripe_sandbox import SandboxClock, SqlSessions
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.periods import add_interval

DAY = 86400


def _sub(
    client: stripe.StripeClient, customer: stripe.Customer, price: stripe.Price, **params: object
) -> stripe.Subscription:
    return client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}], **params})  # type: ignore[arg-type]


def test_create_active_shape(
    client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price
) -> None:
    subscription = client.v1.subscriptions.create(
        params={
            "customer": paying_customer.id,
            "items": [{"price": monthly.id, "quantity": 3, "metadata": {"seat": "x"}}],
            "metadata": {"workspace_id": "ws_1"},
        }
    )
    assert re.fullmatch(r"sub_[A-Za-z0-9]{24}", subscription.id)
    data = subscription.to_dict()
    assert data["object"] == "subscription"
    assert data["status"] == "active"
    assert data["customer"] == paying_customer.id
    assert data["currency"] == "usd"
    assert data["metadata"] == {"workspace_id": "ws_1"}
    assert data["collection_method"] == "charge_automatically"
    assert data["start_date"] == data["created"] == data["billing_cycle_anchor"]
    for field in (
        "cancel_at",
        "canceled_at",
        "ended_at",
        "trial_start",
        "trial_end",
        "pause_collection",
        "default_payment_method",
        "days_until_due",
    ):
        assert data[field] is None, field
    assert client.v1.invoices.retrieve(data["latest_invoice"]).status == "paid"
    assert data["cancel_at_period_end"] is False
    # This API version keeps periods on the items only.
    assert "current_period_start" not in data and "current_period_end" not in data

    items = subscription["items"]
    assert items.object == "list" and len(items.data) == 1
    item = items.data[0]
    assert re.fullmatch(r"si_[A-Za-z0-9]{24}", item.id)
    assert item.object == "subscription_item"
    assert item.subscription == subscription.id
    assert item.quantity == 3
    assert item.metadata.to_dict() == {"seat": "x"}
    assert item.price.to_dict() == client.v1.prices.retrieve(monthly.id).to_dict()
    assert (item.plan.object, item.plan.id, item.plan.amount, item.plan.interval) == ("plan", monthly.id, 1000, "month")
    assert item.current_period_start == data["created"]
    assert item.current_period_end == add_interval(data["created"], "month", 1)
    assert client.v1.subscriptions.retrieve(subscription.id).to_dict() == data


def test_yearly_period(
    client: stripe.StripeClient, paying_customer: stripe.Customer, make_price: Callable[..., stripe.Price]
) -> None:
    yearly = make_price(recurring={"interval": "year"})
    item = _sub(client, paying_customer, yearly)["items"].data[0]
    assert item.current_period_end == add_interval(item.current_period_start, "year", 1)
    assert item.current_period_end - item.current_period_start in (365 * DAY, 366 * DAY)


def test_trial(client: stripe.StripeClient, customer: stripe.Customer, monthly: stripe.Price) -> None:
    subscription = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": monthly.id}],
            "trial_period_days": 14,
            "trial_settings": {"end_behavior": {"missing_payment_method": "cancel"}},
        }
    )
    assert subscription.status == "trialing"
    assert subscription.trial_end - subscription.trial_start == 14 * DAY
    assert subscription.billing_cycle_anchor == subscription.trial_end
    assert subscription.trial_settings.end_behavior.missing_payment_method == "cancel"
    item = subscription["items"].data[0]
    assert (item.current_period_start, item.current_period_end) == (subscription.trial_start, subscription.trial_end)


def test_trial_end_timestamp_and_now(
    client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price, clock: SandboxClock
) -> None:
    now = clock.now()
    subscription = _sub(client, paying_customer, monthly, trial_end=now + 3 * DAY)
    assert subscription.status == "trialing"
    assert subscription["items"].data[0].current_period_end == now + 3 * DAY
    ended = client.v1.subscriptions.update(subscription.id, params={"trial_end": "now"})
    assert ended.status == "active"
    item = ended["items"].data[0]
    assert ended.trial_end == item.current_period_start == ended.billing_cycle_anchor
    assert item.current_period_end == add_interval(item.current_period_start, "month", 1)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        _sub(client, paying_customer, monthly, trial_end=now - 10)
    assert raised.value.param == "trial_end"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        _sub(client, paying_customer, monthly, trial_end=now + DAY, trial_period_days=3)
    assert raised.value.param == "trial_end"


def test_trial_end_now_without_payment_method(
    client: stripe.StripeClient, customer: stripe.Customer, monthly: stripe.Price
) -> None:
    pausing = _sub(
        client,
        customer,
        monthly,
        trial_period_days=7,
        trial_settings={"end_behavior": {"missing_payment_method": "pause"}},
    )
    assert client.v1.subscriptions.update(pausing.id, params={"trial_end": "now"}).status == "paused"
    invoicing = _sub(client, customer, monthly, trial_period_days=7)
    assert client.v1.subscriptions.update(invoicing.id, params={"trial_end": "now"}).status == "past_due"


def test_no_payment_method(client: stripe.StripeClient, customer: stripe.Customer, monthly: stripe.Price) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        _sub(client, customer, monthly)
    assert raised.value.http_status == 400
    assert raised.value.user_message.startswith(
        "This customer has no attached payment source or default payment method."
    )
    incomplete = _sub(client, customer, monthly, payment_behavior="default_incomplete")
    assert incomplete.status == "incomplete"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        _sub(client, customer, monthly, default_payment_method="pm_123")
    assert (raised.value.code, raised.value.param) == ("resource_missing", "default_payment_method")
    card = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    with_param = _sub(client, customer, monthly, default_payment_method=card.id)
    assert (with_param.status, with_param.default_payment_method) == ("active", card.id)
    invoiced = _sub(client, customer, monthly, collection_method="send_invoice", days_until_due=30)
    assert (invoiced.status, invoiced.days_until_due) == ("active", 30)


def test_free_price_needs_no_payment_method(
    client: stripe.StripeClient, customer: stripe.Customer, make_price: Callable[..., stripe.Price]
) -> None:
    assert _sub(client, customer, make_price(unit_amount=0)).status == "active"


def test_send_invoice_requires_days_until_due(
    client: stripe.StripeClient, customer: stripe.Customer, monthly: stripe.Price
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        _sub(client, customer, monthly, collection_method="send_invoice")
    assert (raised.value.code, raised.value.param) == ("parameter_missing", "days_until_due")


@pytest.mark.parametrize(
    ("params", "status", "code", "param"),
    [
        ({"customer": "cus_missing"}, 400, "resource_missing", "customer"),
        ({"items": [{"price": "price_missing"}]}, 400, "resource_missing", "items[0][price]"),
        ({"items": [{"price": "{price}", "colour": "red"}]}, 400, "parameter_unknown", "items[0][colour]"),
        ({"items": [{"price": "{price}", "quantity": "two"}]}, 400, "parameter_invalid_integer", "items[0][quantity]"),
        ({"items": None}, 400, "parameter_missing", "items"),
        ({"customer": None}, 400, "parameter_missing", "customer"),
        ({"collection_method": "by_pigeon"}, 400, None, "collection_method"),
        ({"payment_behavior": "hope"}, 400, None, "payment_behavior"),
    ],
)
def test_create_errors(
    client: stripe.StripeClient,
    paying_customer: stripe.Customer,
    monthly: stripe.Price,
    params: dict[str, object],
    status: int,
    code: str | None,
    param: str,
) -> None:
    base: dict[str, object] = {"customer": paying_customer.id, "items": [{"price": monthly.id}]}
    merged = {**base, **params}
    if isinstance(merged["items"], list):
        merged["items"] = [
            {k: (monthly.id if v == "{price}" else v) for k, v in item.items()} for item in merged["items"]
        ]
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.subscriptions.create(params=merged)  # type: ignore[arg-type]
    assert (raised.value.http_status, raised.value.code, raised.value.param) == (status, code, param)
    if code == "resource_missing" and param == "customer":
        assert raised.value.user_message == "No such customer: 'cus_missing'"


def test_items_must_share_currency_and_interval(
    client: stripe.StripeClient, paying_customer: stripe.Customer, make_price: Callable[..., stripe.Price]
) -> None:
    usd = make_price()
    eur = make_price(currency="eur")
    yearly = make_price(recurring={"interval": "year"})
    one_time = make_price(recurring=None)
    for other, field in ((eur, "currency"), (yearly, "interval")):
        with pytest.raises(stripe.InvalidRequestError) as raised:
            client.v1.subscriptions.create(
                params={"customer": paying_customer.id, "items": [{"price": usd.id}, {"price": other.id}]}
            )
        assert raised.value.user_message.endswith(f"Found mismatch in {field} field.")
    with pytest.raises(stripe.InvalidRequestError) as raised:
        _sub(client, paying_customer, one_time)
    assert raised.value.param == "items[0][price]"


def test_update_metadata_cancel_at_period_end_and_pause(
    client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price
) -> None:
    subscription = _sub(client, paying_customer, monthly, metadata={"a": "1", "b": "2"})
    period_end = subscription["items"].data[0].current_period_end
    updated = client.v1.subscriptions.update(
        subscription.id,
        params={
            "metadata": {"a": "", "c": "3"},
            "cancel_at_period_end": True,
            "pause_collection": {"behavior": "void"},
        },
    )
    assert updated.metadata.to_dict() == {"b": "2", "c": "3"}
    assert updated.cancel_at_period_end is True
    assert updated.cancel_at == period_end
    assert updated.cancellation_details.reason == "cancellation_requested"
    assert updated.pause_collection.to_dict() == {"behavior": "void", "resumes_at": None}
    assert updated.status == "active"
    resumed = client.v1.subscriptions.update(
        subscription.id, params={"pause_collection": "", "cancel_at_period_end": False}
    )
    assert resumed.pause_collection is None
    assert (resumed.cancel_at_period_end, resumed.cancel_at) == (False, None)


def test_update_items(
    client: stripe.StripeClient, paying_customer: stripe.Customer, make_price: Callable[..., stripe.Price]
) -> None:
    base = make_price()
    addon = make_price(unit_amount=200)
    upgrade = make_price(unit_amount=2000)
    yearly = make_price(recurring={"interval": "year"})
    subscription = _sub(client, paying_customer, base)
    item = subscription["items"].data[0]
    period = (item.current_period_start, item.current_period_end)

    changed = client.v1.subscriptions.update(
        subscription.id,
        params={
            "items": [{"id": item.id, "price": upgrade.id, "quantity": 5}, {"price": addon.id, "quantity": 2}],
            "proration_behavior": "none",
        },
    )
    by_price = {i.price.id: i for i in changed["items"].data}
    assert set(by_price) == {upgrade.id, addon.id}
    assert by_price[upgrade.id].id == item.id and by_price[upgrade.id].quantity == 5
    assert by_price[addon.id].quantity == 2
    assert all((i.current_period_start, i.current_period_end) == period for i in changed["items"].data)

    removed = client.v1.subscriptions.update(
        subscription.id, params={"items": [{"id": by_price[addon.id].id, "deleted": True}]}
    )
    assert [i.price.id for i in removed["items"].data] == [upgrade.id]

    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.subscriptions.update(subscription.id, params={"items": [{"id": "si_missing", "quantity": 1}]})
    assert (raised.value.code, raised.value.param) == ("resource_missing", "items[0][id]")
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.update(subscription.id, params={"items": [{"id": item.id, "deleted": True}]})

    switched = client.v1.subscriptions.update(subscription.id, params={"items": [{"id": item.id, "price": yearly.id}]})
    new_item = switched["items"].data[0]
    assert new_item.current_period_end == add_interval(new_item.current_period_start, "year", 1)
    assert switched.billing_cycle_anchor == new_item.current_period_start


def test_cancel(client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price) -> None:
    subscription = _sub(client, paying_customer, monthly)
    canceled = client.v1.subscriptions.cancel(
        subscription.id, params={"cancellation_details": {"comment": "too pricey", "feedback": "too_expensive"}}
    )
    assert canceled.status == "canceled"
    assert canceled.canceled_at == canceled.ended_at
    assert canceled.cancellation_details.to_dict() == {
        "comment": "too pricey",
        "feedback": "too_expensive",
        "reason": "cancellation_requested",
    }
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.subscriptions.cancel(subscription.id)
    assert raised.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.update(subscription.id, params={"cancel_at_period_end": True})
    assert client.v1.subscriptions.update(subscription.id, params={"metadata": {"k": "v"}}).metadata.k == "v"


def test_list_status_and_customer(
    client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price
) -> None:
    other = client.v1.customers.create(
        params={
            "payment_method": "pm_card_mastercard",
            "invoice_settings": {"default_payment_method": "pm_card_mastercard"},
        }
    )
    first = _sub(client, paying_customer, monthly)
    second = _sub(client, paying_customer, monthly, trial_period_days=3)
    third = _sub(client, other, monthly)
    client.v1.subscriptions.cancel(first.id)

    def ids(**params: object) -> list[str]:
        return [s.id for s in client.v1.subscriptions.list(params=params).data]  # type: ignore[arg-type]

    assert ids() == [third.id, second.id]
    assert ids(customer=paying_customer.id) == [second.id]
    assert ids(customer=paying_customer.id, status="all") == [second.id, first.id]
    assert ids(status="canceled") == [first.id]
    assert ids(status="ended") == [first.id]
    assert ids(status="trialing") == [second.id]
    assert ids(price=monthly.id, status="all") == [third.id, second.id, first.id]
    assert ids(limit=1) == [third.id]
    assert ids(limit=1, starting_after=third.id) == [second.id]


def test_expand_on_list_and_retrieve(
    client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price, product: stripe.Product
) -> None:
    subscription = _sub(client, paying_customer, monthly, expand=["customer", "latest_invoice"])
    assert subscription.customer.id == paying_customer.id
    assert subscription.latest_invoice.object == "invoice" and subscription.latest_invoice.status == "paid"
    listed = client.v1.subscriptions.list(params={"expand": ["data.items.data.price.product", "data.customer"]})
    item = listed.data[0]["items"].data[0]
    assert item.price.product.id == product.id and item.price.product.name == "Pro"
    assert listed.data[0].customer.email == "payer@example.com"


def test_due_at_tracks_next_transition(
    client: stripe.StripeClient, database: SqlSessions, customer: stripe.Customer, monthly: stripe.Price
) -> None:
    # What advancing the clock will use to find trials ending and periods rolling over.
    subscription = _sub(client, customer, monthly, trial_period_days=5)

    def due() -> int | None:
        with database.read() as session:
            row = session.get(SandboxObject, subscription.id)
            assert row is not None
            return row.due_at

    assert due() == subscription.trial_end - 3 * DAY  # customer.subscription.trial_will_end
    client.v1.subscriptions.update(subscription.id, params={"cancel_at": subscription.trial_end - 4 * DAY})  # type: ignore[arg-type]
    assert due() == subscription.trial_end - 4 * DAY
    client.v1.subscriptions.cancel(subscription.id)
    assert due() is None
