"""Pending updates: `payment_behavior=pending_if_incomplete` on a subscription update, as Stripe
documents it (docs.stripe.com/billing/subscriptions/pending-updates and its reference): the change
applies only once the invoice it makes is paid, and is discarded when its `expires_at` passes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import stripe

from stripe_sandbox import SandboxAuthenticator, SandboxClock, SqlSessions
from stripe_sandbox.authentication import intent_id

HOUR = 3600
INCREASE: dict[str, Any] = {
    "proration_behavior": "always_invoice",
    "payment_behavior": "pending_if_incomplete",
    "expand": ["latest_invoice.confirmation_secret"],
}


def subscribed(
    client: stripe.StripeClient, customer_with: Callable[[str], stripe.Customer], price: stripe.Price, then: str
) -> stripe.Subscription:
    """A subscription of 1 paid with a Visa, whose customer's default card is then `then`."""
    customer = customer_with("pm_card_visa")
    subscription = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    method = client.v1.payment_methods.attach(then, {"customer": customer.id})
    client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": method.id}})
    return subscription


def increase(
    client: stripe.StripeClient, subscription: stripe.Subscription, quantity: int, **extra: Any
) -> stripe.Subscription:
    item = subscription["items"].data[0]
    return client.v1.subscriptions.update(
        subscription.id,
        params={  # type: ignore[arg-type]
            "items": [{"id": item.id, "quantity": quantity}],
            **INCREASE,
            **extra,
        },
    )


def event_types(client: stripe.StripeClient) -> list[str]:
    return [event.type for event in client.v1.events.list({"limit": 100}).auto_paging_iter()]


def test_paid_at_once_it_applies_at_once(
    client: stripe.StripeClient, customer_with: Any, monthly: stripe.Price
) -> None:
    subscription = subscribed(client, customer_with, monthly, "pm_card_mastercard")
    changed = increase(client, subscription, 3, metadata={"plan": "bigger"})
    assert changed.pending_update is None and changed["items"].data[0].quantity == 3
    assert changed.latest_invoice.status == "paid" and changed.metadata.to_dict() == {"plan": "bigger"}


def test_an_increase_needing_authentication_waits_for_it(
    client: stripe.StripeClient,
    customer_with: Any,
    monthly: stripe.Price,
    database: SqlSessions,
    clock: SandboxClock,
    frozen_sandbox_time: None,  # its expiry is read against the clock: no second may pass between
) -> None:
    subscription = subscribed(client, customer_with, monthly, "pm_card_authenticationRequired")
    changed = increase(client, subscription, 3, metadata={"plan": "bigger"})
    # Nothing changed but the invoice to pay; the pending update says what applies once it is paid.
    assert (changed.status, changed["items"].data[0].quantity, changed.metadata.to_dict()) == ("active", 1, {})
    pending = changed.pending_update
    assert pending is not None and pending.expires_at == clock.now() + 23 * HOUR
    assert [(i.id, i.quantity) for i in pending.subscription_items] == [(subscription["items"].data[0].id, 3)]
    assert pending.subscription_items[0].price.id == monthly.id and pending.metadata.to_dict() == {"plan": "bigger"}
    invoice = changed.latest_invoice
    assert (invoice.status, invoice.billing_reason, invoice.amount_due > 0) == ("open", "subscription_update", True)
    secret = invoice.confirmation_secret.client_secret
    assert client.v1.payment_intents.retrieve(intent_id(secret)).status == "requires_action"
    # A failed authentication leaves it waiting, with its original expiry.
    SandboxAuthenticator(database).complete(secret, succeed=False)
    assert client.v1.subscriptions.retrieve(subscription.id).pending_update.expires_at == pending.expires_at
    # The customer authenticates: the invoice is paid and the change applies.
    assert SandboxAuthenticator(database).complete(secret, succeed=True) == "succeeded"
    applied = client.v1.subscriptions.retrieve(subscription.id)
    assert (applied.pending_update, applied["items"].data[0].quantity) == (None, 3)
    assert applied.metadata.to_dict() == {"plan": "bigger"} and applied.status == "active"
    assert client.v1.invoices.retrieve(invoice.id).status == "paid"
    assert "customer.subscription.pending_update_applied" in event_types(client)


def test_unpaid_it_expires_after_23_hours(
    client: stripe.StripeClient, customer_with: Any, monthly: stripe.Price, clock: SandboxClock
) -> None:
    subscription = subscribed(client, customer_with, monthly, "pm_card_authenticationRequired")
    changed = increase(client, subscription, 3)
    clock.advance_and_process(seconds=23 * HOUR - 60)
    assert client.v1.subscriptions.retrieve(subscription.id).pending_update is not None
    clock.advance_and_process(seconds=60)
    expired = client.v1.subscriptions.retrieve(subscription.id)
    assert (expired.pending_update, expired["items"].data[0].quantity, expired.status) == (None, 1, "active")
    assert client.v1.invoices.retrieve(changed.latest_invoice.id).status == "void"
    assert "customer.subscription.pending_update_expired" in event_types(client)
    assert "customer.subscription.pending_update_applied" not in event_types(client)


def test_it_expires_at_the_period_end_when_that_comes_first(
    client: stripe.StripeClient, customer_with: Any, monthly: stripe.Price, clock: SandboxClock
) -> None:
    subscription = subscribed(client, customer_with, monthly, "pm_card_authenticationRequired")
    end = subscription["items"].data[0].current_period_end
    clock.advance_and_process(seconds=end - clock.now() - 2 * HOUR)
    current = client.v1.subscriptions.retrieve(subscription.id)
    assert increase(client, current, 2).pending_update.expires_at == end
    clock.advance_and_process(seconds=2 * HOUR)  # expires, then renews: the renewal bills the old quantity
    renewed = client.v1.subscriptions.retrieve(subscription.id, {"expand": ["latest_invoice"]})
    assert (renewed.pending_update, renewed["items"].data[0].quantity) == (None, 1)
    assert renewed.latest_invoice.billing_reason == "subscription_cycle"


def test_a_declined_payment_waits_too(client: stripe.StripeClient, customer_with: Any, monthly: stripe.Price) -> None:
    subscription = subscribed(client, customer_with, monthly, "pm_card_chargeCustomerFail")
    changed = increase(client, subscription, 4)
    assert changed.pending_update is not None and changed["items"].data[0].quantity == 1
    assert changed.status == "active" and changed.latest_invoice.status == "open"


def test_a_later_change_replaces_it(client: stripe.StripeClient, customer_with: Any, monthly: stripe.Price) -> None:
    subscription = subscribed(client, customer_with, monthly, "pm_card_authenticationRequired")
    first = increase(client, subscription, 3)
    second = increase(client, subscription, 5)
    assert second.pending_update.subscription_items[0].quantity == 5
    assert client.v1.invoices.retrieve(first.latest_invoice.id).status == "void"
    assert second.latest_invoice.id != first.latest_invoice.id


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"description": "more"}, "description"),
        ({"default_payment_method": "pm_card_visa"}, "default_payment_method"),
        ({"items": [{"price": "price_x", "quantity": 1, "metadata": {"a": "b"}}]}, "items[0][metadata]"),
    ],
)
def test_only_what_a_pending_update_supports(
    client: stripe.StripeClient,
    paying_customer: stripe.Customer,
    monthly: stripe.Price,
    extra: dict[str, Any],
    param: str,
) -> None:
    subscription = client.v1.subscriptions.create(
        params={"customer": paying_customer.id, "items": [{"price": monthly.id}]}
    )
    params = {"items": [{"id": subscription["items"].data[0].id, "quantity": 2}], **INCREASE, **extra}
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.subscriptions.update(subscription.id, params=params)  # type: ignore[arg-type]
    assert raised.value.param == param and "pending_if_incomplete" in str(raised.value.user_message)
    deleted = {"items": [{"id": subscription["items"].data[0].id, "deleted": True}], **INCREASE}
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.subscriptions.update(subscription.id, params=deleted)  # type: ignore[arg-type]
    assert raised.value.param == "items[0][deleted]"
    assert client.v1.subscriptions.retrieve(subscription.id)["items"].data[0].quantity == 1


def test_not_on_subscriptions_sending_invoices(
    client: stripe.StripeClient, customer: stripe.Customer, monthly: stripe.Price
) -> None:
    subscription = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": monthly.id}],
            "collection_method": "send_invoice",
            "days_until_due": 30,
        }
    )
    with pytest.raises(stripe.InvalidRequestError) as raised:
        increase(client, subscription, 2)
    assert raised.value.param == "payment_behavior"


def test_not_on_create(client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.subscriptions.create(
            params={
                "customer": paying_customer.id,
                "items": [{"price": monthly.id}],
                "payment_behavior": "pending_if_incomplete",
            }
        )
    assert raised.value.param == "payment_behavior"
