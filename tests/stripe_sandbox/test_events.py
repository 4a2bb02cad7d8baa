"""Events (/v1/events) and their signed webhook delivery."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping

import pytest
import stripe

from stripe_sandbox import SandboxClock, SandboxHTTPClient, SqlSessions
from stripe_sandbox.models import SandboxWebhookDelivery
from stripe_sandbox.webhooks import WebhookSender

SECRET = "whsec_sandbox_test"


class Receiver:
    """A webhook endpoint: verifies like a Stripe integration, answers with scripted statuses."""

    def __init__(self, statuses: list[int | Exception] | None = None) -> None:
        self.events: list[stripe.Event] = []
        self.statuses = list(statuses or [])
        self.calls = 0
        self.received = threading.Event()

    def __call__(self, payload: bytes, headers: Mapping[str, str]) -> int:
        self.calls += 1
        outcome = self.statuses.pop(0) if self.statuses else 200
        if isinstance(outcome, Exception):
            raise outcome
        if 200 <= outcome < 300:
            self.events.append(stripe.Webhook.construct_event(payload.decode(), headers["Stripe-Signature"], SECRET))
            self.received.set()
        return outcome

    @property
    def types(self) -> list[str]:
        return [event.type for event in self.events]


def _events(client: stripe.StripeClient, **params: object) -> list[stripe.Event]:
    return list(client.v1.events.list(params={"limit": 100, **params}).data)  # type: ignore[arg-type]


def test_event_shape_and_previous_attributes(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(
        params={"name": "Ada", "metadata": {"a": "1"}}, options={"idempotency_key": "make-ada"}
    )
    client.v1.customers.update(customer.id, params={"name": "Grace", "metadata": {"b": "2"}})
    client.v1.customers.update(customer.id, params={"name": "Grace"})  # no change, no event
    client.v1.customers.delete(customer.id)
    deleted, updated, created = _events(client)
    assert (created.type, updated.type, deleted.type) == ("customer.created", "customer.updated", "customer.deleted")
    data = created.to_dict()
    assert data["id"].startswith("evt_") and data["object"] == "event"
    assert (data["api_version"], data["livemode"], data["pending_webhooks"]) == (stripe.api_version, False, 1)
    assert data["created"] == customer.created
    assert data["request"]["idempotency_key"] == "make-ada"
    assert data["request"]["id"] == customer.last_response.request_id
    assert data["data"]["object"] == customer.to_dict()
    assert "previous_attributes" not in data["data"]
    assert updated.data.object["name"] == "Grace"
    assert updated.data.previous_attributes.to_dict() == {"name": "Ada", "metadata": {"b": None}}
    assert deleted.data.object["name"] == "Grace"  # the customer as it was, not the stub
    assert client.v1.events.retrieve(created.id).to_dict() == data


def test_list_filters(
    client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price, clock: SandboxClock
) -> None:
    start = clock.now()
    client.v1.subscriptions.create(params={"customer": paying_customer.id, "items": [{"price": monthly.id}]})
    assert [e.type for e in _events(client, type="customer.subscription.created")] == ["customer.subscription.created"]
    assert {e.type for e in _events(client, type="invoice.*")} == {
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
    }
    assert {e.type for e in _events(client, types=["invoice.paid", "customer.created"])} == {
        "invoice.paid",
        "customer.created",
    }
    everything = _events(client)
    page = client.v1.events.list(params={"limit": 2, "starting_after": everything[0].id})
    assert [e.id for e in page.data] == [e.id for e in everything[1:3]]
    clock.advance(days=1)
    client.v1.customers.create()
    assert [e.type for e in _events(client, created={"gt": start + 3600})] == ["customer.created"]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.events.list(params={"type": "a", "types": ["b"]})
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.events.retrieve("evt_missing")
    assert raised.value.http_status == 404


def test_payment_method_and_setup_intent_events(client: stripe.StripeClient, customer: stripe.Customer) -> None:
    intent = client.v1.setup_intents.create(params={"customer": customer.id})
    confirmed = client.v1.setup_intents.confirm(intent.id, params={"payment_method": "pm_card_visa"})
    client.v1.payment_methods.detach(confirmed.payment_method)  # type: ignore[arg-type]
    types = [e.type for e in _events(client)][::-1]
    assert types[-4:] == [
        "setup_intent.created",
        "payment_method.attached",
        "setup_intent.succeeded",
        "payment_method.detached",
    ]
    detached = _events(client, type="payment_method.detached")[0]
    # Stripe gives previous_attributes on *.updated events only: a detached event shows the object as it is now.
    assert "previous_attributes" not in detached.data and detached.data.object.customer is None


def test_ordered_delivery_in_order_with_verifiable_signatures(
    client: stripe.StripeClient, database: SqlSessions
) -> None:
    for name in ("a", "b", "c"):
        client.v1.customers.create(params={"name": name})
    receiver = Receiver()
    sender = WebhookSender(database, SECRET, receiver, ordered=True)
    assert sender.deliver_pending() == 3
    assert [event.data.object["name"] for event in receiver.events] == ["a", "b", "c"]
    assert sender.deliver_pending() == 0
    assert all(event.pending_webhooks == 0 for event in _events(client))
    assert _events(client, delivery_success=False) == []


def test_signature_checks(client: stripe.StripeClient, database: SqlSessions) -> None:
    client.v1.customers.create()
    captured: list[tuple[bytes, Mapping[str, str]]] = []

    def transport(payload: bytes, headers: Mapping[str, str]) -> int:
        captured.append((payload, headers))
        return 200

    WebhookSender(database, SECRET, transport).deliver_pending()
    payload, headers = captured[0]
    assert headers["Content-Type"].startswith("application/json")
    header = headers["Stripe-Signature"]
    timestamp = int(header.split(",")[0].removeprefix("t="))
    assert abs(timestamp - time.time()) < 60  # real time, whatever the sandbox clock says
    assert json.loads(payload)["type"] == "customer.created"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload.decode(), header, "whsec_other")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload.decode().replace("customer", "kustomer"), header, SECRET)


def test_ordered_mode_stops_at_a_failure_and_retries_it_next_run(
    client: stripe.StripeClient, database: SqlSessions
) -> None:
    for name in ("a", "b", "c"):
        client.v1.customers.create(params={"name": name})
    receiver = Receiver([200, 500, RuntimeError("connection refused")])
    sender = WebhookSender(database, SECRET, receiver, ordered=True)
    assert sender.deliver_pending() == 1  # b failed: the run stops there, keeping the order
    assert sender.deliver_pending() == 0  # b again: the transport raised
    assert [e.data.object["name"] for e in _events(client, delivery_success=False)] == ["c", "b"]
    assert sender.deliver_pending() == 2
    assert [event.data.object["name"] for event in receiver.events] == ["a", "b", "c"]
    with database.read() as session:
        attempts = sorted(row.attempts for row in session.query(SandboxWebhookDelivery))
    assert attempts == [1, 1, 3]


def test_synchronous_delivery_from_the_http_client_and_clock(database: SqlSessions) -> None:
    receiver = Receiver()
    sender = WebhookSender(database, SECRET, receiver)
    client = stripe.StripeClient("sk_test_sandbox", http_client=SandboxHTTPClient(database, webhooks=sender))
    product = client.v1.products.create(params={"name": "Pro"})
    assert receiver.types == ["product.created"]
    price = client.v1.prices.create(
        params={"product": product.id, "currency": "usd", "unit_amount": 500, "recurring": {"interval": "day"}}
    )
    customer = client.v1.customers.create(
        params={"payment_method": "pm_card_visa", "invoice_settings": {"default_payment_method": "pm_card_visa"}}
    )
    client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    # Delivered before the call returns, in no particular order (as Stripe's).
    assert sorted(receiver.types[-7:]) == sorted(
        [
            "customer.subscription.created",
            "invoice.created",
            "payment_intent.created",
            "invoice.finalized",
            "payment_intent.succeeded",
            "invoice.paid",
            "invoice.payment_succeeded",
        ]
    )
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.retrieve("cus_missing")
    delivered = len(receiver.events)
    SandboxClock(database, webhooks=sender).advance_and_process(days=1, hours=1, minutes=1)
    # The renewal's invoice is made at the period's start and collected an hour later.
    assert sorted(receiver.types[delivered:]) == sorted(
        [
            "invoice.created",
            "customer.subscription.updated",
            "payment_intent.created",
            "invoice.finalized",
            "payment_intent.succeeded",
            "invoice.paid",
            "invoice.payment_succeeded",
        ]
    )
    received = [event.id for event in receiver.events]
    assert len(received) == len(set(received))  # each once
    assert set(received) == {event.id for event in _events(client)}


def test_background_delivery(database: SqlSessions) -> None:
    receiver = Receiver()
    sender = WebhookSender(database, SECRET, receiver, background=True, poll_seconds=0.05)
    client = stripe.StripeClient("sk_test_sandbox", http_client=SandboxHTTPClient(database, webhooks=sender))
    try:
        client.v1.customers.create(params={"name": "Ada"})  # starts the thread on first use
        assert receiver.received.wait(5)
        assert receiver.types == ["customer.created"]
    finally:
        sender.stop()
    client.v1.customers.create(params={"name": "Grace"})  # stopped: stays pending
    time.sleep(0.1)
    assert receiver.types == ["customer.created"]
    sender.start()
    deadline = time.time() + 5
    while len(receiver.events) < 2 and time.time() < deadline:
        time.sleep(0.02)
    sender.stop()
    assert receiver.types == ["customer.created", "customer.created"]
    with pytest.raises(RuntimeError):
        WebhookSender(database, SECRET, receiver).start()


def test_customer_subscription_events(
    client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price, clock: SandboxClock
) -> None:
    subscription = client.v1.subscriptions.create(
        params={"customer": paying_customer.id, "items": [{"price": monthly.id}], "trial_period_days": 5}
    )
    client.v1.subscriptions.update(subscription.id, params={"metadata": {"k": "v"}})
    clock.advance_and_process(days=6)
    trial_over = _events(client, type="customer.subscription.updated")[0]
    assert trial_over.data.object["status"] == "active"
    assert trial_over.data.previous_attributes["status"] == "trialing"
    assert trial_over.request.id is None  # made by the clock, not a request
    item = subscription["items"].data[0]
    client.v1.subscriptions.update(subscription.id, params={"items": [{"id": item.id, "quantity": 2}]})
    client.v1.subscriptions.cancel(subscription.id)
    types = [e.type for e in _events(client, type="customer.subscription.*")][::-1]
    assert types == [
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.trial_will_end",
        "customer.subscription.updated",
        "customer.subscription.updated",
        "customer.subscription.deleted",
    ]
    prorations = _events(client, type="invoiceitem.created")
    assert len(prorations) == 2 and all(e.data.object["proration"] for e in prorations)
    deleted = _events(client, type="customer.subscription.deleted")[0]
    assert deleted.data.object["status"] == "canceled"
