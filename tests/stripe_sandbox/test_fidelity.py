"""Where the emulator used to be kinder than Stripe (issue 22, row 5): each behaviour as Stripe's docs give it."""

from __future__ import annotations

import pytest
import stripe

from stripe_sandbox import SandboxClock, SqlSessions


def _customer_paying_with(client: stripe.StripeClient, card: str) -> stripe.Customer:
    """A customer whose default payment method is that test card."""
    return client.v1.customers.create(
        params={"payment_method": card, "invoice_settings": {"default_payment_method": card}}
    )


def _seat_price(client: stripe.StripeClient) -> stripe.Price:
    """$5 a month, for a product named Seat."""
    return client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 500,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Seat"},
        }
    )


def test_expand_only_on_expandable_fields(client: stripe.StripeClient) -> None:
    """https://docs.stripe.com/api/expanding_objects: only fields labelled expandable expand."""
    customer = _customer_paying_with(client, "pm_card_visa")
    expanded = client.v1.customers.retrieve(customer.id, {"expand": ["invoice_settings.default_payment_method"]})
    assert expanded.invoice_settings.default_payment_method.object == "payment_method"
    method = client.v1.payment_methods.list({"customer": customer.id}).data[0]
    # A payment method's `customer` is expandable; a subscription item's `subscription` is not (a plain id).
    assert client.v1.payment_methods.retrieve(method.id, {"expand": ["customer"]}).customer.id == customer.id
    price = _seat_price(client)
    subscription = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.subscriptions.retrieve(subscription.id, {"expand": ["items.data.subscription"]})
    assert raised.value.http_status == 400 and "cannot be expanded" in str(raised.value.user_message)


def test_expand_is_at_most_four_levels_deep(client: stripe.StripeClient) -> None:
    """https://docs.stripe.com/api/expanding_objects: "Expansions have a maximum depth of four levels"."""
    customer = _customer_paying_with(client, "pm_card_visa")
    price = _seat_price(client)
    subscription = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    four = client.v1.subscriptions.retrieve(subscription.id, {"expand": ["latest_invoice.payments.data.payment"]})
    assert four.latest_invoice.payments.data[0].payment.type == "payment_intent"
    listed = client.v1.subscriptions.list({"expand": ["data.items.data.price.product"]})  # a list's data. is free
    assert listed.data[0]["items"].data[0].price.product.name == "Seat"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.subscriptions.retrieve(
            subscription.id, {"expand": ["latest_invoice.payments.data.payment.payment_intent"]}
        )
    assert "more than 4 levels" in str(raised.value.user_message)


def test_previous_attributes_only_on_updated_events(client: stripe.StripeClient) -> None:
    """Stripe's Event object: data.previous_attributes is sent with *.updated events only."""
    customer = client.v1.customers.create(params={"name": "A"})
    method = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    client.v1.customers.update(customer.id, {"name": "B"})
    client.v1.payment_methods.detach(method.id)
    events = {event.type: event for event in client.v1.events.list({"limit": 100}).data}
    assert events["customer.updated"].data.previous_attributes.to_dict() == {"name": "A"}
    for kind in ("customer.created", "payment_method.attached", "payment_method.detached"):
        assert "previous_attributes" not in events[kind].data, kind


def test_payment_intents_always_carry_managed_payments(client: stripe.StripeClient) -> None:
    customer = _customer_paying_with(client, "pm_card_visa")
    price = _seat_price(client)
    subscription = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    invoice = client.v1.invoices.retrieve(str(subscription.latest_invoice), {"expand": ["payments"]})
    intent = client.v1.payment_intents.retrieve(str(invoice.payments.data[0].payment.payment_intent))
    assert intent.to_dict()["managed_payments"] == {"enabled": False}


def test_customer_search(client: stripe.StripeClient, database: SqlSessions) -> None:
    """https://docs.stripe.com/api/customers/search: a search_result, newest first, paged by next_page."""
    ann = client.v1.customers.create(params={"email": "ann@example.com", "name": "Ann", "metadata": {"ws": "1"}})
    bob = client.v1.customers.create(params={"email": "bob@example.org", "name": "Bob", "metadata": {"ws": "1"}})
    client.v1.customers.create(params={"email": "cy@example.org", "name": "Cy", "metadata": {"ws": "2"}})
    found = client.v1.customers.search({"query": "metadata['ws']:'1'"})
    assert found.to_dict()["object"] == "search_result" and [c.id for c in found.data] == [bob.id, ann.id]
    assert [c.id for c in client.v1.customers.search({"query": "email:'ann@example.com'"}).data] == [ann.id]
    both = client.v1.customers.search({"query": "email~'example.org' AND -name:'Cy'"})
    assert [c.id for c in both.data] == [bob.id]
    first = client.v1.customers.search({"query": "name:'Ann' OR name:'Bob'", "limit": 1})
    assert first.has_more and first.next_page
    second = client.v1.customers.search({"query": "name:'Ann' OR name:'Bob'", "limit": 1, "page": first.next_page})
    assert [c.id for c in second.data] == [ann.id] and not second.has_more and second.next_page is None
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.search({"query": "colour:'red'"})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.search({"query": "name:'Ann' AND email:'x' OR name:'Bob'"})


def test_a_failed_first_payment_is_incomplete_in_the_created_event(client: stripe.StripeClient) -> None:
    """Issue 22 row 4: with allow_incomplete, customer.subscription.created already says `incomplete`."""
    customer = _customer_paying_with(client, "pm_card_chargeCustomerFail")
    price = _seat_price(client)
    subscription = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}], "payment_behavior": "allow_incomplete"}
    )
    assert subscription.status == "incomplete"
    events = client.v1.events.list({"type": "customer.subscription.*"}).data
    assert [(e.type, e.data.object.status) for e in events] == [("customer.subscription.created", "incomplete")]


def test_the_trial_end_invoice_is_a_draft_for_an_hour(client: stripe.StripeClient, database: SqlSessions) -> None:
    """Issue 22 row 2: Stripe finalizes and charges a subscription's cycle invoice an hour after creating it."""

    clock = SandboxClock(database)
    customer = _customer_paying_with(client, "pm_card_visa")
    price = _seat_price(client)
    subscription = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}], "trial_period_days": 3}
    )
    clock.advance_and_process(days=3)
    ended = client.v1.subscriptions.retrieve(subscription.id, {"expand": ["latest_invoice"]})
    draft = ended.latest_invoice
    assert (ended.status, draft.status, draft.amount_paid, draft.billing_reason) == (
        "active",
        "draft",
        0,
        "subscription_cycle",
    )
    assert draft.automatically_finalizes_at == draft.created + 3600 == draft.next_payment_attempt
    clock.advance_and_process(minutes=59)
    assert client.v1.invoices.retrieve(draft.id).status == "draft"
    clock.advance_and_process(minutes=1)
    paid = client.v1.invoices.retrieve(draft.id)
    assert (paid.status, paid.amount_paid) == ("paid", 500)


# -- row 3: retries as the account's Dashboard settings say ---------------------------------

DAY = 86400


def _renewal_failing(client: stripe.StripeClient, clock: SandboxClock) -> tuple[stripe.Subscription, str]:
    """A subscription whose first renewal fails: paid at creation, then a card that declines every charge."""
    customer = _customer_paying_with(client, "pm_card_visa")
    price = _seat_price(client)
    subscription = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    failing = client.v1.payment_methods.attach("pm_card_chargeCustomerFail", {"customer": customer.id})
    client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": failing.id}})
    clock.advance_and_process(seconds=subscription["items"].data[0].current_period_end - clock.now() + 3600)
    renewed = client.v1.subscriptions.retrieve(subscription.id)
    return renewed, str(renewed.latest_invoice)


def _attempts(client: stripe.StripeClient, invoice_id: str) -> tuple[int, int | None, str | None]:
    invoice = client.v1.invoices.retrieve(invoice_id)
    return invoice.attempt_count, invoice.next_payment_attempt, invoice.status


def test_smart_retries_by_default_8_tries_within_2_weeks_then_canceled(
    client: stripe.StripeClient, database: SqlSessions, monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.delenv("SANDBOX_RETRY_SCHEDULE", raising=False)
    monkeypatch.delenv("SANDBOX_RETRY_END", raising=False)
    clock = SandboxClock(database)
    subscription, invoice_id = _renewal_failing(client, clock)
    assert subscription.status == "past_due"
    count, first_retry, _ = _attempts(client, invoice_id)
    failed_at = clock.now()
    assert count == 1 and first_retry is not None and abs(first_retry - (failed_at + 2 * DAY)) <= 2
    for attempt in range(2, 8):  # the evenly spread retries of the 2-week window
        clock.advance_and_process(days=2)
        count, next_attempt, status = _attempts(client, invoice_id)
        assert (count, status) == (attempt, "open") and next_attempt is not None
        assert client.v1.subscriptions.retrieve(subscription.id).status == "past_due"
    clock.advance_and_process(days=2)  # the 8th try, 14 days after the first
    count, next_attempt, _ = _attempts(client, invoice_id)
    assert (count, next_attempt) == (8, None)
    ended = client.v1.subscriptions.retrieve(subscription.id)
    assert (ended.status, ended.cancellation_details.reason) == ("canceled", "payment_failed")


@pytest.mark.parametrize("end", ["unpaid", "past_due"])
def test_a_custom_schedule_and_end_state(
    client: stripe.StripeClient, database: SqlSessions, monkeypatch: pytest.MonkeyPatch, end: str
) -> None:

    monkeypatch.setenv("SANDBOX_RETRY_SCHEDULE", "1,3")  # days after the previous attempt
    monkeypatch.setenv("SANDBOX_RETRY_END", end)
    clock = SandboxClock(database)
    subscription, invoice_id = _renewal_failing(client, clock)
    assert subscription.status == "past_due"
    clock.advance_and_process(days=1)
    count, next_attempt, _ = _attempts(client, invoice_id)
    assert count == 2 and next_attempt is not None and abs(next_attempt - (clock.now() + 3 * DAY)) <= 2
    clock.advance_and_process(days=3)
    assert _attempts(client, invoice_id) == (3, None, "open")
    assert client.v1.subscriptions.retrieve(subscription.id).status == end
    # Paying the invoice by hand brings the subscription back, unpaid or past_due alike.
    client.v1.invoices.pay(invoice_id, params={"payment_method": "pm_card_visa"})
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"


def test_a_hard_decline_is_not_retried(
    client: stripe.StripeClient, database: SqlSessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stripe does not retry an issuer's hard decline (smart-retries#non-retryable-decline-codes)."""
    import dataclasses

    from stripe_sandbox import payment_methods

    monkeypatch.delenv("SANDBOX_RETRY_SCHEDULE", raising=False)
    monkeypatch.setenv("SANDBOX_RETRY_END", "unpaid")
    # A card that attaches and is reported lost at the renewal (no Stripe test card does both).
    card = payment_methods.TEST_CARDS["pm_card_chargeCustomerFail"]
    monkeypatch.setitem(
        payment_methods.TEST_CARDS,
        "pm_card_chargeCustomerFail",
        dataclasses.replace(card, decline=payment_methods.Decline("lost_card")),
    )
    clock = SandboxClock(database)
    subscription, invoice_id = _renewal_failing(client, clock)
    assert _attempts(client, invoice_id) == (1, None, "open")
    assert client.v1.subscriptions.retrieve(subscription.id).status == "unpaid"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SANDBOX_RETRY_SCHEDULE", "weekly"),
        ("SANDBOX_RETRY_SCHEDULE", "1,2,3,4"),
        ("SANDBOX_RETRY_SCHEDULE", "smart:9:14"),
        ("SANDBOX_RETRY_END", "delete"),
    ],
)
def test_unusable_retry_settings_stop_the_sandbox_at_start(
    database: SqlSessions, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    from stripe_sandbox.dunning import RetrySettingsError

    monkeypatch.setenv(name, value)
    with pytest.raises(RetrySettingsError, match=name):
        SandboxClock(database)
