"""The clock makes time happen: trial ends, renewals, cancellations, expiry, in time order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import stripe

from stripe_sandbox import SandboxClock, SqlSessions
from stripe_sandbox import store as store_module
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.periods import add_interval

DAY = 86400


def _sub(
    client: stripe.StripeClient, customer: stripe.Customer, price: stripe.Price, **params: Any
) -> stripe.Subscription:
    return client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}], **params})  # type: ignore[arg-type]


def _invoices(client: stripe.StripeClient, subscription: stripe.Subscription) -> list[stripe.Invoice]:
    return list(client.v1.invoices.list(params={"subscription": subscription.id}).data)


def _types(client: stripe.StripeClient) -> list[str]:
    """Event types, oldest first."""
    return [event.type for event in client.v1.events.list(params={"limit": 100}).auto_paging_iter()][::-1]  # type: ignore[return-value]


def test_trial_end_with_payment_method(
    client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price, clock: SandboxClock
) -> None:
    subscription = _sub(client, paying_customer, monthly, trial_period_days=14)
    clock.advance_and_process(days=12)
    assert client.v1.subscriptions.retrieve(subscription.id).status == "trialing"
    assert _types(client)[-1] == "customer.subscription.trial_will_end"
    clock.advance_and_process(days=3)
    after = client.v1.subscriptions.retrieve(subscription.id)
    item = after["items"].data[0]
    assert after.status == "active"
    assert (item.current_period_start, after.billing_cycle_anchor) == (subscription.trial_end, subscription.trial_end)
    assert item.current_period_end == add_interval(subscription.trial_end, "month", 1)  # type: ignore[arg-type]
    first_real = _invoices(client, subscription)[0]
    assert (first_real.status, first_real.total, first_real.billing_reason) == ("paid", 1000, "subscription_cycle")
    assert first_real.created == subscription.trial_end  # dated when it happened, not when the clock ran
    assert first_real.lines.data[0].period.start == subscription.trial_end
    assert after.latest_invoice == first_real.id


def test_trial_end_without_payment_method(
    client: stripe.StripeClient, customer: stripe.Customer, monthly: stripe.Price, clock: SandboxClock
) -> None:
    subs = {
        behavior: _sub(
            client,
            customer,
            monthly,
            trial_period_days=7,
            trial_settings={"end_behavior": {"missing_payment_method": behavior}},
        )
        for behavior in ("pause", "cancel", "create_invoice")
    }
    clock.advance_and_process(days=8)
    paused = client.v1.subscriptions.retrieve(subs["pause"].id)
    assert paused.status == "paused"
    assert _invoices(client, paused)[0].billing_reason == "subscription_create"  # no new invoice
    canceled = client.v1.subscriptions.retrieve(subs["cancel"].id)
    assert (canceled.status, canceled.ended_at) == ("canceled", subs["cancel"].trial_end)
    invoiced = client.v1.subscriptions.retrieve(subs["create_invoice"].id)
    latest = _invoices(client, invoiced)[0]
    assert invoiced.status == "past_due"
    assert (latest.status, latest.amount_due, latest.attempted) == ("open", 1000, True)
    types = _types(client)
    for expected in ("customer.subscription.paused", "customer.subscription.deleted", "invoice.payment_failed"):
        assert expected in types
    # Nothing more happens to a paused subscription as time goes on.
    clock.advance_and_process(days=60)
    assert client.v1.subscriptions.retrieve(subs["pause"].id).status == "paused"


def test_two_periods_make_two_invoices(
    client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price, clock: SandboxClock
) -> None:
    subscription = _sub(client, paying_customer, monthly)
    start = subscription["items"].data[0].current_period_start
    boundaries = [
        start,
        add_interval(start, "month", 1),
        add_interval(start, "month", 2),
        add_interval(start, "month", 3),
    ]
    clock.advance_to(boundaries[2] + DAY)
    assert clock.process_due() == 4  # each renewal, and its invoice finalized an hour later
    invoices = _invoices(client, subscription)
    assert [invoice.billing_reason for invoice in invoices] == [
        "subscription_cycle",
        "subscription_cycle",
        "subscription_create",
    ]
    renewals = invoices[:2][::-1]
    for invoice, (period_start, period_end) in zip(
        renewals, zip(boundaries[1:], boundaries[2:], strict=False), strict=True
    ):
        assert (invoice.status, invoice.total, invoice.created) == ("paid", 1000, period_start)
        assert (invoice.lines.data[0].period.start, invoice.lines.data[0].period.end) == (period_start, period_end)
    after = client.v1.subscriptions.retrieve(subscription.id)
    assert (after["items"].data[0].current_period_start, after["items"].data[0].current_period_end) == (
        boundaries[2],
        boundaries[3],
    )
    assert clock.process_due() == 0


def test_declined_renewal_is_past_due(
    client: stripe.StripeClient,
    monthly: stripe.Price,
    clock: SandboxClock,
    customer_with: Callable[[str], stripe.Customer],
) -> None:
    customer = customer_with("pm_card_visa")
    subscription = _sub(client, customer, monthly)
    declined = client.v1.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": customer.id})
    client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": declined.id}})
    clock.advance_and_process(days=32)
    after = client.v1.subscriptions.retrieve(subscription.id)
    renewal = _invoices(client, subscription)[0]
    assert after.status == "past_due"
    assert (renewal.status, renewal.attempt_count) == ("open", 1)
    assert _types(client)[-2:] == ["invoice.payment_failed", "customer.subscription.updated"]


def test_send_invoice_renewal(
    client: stripe.StripeClient, customer: stripe.Customer, monthly: stripe.Price, clock: SandboxClock
) -> None:
    subscription = _sub(client, customer, monthly, collection_method="send_invoice", days_until_due=30)
    first = client.v1.invoices.retrieve(subscription.latest_invoice)  # type: ignore[arg-type]
    assert (first.status, first.due_date) == ("open", first.created + 30 * DAY)
    clock.advance_and_process(days=32)
    renewal = _invoices(client, subscription)[0]
    assert (renewal.status, renewal.attempted, renewal.due_date) == ("open", False, renewal.created + 30 * DAY)
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"


def test_scheduled_cancellations(
    client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price, clock: SandboxClock
) -> None:
    at_period_end = _sub(client, paying_customer, monthly, cancel_at_period_end=True)
    period_end = at_period_end["items"].data[0].current_period_end
    at_time = _sub(client, paying_customer, monthly)
    cancel_at = clock.now() + 5 * DAY
    client.v1.subscriptions.update(at_time.id, params={"cancel_at": cancel_at})
    clock.advance_and_process(days=40)
    ended = client.v1.subscriptions.retrieve(at_period_end.id)
    assert (ended.status, ended.ended_at, ended.canceled_at) == ("canceled", period_end, at_period_end.created)
    assert len(_invoices(client, ended)) == 1  # no renewal
    stopped = client.v1.subscriptions.retrieve(at_time.id)
    assert (stopped.status, stopped.ended_at) == ("canceled", cancel_at)
    assert _types(client).count("customer.subscription.deleted") == 2


def test_incomplete_expires_after_23_hours(
    client: stripe.StripeClient, customer: stripe.Customer, monthly: stripe.Price, clock: SandboxClock
) -> None:
    subscription = _sub(client, customer, monthly, payment_behavior="default_incomplete")
    clock.advance_and_process(hours=22)
    assert client.v1.subscriptions.retrieve(subscription.id).status == "incomplete"
    clock.advance_and_process(hours=2)
    expired = client.v1.subscriptions.retrieve(subscription.id)
    assert (expired.status, expired.ended_at) == ("incomplete_expired", subscription.created + 23 * 3600)
    assert client.v1.invoices.retrieve(subscription.latest_invoice).status == "void"  # type: ignore[arg-type]


def test_only_due_rows_are_visited(
    client: stripe.StripeClient,
    database: SqlSessions,
    paying_customer: stripe.Customer,
    monthly: stripe.Price,
    clock: SandboxClock,
) -> None:
    subscription = _sub(client, paying_customer, monthly)
    canceled = _sub(client, paying_customer, monthly)
    client.v1.subscriptions.cancel(canceled.id)
    with database.read() as session:
        due = {row.id: row.due_at for row in session.query(SandboxObject).filter(SandboxObject.due_at.is_not(None))}
    # Only the live subscription has a next moment; invoices, events and the rest have none.
    assert due == {subscription.id: subscription["items"].data[0].current_period_end}
    assert clock.process_due() == 0


def test_clock_made_objects_list_after_earlier_writes(
    client: stripe.StripeClient,
    paying_customer: stripe.Customer,
    monthly: stripe.Price,
    clock: SandboxClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_module, "_sequence", store_module._Sequence())  # not ahead from earlier tests
    subscription = _sub(client, paying_customer, monthly)
    clock.advance(days=40)
    late = client.v1.customers.create(params={"name": "late"})
    # As in another process (the service's worker vs. a CLI advancing the clock): no shared sequence.
    monkeypatch.setattr(store_module, "_sequence", store_module._Sequence())
    clock.process_due()
    renewal = _invoices(client, subscription)[0]
    assert renewal.created < late.created  # dated at the period boundary ...
    newest_first = [event.type for event in client.v1.events.list(params={"limit": 3}).data]
    assert "customer.created" not in newest_first  # ... but recorded, listed and delivered after
    assert client.v1.invoices.list(params={"limit": 1}).data[0].id == renewal.id
