"""Stripe's limits on one subscription's invoices (docs.stripe.com/rate-limits): 10 new
invoices a minute, 20 a day. An update that would make one more is a 429 and changes nothing."""

from __future__ import annotations

import pytest
import stripe

from stripe_sandbox import SandboxClock


def _increase(client: stripe.StripeClient, subscription_id: str, quantity: int) -> stripe.Subscription:
    item = client.v1.subscriptions.retrieve(subscription_id)["items"].data[0]
    return client.v1.subscriptions.update(
        subscription_id,
        params={"items": [{"id": item.id, "quantity": quantity}], "proration_behavior": "always_invoice"},
    )


def _refused(client: stripe.StripeClient, subscription_id: str, quantity: int) -> None:
    invoices = len(client.v1.invoices.list({"subscription": subscription_id, "limit": 100}).data)
    with pytest.raises(stripe.RateLimitError) as refused:
        _increase(client, subscription_id, quantity)
    assert refused.value.http_status == 429
    after = client.v1.subscriptions.retrieve(subscription_id)
    assert after["items"].data[0].quantity == quantity - 1  # nothing changed
    assert len(client.v1.invoices.list({"subscription": subscription_id, "limit": 100}).data) == invoices


def test_the_eleventh_invoice_of_a_minute_is_refused(
    client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price, clock: SandboxClock
) -> None:
    subscription = client.v1.subscriptions.create(
        params={"customer": paying_customer.id, "items": [{"price": monthly.id, "quantity": 1}]}
    )  # its first invoice is one of the minute's ten
    clock.advance(days=2)
    for quantity in range(2, 12):
        _increase(client, subscription.id, quantity)
    _refused(client, subscription.id, 12)
    clock.advance(minutes=1)
    assert _increase(client, subscription.id, 12)["items"].data[0].quantity == 12


def test_the_twenty_first_invoice_of_a_day_is_refused(
    client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price, clock: SandboxClock
) -> None:
    subscription = client.v1.subscriptions.create(
        params={"customer": paying_customer.id, "items": [{"price": monthly.id, "quantity": 1}]}
    )
    clock.advance(days=2)
    for quantity in range(2, 22):
        _increase(client, subscription.id, quantity)
        clock.advance(minutes=5)
    _refused(client, subscription.id, 22)
    # Without an invoice now (create_prorations) the change is made.
    item = client.v1.subscriptions.retrieve(subscription.id)["items"].data[0]
    updated = client.v1.subscriptions.update(
        subscription.id, params={"items": [{"id": item.id, "quantity": 22}], "proration_behavior": "create_prorations"}
    )
    assert updated["items"].data[0].quantity == 22
    clock.advance(days=1)
    assert _increase(client, subscription.id, 23)["items"].data[0].quantity == 23
