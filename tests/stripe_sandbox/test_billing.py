"""Subscriptions that charge: first invoices, declines, item changes and prorations, pause, resume."""

from __future__ import annotations

import decimal
from collections.abc import Callable
from typing import Any

import pytest
import stripe

from stripe_sandbox import SandboxClock, SqlSessions
from stripe_sandbox.models import SandboxObject

DAY = 86400


def _sub(
    client: stripe.StripeClient, customer: stripe.Customer, price: stripe.Price, quantity: int = 2, **params: Any
) -> stripe.Subscription:
    return client.v1.subscriptions.create(
        params={  # type: ignore[arg-type]
            "customer": customer.id,
            "items": [{"price": price.id, "quantity": quantity}],
            "expand": ["latest_invoice"],
            **params,
        }
    )


def _invoices(client: stripe.StripeClient, subscription: stripe.Subscription) -> list[stripe.Invoice]:
    return list(client.v1.invoices.list(params={"subscription": subscription.id}).data)


def _object_ids(database: SqlSessions) -> set[str]:
    with database.read() as session:
        return set(session.scalars(session.query(SandboxObject.id).statement))


def _prorated(amount: int, start: int, end: int, at: int) -> int:
    exact = decimal.Decimal(amount) * (end - at) / (end - start)
    return int(exact.quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP))


def test_create_charges_the_default_payment_method(
    client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price
) -> None:
    subscription = _sub(client, paying_customer, monthly)
    invoice = subscription.latest_invoice
    assert (subscription.status, invoice.status, invoice.amount_paid) == ("active", "paid", 2000)
    assert invoice.billing_reason == "subscription_create"


def test_subscription_default_payment_method_wins(
    client: stripe.StripeClient, monthly: stripe.Price, customer_with: Callable[[str], stripe.Customer]
) -> None:
    customer = customer_with("pm_card_chargeCustomerFail")
    card = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    subscription = _sub(client, customer, monthly, default_payment_method=card.id)
    assert (subscription.status, subscription.latest_invoice.status) == ("active", "paid")


def test_decline_with_error_if_incomplete_leaves_nothing_behind(
    client: stripe.StripeClient,
    database: SqlSessions,
    monthly: stripe.Price,
    customer_with: Callable[[str], stripe.Customer],
) -> None:
    customer = customer_with("pm_card_chargeCustomerFail")
    before = _object_ids(database)
    with pytest.raises(stripe.CardError) as raised:
        _sub(client, customer, monthly, payment_behavior="error_if_incomplete")
    assert (raised.value.http_status, raised.value.code) == (402, "card_declined")
    assert raised.value.error is not None and raised.value.error.decline_code == "generic_decline"
    assert _object_ids(database) == before  # no subscription, invoice, item, intent or event
    assert client.v1.subscriptions.list(params={"status": "all"}).data == []


@pytest.mark.parametrize("payment_behavior", ["allow_incomplete", None])
def test_decline_with_allow_incomplete_is_incomplete(
    client: stripe.StripeClient,
    monthly: stripe.Price,
    payment_behavior: str | None,
    customer_with: Callable[[str], stripe.Customer],
) -> None:
    """Stripe's default: the subscription exists, incomplete, its first invoice open for the customer to pay."""
    customer = customer_with("pm_card_chargeCustomerFail")
    extra = {"payment_behavior": payment_behavior} if payment_behavior else {}
    # Stripe expands at most 4 levels: the intent is read on its own.
    subscription = _sub(client, customer, monthly, expand=["latest_invoice.payments"], **extra)  # type: ignore[arg-type]
    invoice = subscription.latest_invoice
    assert (subscription.status, invoice.status, invoice.attempt_count) == ("incomplete", "open", 1)
    intent = client.v1.payment_intents.retrieve(str(invoice.payments.data[0].payment.payment_intent))
    assert (intent.status, intent.last_payment_error.decline_code) == ("requires_payment_method", "generic_decline")


def test_default_incomplete_leaves_an_open_invoice(
    client: stripe.StripeClient, monthly: stripe.Price, customer_with: Callable[[str], stripe.Customer]
) -> None:
    customer = customer_with("pm_card_chargeCustomerFail")
    subscription = _sub(client, customer, monthly, payment_behavior="default_incomplete")
    invoice = subscription.latest_invoice
    assert (subscription.status, invoice.status, invoice.attempted, invoice.amount_due) == (
        "incomplete",
        "open",
        False,
        2000,
    )
    client.v1.invoices.pay(invoice.id, params={"payment_method": "pm_card_visa"})
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"


def test_trial_makes_a_zero_invoice(
    client: stripe.StripeClient, customer: stripe.Customer, monthly: stripe.Price
) -> None:
    subscription = _sub(client, customer, monthly, trial_period_days=14)
    invoice = subscription.latest_invoice
    assert (subscription.status, invoice.status, invoice.total, invoice.amount_paid) == ("trialing", "paid", 0, 0)
    assert invoice.lines.data[0].description == "Trial period for Pro"
    assert invoice.lines.data[0].period.end == subscription.trial_end


def test_always_invoice_charges_prorations_now(
    client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price, clock: SandboxClock
) -> None:
    subscription = _sub(client, paying_customer, monthly)
    item = subscription["items"].data[0]
    start, end = item.current_period_start, item.current_period_end
    at = start + 7 * DAY
    clock.advance_to(at + 60)
    updated = client.v1.subscriptions.update(
        subscription.id,
        params={
            "items": [{"id": item.id, "quantity": 3}],
            "proration_behavior": "always_invoice",
            "proration_date": at,
            "expand": ["latest_invoice"],
        },
    )
    invoice = updated.latest_invoice
    assert updated["items"].data[0].quantity == 3
    assert (invoice.status, invoice.billing_reason) == ("paid", "subscription_update")
    lines = invoice.lines.data
    assert [(line.amount, line.quantity) for line in lines] == [
        (_prorated(3000, start, end, at), 3),
        (-_prorated(2000, start, end, at), 2),
    ]
    assert all(line.parent.subscription_item_details.proration for line in lines)
    assert all((line.period.start, line.period.end) == (at, end) for line in lines)
    assert invoice.total == invoice.amount_paid == sum(line.amount for line in lines)
    # The period does not move; the next renewal bills 3 seats.
    assert (updated["items"].data[0].current_period_start, updated["items"].data[0].current_period_end) == (start, end)


def test_downgrade_credit_goes_to_the_balance(
    client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price, clock: SandboxClock
) -> None:
    subscription = _sub(client, paying_customer, monthly, quantity=4)
    item = subscription["items"].data[0]
    clock.advance(days=15)
    updated = client.v1.subscriptions.update(
        subscription.id,
        params={
            "items": [{"id": item.id, "quantity": 1}],
            "proration_behavior": "always_invoice",
            "expand": ["latest_invoice"],
        },
    )
    invoice = updated.latest_invoice
    assert invoice.total < 0
    assert (invoice.status, invoice.amount_due, invoice.ending_balance) == ("paid", 0, invoice.total)
    assert client.v1.customers.retrieve(paying_customer.id).balance == invoice.total
    clock.advance_and_process(days=20)
    renewal = _invoices(client, subscription)[0]
    assert renewal.billing_reason == "subscription_cycle"
    assert (renewal.total, renewal.starting_balance) == (1000, invoice.total)
    assert renewal.amount_due == max(0, 1000 + invoice.total)
    assert client.v1.customers.retrieve(paying_customer.id).balance == min(0, 1000 + invoice.total)


def test_proration_none_changes_the_next_period(
    client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price, clock: SandboxClock
) -> None:
    subscription = _sub(client, paying_customer, monthly)
    item = subscription["items"].data[0]
    updated = client.v1.subscriptions.update(
        subscription.id, params={"items": [{"id": item.id, "quantity": 5}], "proration_behavior": "none"}
    )
    assert updated.latest_invoice == subscription.latest_invoice.id
    assert client.v1.invoice_items.list(params={"customer": paying_customer.id}).data == []
    clock.advance_and_process(days=32)
    assert _invoices(client, subscription)[0].total == 5000


def test_create_prorations_wait_for_the_next_invoice(
    client: stripe.StripeClient,
    paying_customer: stripe.Customer,
    monthly: stripe.Price,
    make_price: Callable[..., stripe.Price],
    clock: SandboxClock,
) -> None:
    addon = make_price(unit_amount=300)
    subscription = _sub(client, paying_customer, monthly)
    item = subscription["items"].data[0]
    clock.advance(days=10)
    updated = client.v1.subscriptions.update(
        subscription.id, params={"items": [{"id": item.id, "deleted": True}, {"price": addon.id, "quantity": 2}]}
    )  # default: create_prorations
    assert [i.price.id for i in updated["items"].data] == [addon.id]
    assert updated.latest_invoice == subscription.latest_invoice.id
    pending = client.v1.invoice_items.list(params={"customer": paying_customer.id, "pending": True}).data
    assert sorted(p.amount < 0 for p in pending) == [False, True]  # credit for Pro, charge for the add-on
    assert all(p.proration and p.parent.subscription_details.subscription == subscription.id for p in pending)
    clock.advance_and_process(days=25)
    renewal = _invoices(client, subscription)[0]
    assert renewal.total == 600 + sum(p.amount for p in pending)
    assert {line.parent.subscription_item_details.invoice_item for line in renewal.lines.data[:2]} == {
        p.id for p in pending
    }
    assert client.v1.invoice_items.list(params={"customer": paying_customer.id, "pending": True}).data == []


def test_declined_upgrade(
    client: stripe.StripeClient,
    database: SqlSessions,
    monthly: stripe.Price,
    customer_with: Callable[[str], stripe.Customer],
) -> None:
    customer = customer_with("pm_card_visa")
    subscription = _sub(client, customer, monthly)
    item = subscription["items"].data[0]
    declined = client.v1.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": customer.id})
    client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": declined.id}})
    before = (_object_ids(database), client.v1.subscriptions.retrieve(subscription.id).to_dict())
    with pytest.raises(stripe.CardError):
        client.v1.subscriptions.update(
            subscription.id,
            params={
                "items": [{"id": item.id, "quantity": 9}],
                "proration_behavior": "always_invoice",
                "payment_behavior": "error_if_incomplete",
            },
        )
    assert (_object_ids(database), client.v1.subscriptions.retrieve(subscription.id).to_dict()) == before
    # allow_incomplete (the default): the change stands, the invoice stays open, the subscription is past_due.
    changed = client.v1.subscriptions.update(
        subscription.id,
        params={
            "items": [{"id": item.id, "quantity": 9}],
            "proration_behavior": "always_invoice",
            "expand": ["latest_invoice"],
        },
    )
    assert (changed.status, changed["items"].data[0].quantity) == ("past_due", 9)
    assert (changed.latest_invoice.status, changed.latest_invoice.attempt_count) == ("open", 1)
    client.v1.invoices.pay(changed.latest_invoice.id, params={"payment_method": "pm_card_visa"})
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"


def test_interval_change_restarts_the_cycle(
    client: stripe.StripeClient,
    paying_customer: stripe.Customer,
    monthly: stripe.Price,
    make_price: Callable[..., stripe.Price],
    clock: SandboxClock,
) -> None:
    yearly = make_price(unit_amount=10000, recurring={"interval": "year"})
    subscription = _sub(client, paying_customer, monthly, quantity=1)
    clock.advance(days=3)
    switched = client.v1.subscriptions.update(
        subscription.id,
        params={"items": [{"id": subscription["items"].data[0].id, "price": yearly.id}], "expand": ["latest_invoice"]},
    )
    invoice = switched.latest_invoice
    assert switched.billing_cycle_anchor == clock.now() or abs(switched.billing_cycle_anchor - clock.now()) < 5
    assert invoice.status == "paid" and invoice.billing_reason == "subscription_update"
    amounts = sorted(line.amount for line in invoice.lines.data)
    assert amounts[0] < 0 and amounts[-1] == 10000  # credit for the month, the new year in full


def test_pause_collection_behaviors(
    client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price, clock: SandboxClock
) -> None:
    subs = {
        behavior: _sub(client, paying_customer, monthly) for behavior in ("void", "keep_as_draft", "mark_uncollectible")
    }
    for behavior, subscription in subs.items():
        paused = client.v1.subscriptions.update(subscription.id, params={"pause_collection": {"behavior": behavior}})
        assert paused.pause_collection.behavior == behavior and paused.status == "active"
    clock.advance_and_process(days=32)
    expected = {"void": "void", "keep_as_draft": "draft", "mark_uncollectible": "uncollectible"}
    for behavior, subscription in subs.items():
        renewal = _invoices(client, subscription)[0]
        assert (renewal.billing_reason, renewal.status) == ("subscription_cycle", expected[behavior])
        assert client.v1.subscriptions.retrieve(subscription.id).status == "active"
    resumed = client.v1.subscriptions.update(subs["void"].id, params={"pause_collection": ""})
    assert resumed.pause_collection is None
    clock.advance_and_process(days=31)
    assert _invoices(client, subs["void"])[0].status == "paid"


def _paused(client: stripe.StripeClient, customer: stripe.Customer, price: stripe.Price) -> stripe.Subscription:
    subscription = _sub(
        client,
        customer,
        price,
        trial_period_days=7,
        trial_settings={"end_behavior": {"missing_payment_method": "pause"}},
    )
    paused = client.v1.subscriptions.update(subscription.id, params={"trial_end": "now"})
    assert paused.status == "paused"
    return paused


def test_resume(
    client: stripe.StripeClient, customer: stripe.Customer, monthly: stripe.Price, clock: SandboxClock
) -> None:
    paused = _paused(client, customer, monthly)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.subscriptions.resume(paused.id)
    assert raised.value.user_message.startswith("This customer has no attached payment source")
    declined = client.v1.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": customer.id})
    client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": declined.id}})
    with pytest.raises(stripe.CardError):
        client.v1.subscriptions.resume(paused.id, params={"payment_behavior": "resume_on_payment_success"})
    assert client.v1.subscriptions.retrieve(paused.id).status == "paused"
    card = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": card.id}})
    clock.advance(days=2)
    resumed = client.v1.subscriptions.resume(
        paused.id,
        params={"billing_cycle_anchor": {"type": "now"}, "proration_behavior": "none", "expand": ["latest_invoice"]},
    )
    now = clock.now()
    item = resumed["items"].data[0]
    assert resumed.status == "active"
    assert abs(item.current_period_start - now) < 5 and abs(resumed.billing_cycle_anchor - now) < 5
    assert (resumed.latest_invoice.status, resumed.latest_invoice.total) == ("paid", 2000)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.resume(paused.id)
    types = [event.type for event in client.v1.events.list(params={"type": "customer.subscription.*"}).data]
    assert "customer.subscription.paused" in types and types[0] in (
        "customer.subscription.resumed",
        "customer.subscription.updated",
    )
    assert "customer.subscription.resumed" in types


def test_resume_keeping_the_anchor_prorates(
    client: stripe.StripeClient, customer: stripe.Customer, monthly: stripe.Price, clock: SandboxClock
) -> None:
    paused = _paused(client, customer, monthly)
    client.v1.customers.update(
        customer.id,
        params={
            "invoice_settings": {
                "default_payment_method": client.v1.payment_methods.attach(
                    "pm_card_visa", params={"customer": customer.id}
                ).id
            }
        },
    )
    clock.advance(days=10)
    resumed = client.v1.subscriptions.resume(
        paused.id,
        params={
            "billing_cycle_anchor": {"type": "unchanged"},
            "proration_behavior": "always_invoice",
            "expand": ["latest_invoice"],
        },
    )
    assert resumed.billing_cycle_anchor == paused.billing_cycle_anchor
    invoice = resumed.latest_invoice
    assert 0 < invoice.total < 2000 and invoice.status == "paid"
    assert invoice.lines.data[0].description.startswith("Remaining time on 2 × Pro")


def test_cancel_at_period_end_and_trial_end_now(
    client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price, clock: SandboxClock
) -> None:
    subscription = _sub(client, paying_customer, monthly)
    clock.advance(days=1)
    scheduled = client.v1.subscriptions.update(subscription.id, params={"cancel_at_period_end": True})
    assert scheduled.cancel_at == subscription["items"].data[0].current_period_end
    assert scheduled.canceled_at is not None and scheduled.status == "active"  # Stripe: when it was requested
    kept = client.v1.subscriptions.update(subscription.id, params={"cancel_at_period_end": False})
    assert (kept.cancel_at, kept.canceled_at) == (None, None)

    trialing = _sub(client, paying_customer, monthly, trial_period_days=10)
    ended = client.v1.subscriptions.update(trialing.id, params={"trial_end": "now", "expand": ["latest_invoice"]})
    assert (ended.status, ended.latest_invoice.status, ended.latest_invoice.total) == ("active", "paid", 2000)
    assert ended.latest_invoice.billing_reason == "subscription_update"


def test_cancel_with_proration_and_final_invoice(
    client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price, clock: SandboxClock
) -> None:
    subscription = _sub(client, paying_customer, monthly)
    clock.advance(days=10)
    canceled = client.v1.subscriptions.cancel(
        subscription.id, params={"prorate": True, "invoice_now": True, "expand": ["latest_invoice"]}
    )
    assert canceled.status == "canceled"
    assert canceled.latest_invoice.total < 0 and canceled.latest_invoice.status == "paid"
    assert client.v1.customers.retrieve(paying_customer.id).balance == canceled.latest_invoice.total
