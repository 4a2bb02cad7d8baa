"""Coupons and discounts: a subscription's discounts come off its invoices, as Stripe shows them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import stripe

from stripe_sandbox import SandboxClock


@pytest.fixture
def price(make_price: Callable[..., stripe.Price]) -> stripe.Price:
    return make_price(unit_amount=1000)


def _invoice(client: stripe.StripeClient, invoice_id: str) -> stripe.Invoice:
    return client.v1.invoices.retrieve(invoice_id, {"expand": ["discounts.source.coupon"]})


def test_percent_off_forever_on_every_invoice(
    client: stripe.StripeClient, paying_customer: stripe.Customer, price: stripe.Price, clock: SandboxClock
) -> None:
    coupon = client.v1.coupons.create({"percent_off": 25, "duration": "forever", "name": "Launch 25%"})
    assert (coupon.object, coupon.valid, coupon.times_redeemed) == ("coupon", True, 0)
    sub = client.v1.subscriptions.create(
        {
            "customer": paying_customer.id,
            "items": [{"price": price.id, "quantity": 3}],
            "discounts": [{"coupon": coupon.id}],
        }
    )
    [discount_id] = sub.discounts
    assert str(discount_id).startswith("di_")
    invoice = client.v1.invoices.retrieve(str(sub.latest_invoice))
    assert (invoice.subtotal, invoice.total, invoice.amount_paid) == (3000, 2250, 2250)
    assert invoice.discounts == [discount_id]  # ids unless expanded
    assert invoice.total_discount_amounts[0].amount == 750
    assert invoice.lines.data[0].discount_amounts[0].amount == 750
    expanded = _invoice(client, invoice.id).discounts[0]
    assert expanded.source.coupon.name == "Launch 25%"
    assert client.v1.coupons.retrieve(coupon.id).times_redeemed == 1
    clock.advance_and_process(days=32)
    renewal = client.v1.invoices.list({"subscription": sub.id}).data[0]
    assert (renewal.billing_reason, renewal.total) == ("subscription_cycle", 2250)


def test_amount_off_once_applies_to_one_invoice(
    client: stripe.StripeClient, paying_customer: stripe.Customer, price: stripe.Price, clock: SandboxClock
) -> None:
    coupon = client.v1.coupons.create({"amount_off": 500, "currency": "usd", "id": "WELCOME"})
    sub = client.v1.subscriptions.create(
        {"customer": paying_customer.id, "items": [{"price": price.id}], "discounts": [{"coupon": "WELCOME"}]}
    )
    assert client.v1.invoices.retrieve(str(sub.latest_invoice)).total == 500
    assert client.v1.subscriptions.retrieve(sub.id).discounts == []  # used up
    clock.advance_and_process(days=32)
    assert client.v1.invoices.list({"subscription": sub.id}).data[0].total == 1000
    assert coupon.duration == "once"


def test_discount_added_later_and_bad_coupons(
    client: stripe.StripeClient, paying_customer: stripe.Customer, price: stripe.Price
) -> None:
    sub = client.v1.subscriptions.create({"customer": paying_customer.id, "items": [{"price": price.id}]})
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.subscriptions.update(sub.id, {"discounts": [{"coupon": "missing"}]})
    assert (raised.value.code, raised.value.param) == ("resource_missing", "discounts[0][coupon]")
    coupon = client.v1.coupons.create({"percent_off": 10, "duration": "repeating", "duration_in_months": 3})
    updated = client.v1.subscriptions.update(sub.id, {"discounts": [{"coupon": coupon.id}]})
    assert len(updated.discounts) == 1
    preview = client.v1.invoices.create_preview({"subscription": sub.id})
    assert (preview.subtotal, preview.total) == (1000, 900)
    assert client.v1.subscriptions.update(sub.id, {"discounts": ""}).discounts == []
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.coupons.create({"duration": "once"})
