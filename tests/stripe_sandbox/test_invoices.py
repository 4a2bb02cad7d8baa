"""Invoices and invoice items: shape, lines paging, finalize/pay/void, lists, previews."""

from __future__ import annotations

import decimal
import re
from collections.abc import Callable
from typing import Any

import pytest
import stripe

from stripe_sandbox import SandboxClock, SandboxHTTPClient, SqlSessions
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.store import DEFAULT_PUBLIC_URL

DAY = 86400


def _declared_fields(cls: type) -> set[str]:
    """The fields the library's class declares for this API version."""
    return {name for name in cls.__annotations__ if not name.startswith("_") and name != "OBJECT_NAME"}


def _subscribe(
    client: stripe.StripeClient, customer: stripe.Customer, price: stripe.Price, **params: Any
) -> stripe.Subscription:
    return client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id, "quantity": 2}], **params}  # type: ignore[arg-type]
    )


def _items(client: stripe.StripeClient, customer: stripe.Customer, count: int) -> list[stripe.InvoiceItem]:
    return [
        client.v1.invoice_items.create(
            params={"customer": customer.id, "amount": 100 + i, "currency": "usd", "description": f"Item {i}"}
        )
        for i in range(count)
    ]


def _table_counts(database: SqlSessions) -> dict[str, int]:
    with database.read() as session:
        rows = session.query(SandboxObject.object_type, SandboxObject.id).all()
    counts: dict[str, int] = {}
    for object_type, _ in rows:
        counts[object_type] = counts.get(object_type, 0) + 1
    return counts


def test_subscription_invoice_shape(
    client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price, product: stripe.Product
) -> None:
    subscription = _subscribe(client, paying_customer, monthly, metadata={"workspace_id": "ws_1"})
    invoice = client.v1.invoices.retrieve(subscription.latest_invoice)  # type: ignore[arg-type]
    data = invoice.to_dict()
    assert re.fullmatch(r"in_[A-Za-z0-9]{24}", data["id"])
    # Every field this library version declares, but those Stripe only sends when expanded.
    assert set(data) == _declared_fields(stripe.Invoice) - {
        "confirmation_secret",
        "payments",
        "deleted",
        "threshold_reason",
    }
    assert "tax" not in data and data["total_taxes"] == []
    assert (data["status"], data["billing_reason"], data["collection_method"]) == (
        "paid",
        "subscription_create",
        "charge_automatically",
    )
    assert (
        data["currency"],
        data["subtotal"],
        data["total"],
        data["amount_due"],
        data["amount_paid"],
        data["amount_remaining"],
    ) == ("usd", 2000, 2000, 2000, 2000, 0)
    assert data["customer"] == paying_customer.id and data["customer_email"] == "payer@example.com"
    assert data["parent"] == {
        "quote_details": None,
        "type": "subscription_details",
        "subscription_details": {
            "metadata": {"workspace_id": "ws_1"},
            "subscription": subscription.id,
            "subscription_proration_date": None,
        },
    }
    assert re.fullmatch(r"[A-Z0-9]{8}-0001", data["number"])
    # Served by the host, on its own origin (hosted_invoices.py), not by stripe.com.
    assert data["hosted_invoice_url"].startswith(f"{DEFAULT_PUBLIC_URL}/sandbox/invoices/{data['id']}/")
    assert data["invoice_pdf"] == data["hosted_invoice_url"] + "/pdf"
    assert data["due_date"] is None  # charge_automatically
    assert data["discounts"] == [] and data["total_discount_amounts"] == []
    assert data["status_transitions"]["paid_at"] == data["status_transitions"]["finalized_at"] == data["created"]
    assert (data["attempted"], data["attempt_count"]) == (True, 1)
    lines = data["lines"]
    assert (lines["object"], lines["has_more"], lines["total_count"], lines["url"]) == (
        "list",
        False,
        1,
        f"/v1/invoices/{invoice.id}/lines",
    )
    line = lines["data"][0]
    assert re.fullmatch(r"il_[A-Za-z0-9]{24}", line["id"])
    assert set(line) == _declared_fields(stripe.InvoiceLineItem)
    assert (line["object"], line["amount"], line["currency"], line["quantity"], line["invoice"]) == (
        "line_item",
        2000,
        "usd",
        2,
        invoice.id,
    )
    assert line["description"] == "2 × Pro (at $10.00 / month)"
    assert line["pricing"] == {
        "type": "price_details",
        "unit_amount_decimal": decimal.Decimal("1000"),
        "price_details": {"price": monthly.id, "product": product.id},
    }
    item = subscription["items"].data[0]
    assert line["period"] == {"start": item.current_period_start, "end": item.current_period_end}
    assert line["parent"]["type"] == "subscription_item_details"
    assert line["parent"]["subscription_item_details"]["subscription_item"] == item.id
    assert line["subscription"] == subscription.id


def test_invoice_with_25_lines_pages_through_lines(client: stripe.StripeClient, customer: stripe.Customer) -> None:
    items = _items(client, customer, 25)
    draft = client.v1.invoices.create(params={"customer": customer.id, "pending_invoice_items_behavior": "include"})
    assert draft.status == "draft" and draft.number is None and draft.hosted_invoice_url is None
    assert draft.total == sum(100 + i for i in range(25))
    lines = draft.lines
    assert (len(lines.data), lines.has_more, lines.total_count, lines.url) == (  # type: ignore[attr-defined]
        10,
        True,
        25,
        f"/v1/invoices/{draft.id}/lines",
    )
    # Invoice items come newest first, as Stripe orders pending items.
    expected = [item.id for item in reversed(items)]
    assert [line.parent.invoice_item_details.invoice_item for line in lines.data] == expected[:10]

    seen = list(lines.data)
    while True:
        page = client.v1.invoices.line_items.list(draft.id, params={"limit": 10, "starting_after": seen[-1].id})
        seen.extend(page.data)
        if not page.has_more:
            break
    assert [line.parent.invoice_item_details.invoice_item for line in seen] == expected
    assert len({line.id for line in seen}) == 25
    auto = list(client.v1.invoices.line_items.list(draft.id, params={"limit": 7}).auto_paging_iter())
    assert [line.id for line in auto] == [line.id for line in seen]
    before = client.v1.invoices.line_items.list(draft.id, params={"limit": 3, "ending_before": seen[5].id})
    assert ([line.id for line in before.data], before.has_more) == ([line.id for line in seen[2:5]], True)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.invoices.line_items.list(draft.id, params={"starting_after": "il_missing"})
    assert raised.value.param == "starting_after"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.line_items.list(draft.id, params={"limit": 101})
    assert client.v1.invoice_items.retrieve(items[0].id).invoice == draft.id
    assert client.v1.invoice_items.list(params={"customer": customer.id, "pending": True}).data == []


def test_invoice_items(
    client: stripe.StripeClient, customer: stripe.Customer, make_price: Callable[..., stripe.Price]
) -> None:
    one_time = make_price(recurring=None, unit_amount=250)
    by_price = client.v1.invoice_items.create(
        params={"customer": customer.id, "pricing": {"price": one_time.id}, "quantity": 3}
    )
    assert re.fullmatch(r"ii_[A-Za-z0-9]{24}", by_price.id)
    assert (
        by_price.object,
        by_price.amount,
        by_price.quantity,
        by_price.currency,
        by_price.description,
        by_price.invoice,
        by_price.proration,
    ) == ("invoiceitem", 750, 3, "usd", "Pro", None, False)
    assert by_price.pricing.price_details.price == one_time.id
    by_amount = client.v1.invoice_items.create(
        params={"customer": customer.id, "amount": -300, "currency": "USD", "description": "Goodwill credit"}
    )
    assert (by_amount.amount, by_amount.currency, by_amount.pricing.price_details) == (-300, "usd", None)
    pending = client.v1.invoice_items.list(params={"customer": customer.id, "pending": True})
    assert [item.id for item in pending.data] == [by_amount.id, by_price.id]
    invoice = client.v1.invoices.create(params={"customer": customer.id, "pending_invoice_items_behavior": "include"})
    assert invoice.total == 450
    excluded = client.v1.invoices.create(params={"customer": customer.id})  # `exclude` is the default
    assert excluded.lines.data == [] and excluded.total == 0
    added = client.v1.invoice_items.create(
        params={"customer": customer.id, "amount": 50, "currency": "usd", "invoice": excluded.id}
    )
    assert added.invoice == excluded.id
    assert client.v1.invoices.retrieve(excluded.id).total == 50
    for params, param in (
        ({"currency": "usd"}, "amount"),
        ({"amount": 5}, "currency"),
        ({"amount": 5, "currency": "usd", "pricing": {"price": one_time.id}}, "pricing[price]"),
        ({"pricing": {"price": "price_missing"}}, "pricing[price]"),
    ):
        with pytest.raises(stripe.InvalidRequestError) as raised:
            client.v1.invoice_items.create(params={"customer": customer.id, **params})  # type: ignore[arg-type]
        assert raised.value.param == param


def test_finalize_pay_void(client: stripe.StripeClient, customer_with: Callable[[str], stripe.Customer]) -> None:
    customer = customer_with("pm_card_visa")
    _items(client, customer, 2)
    invoice = client.v1.invoices.create(params={"customer": customer.id, "pending_invoice_items_behavior": "include"})
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.invoices.void_invoice(invoice.id)
    assert raised.value.code == "invoice_not_open"
    finalized = client.v1.invoices.finalize_invoice(invoice.id)
    assert (finalized.status, finalized.amount_due, finalized.attempted) == ("open", 201, False)
    assert finalized.number and finalized.status_transitions.finalized_at
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.invoices.finalize_invoice(invoice.id)
    assert raised.value.code == "invoice_not_editable"
    paid = client.v1.invoices.pay(invoice.id)
    assert (paid.status, paid.amount_paid, paid.amount_remaining) == ("paid", 201, 0)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.pay(invoice.id)

    _items(client, customer, 1)
    other = client.v1.invoices.create(params={"customer": customer.id, "pending_invoice_items_behavior": "include"})
    client.v1.invoices.finalize_invoice(other.id)
    voided = client.v1.invoices.void_invoice(other.id)
    assert (voided.status, voided.status_transitions.voided_at is not None) == ("void", True)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.pay(other.id)
    _items(client, customer, 1)
    third = client.v1.invoices.create(params={"customer": customer.id, "pending_invoice_items_behavior": "include"})
    client.v1.invoices.finalize_invoice(third.id)
    assert client.v1.invoices.mark_uncollectible(third.id).status == "uncollectible"
    assert client.v1.invoices.pay(third.id, params={"paid_out_of_band": True}).status == "paid"


def test_declined_payment_is_recorded(
    client: stripe.StripeClient, customer_with: Callable[[str], stripe.Customer]
) -> None:
    customer = customer_with("pm_card_chargeCustomerFail")
    _items(client, customer, 1)
    invoice = client.v1.invoices.create(params={"customer": customer.id, "pending_invoice_items_behavior": "include"})
    with pytest.raises(stripe.CardError) as raised:
        client.v1.invoices.pay(invoice.id)  # a draft is finalized first, then charged
    error = raised.value
    assert (error.http_status, error.code) == (402, "card_declined")
    assert error.error is not None and error.error.decline_code == "generic_decline"
    assert error.json_body["error"]["type"] == "card_error"
    after = client.v1.invoices.retrieve(invoice.id)
    assert (after.status, after.attempted, after.attempt_count, after.amount_paid) == ("open", True, 1, 0)
    failed = client.v1.events.list(params={"type": "invoice.payment_failed"}).data
    assert [event.data.object["id"] for event in failed] == [invoice.id]
    paid = client.v1.invoices.pay(invoice.id, params={"payment_method": "pm_card_visa"})
    assert (paid.status, paid.attempt_count) == ("paid", 2)


def test_send_invoice_due_date(client: stripe.StripeClient, customer: stripe.Customer) -> None:
    _items(client, customer, 1)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.invoices.create(params={"customer": customer.id, "collection_method": "send_invoice"})
    assert raised.value.param == "days_until_due"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.invoices.create(params={"customer": customer.id, "days_until_due": 3})
    assert raised.value.param == "days_until_due"
    invoice = client.v1.invoices.create(
        params={
            "customer": customer.id,
            "collection_method": "send_invoice",
            "days_until_due": 14,
            "pending_invoice_items_behavior": "include",
        }
    )
    assert invoice.due_date == invoice.created + 14 * DAY
    finalized = client.v1.invoices.finalize_invoice(invoice.id, params={"auto_advance": True})
    assert (finalized.status, finalized.attempted) == ("open", False)  # sent, not charged


def test_list_filters(
    client: stripe.StripeClient, paying_customer: stripe.Customer, customer: stripe.Customer, monthly: stripe.Price
) -> None:
    first = _subscribe(client, paying_customer, monthly)
    second = _subscribe(client, paying_customer, monthly)
    _items(client, customer, 1)
    draft = client.v1.invoices.create(params={"customer": customer.id, "pending_invoice_items_behavior": "include"})

    def ids(**params: Any) -> list[str]:
        return [invoice.id for invoice in client.v1.invoices.list(params=params).data]  # type: ignore[arg-type]

    assert ids() == [draft.id, second.latest_invoice, first.latest_invoice]
    assert ids(customer=paying_customer.id) == [second.latest_invoice, first.latest_invoice]
    assert ids(subscription=first.id) == [first.latest_invoice]
    assert ids(subscription=first.id, customer=customer.id) == []
    assert ids(status="draft") == [draft.id]
    assert ids(status="paid", limit=1) == [second.latest_invoice]
    assert ids(starting_after=second.latest_invoice) == [first.latest_invoice]
    assert ids(ending_before=second.latest_invoice) == [draft.id]
    for limit in (0, 101):
        with pytest.raises(stripe.InvalidRequestError) as raised:
            client.v1.invoices.list(params={"limit": limit})
        assert raised.value.param == "limit"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.invoices.retrieve("in_missing")
    assert raised.value.http_status == 404


def test_preview_changes_nothing(
    client: stripe.StripeClient,
    database: SqlSessions,
    paying_customer: stripe.Customer,
    monthly: stripe.Price,
    clock: SandboxClock,
) -> None:
    subscription = _subscribe(client, paying_customer, monthly)
    item = subscription["items"].data[0]
    clock.advance(days=10)
    before = (_table_counts(database), client.v1.subscriptions.retrieve(subscription.id).to_dict())
    for behavior in ("always_invoice", "create_prorations", "none"):
        preview = client.v1.invoices.create_preview(
            params={
                "subscription": subscription.id,
                "subscription_details": {"items": [{"id": item.id, "quantity": 5}], "proration_behavior": behavior},
            }
        )
        assert re.fullmatch(r"upcoming_in_[A-Za-z0-9]+", preview.id)
        assert preview.status == "draft" and preview.number is None
        assert all(line.id.startswith("il_tmp_") and line.invoice == preview.id for line in preview.lines.data)
        assert preview.parent.subscription_details.subscription == subscription.id
    for extra in ({"cancel_now": True}, {"trial_end": "now"}, {"cancel_at_period_end": True}):
        try:
            client.v1.invoices.create_preview(
                params={
                    "subscription": subscription.id,  # type: ignore[arg-type]
                    "subscription_details": extra,
                }
            )
        except stripe.InvalidRequestError:
            pass
    after = (_table_counts(database), client.v1.subscriptions.retrieve(subscription.id).to_dict())
    assert after == before


def test_preview_amounts(
    client: stripe.StripeClient, paying_customer: stripe.Customer, monthly: stripe.Price, clock: SandboxClock
) -> None:
    subscription = _subscribe(client, paying_customer, monthly)
    item = subscription["items"].data[0]
    start, end = item.current_period_start, item.current_period_end
    at = start + 10 * DAY
    clock.advance_to(at + 1)

    def remaining(amount: int) -> int:
        """`amount` for the rest of the period from `at`, by the second, rounded half up per line."""
        exact = decimal.Decimal(amount) * (end - at) / (end - start)
        return int(exact.quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP))

    def preview(**details: Any) -> stripe.Invoice:
        return client.v1.invoices.create_preview(
            params={
                "subscription": subscription.id,
                "subscription_details": {  # type: ignore[arg-type]
                    "proration_date": at,
                    **details,
                },
            }
        )

    upgrade = [{"id": item.id, "quantity": 5}]
    now = preview(items=upgrade, proration_behavior="always_invoice")
    assert [line.amount for line in now.lines.data] == [remaining(5000), -remaining(2000)]
    assert now.parent.subscription_details.subscription_proration_date == at
    assert [line.description.split(" on ")[0] for line in now.lines.data] == ["Remaining time", "Unused time"]
    later = preview(items=upgrade)  # create_prorations: the next invoice, prorations included
    assert [line.amount for line in later.lines.data] == [remaining(5000), -remaining(2000), 5000]
    assert later.lines.data[2].period.start == end
    assert later.billing_reason == "subscription_cycle"
    plain = preview(items=upgrade, proration_behavior="none")
    assert [line.amount for line in plain.lines.data] == [5000]
    recurring = client.v1.invoices.create_preview(
        params={  # type: ignore[arg-type]
            "subscription": subscription.id,
            "preview_mode": "recurring",
            "subscription_details": {"items": upgrade, "proration_date": at},
        }
    )
    assert recurring.total == 5000
    leaving = preview(cancel_now=True)
    assert [line.amount for line in leaving.lines.data] == [-remaining(2000)]
    # The update itself, with the same proration date, bills what was previewed.
    updated = client.v1.subscriptions.update(
        subscription.id,
        params={  # type: ignore[arg-type]
            "items": upgrade,
            "proration_behavior": "always_invoice",
            "proration_date": at,
            "expand": ["latest_invoice"],
        },
    )
    assert [line.amount for line in updated.latest_invoice.lines.data] == [remaining(5000), -remaining(2000)]
    with pytest.raises(stripe.InvalidRequestError) as raised:
        preview(cancel_at_period_end=True)
    assert (raised.value.http_status, raised.value.code) == (404, "invoice_upcoming_none")


def test_preview_new_subscription_and_errors(
    client: stripe.StripeClient, customer: stripe.Customer, monthly: stripe.Price
) -> None:
    first = client.v1.invoices.create_preview(
        params={"customer": customer.id, "subscription_details": {"items": [{"price": monthly.id, "quantity": 3}]}}
    )
    assert (first.total, first.billing_reason, first.lines.data[0].quantity) == (3000, "subscription_create", 3)
    assert client.v1.subscriptions.list(params={"status": "all"}).data == []
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.invoices.create_preview(params={"customer": customer.id})
    assert raised.value.code == "invoice_no_customer_line_items"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.invoices.create_preview(params={"subscription": "sub_missing"})
    assert (raised.value.code, raised.value.param) == ("resource_missing", "subscription")
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.invoices.create_preview(params={})
    assert raised.value.param == "customer"


def test_declined_payment_is_recorded_without_idempotency_key(database: SqlSessions) -> None:
    # Without retries the library sends no Idempotency-Key: the other commit path.
    client = stripe.StripeClient("sk_test_sandbox", http_client=SandboxHTTPClient(database), max_network_retries=0)
    customer = client.v1.customers.create(
        params={
            "payment_method": "pm_card_chargeCustomerFail",
            "invoice_settings": {"default_payment_method": "pm_card_chargeCustomerFail"},
        }
    )
    client.v1.invoice_items.create(params={"customer": customer.id, "amount": 500, "currency": "usd"})
    invoice = client.v1.invoices.create(params={"customer": customer.id, "pending_invoice_items_behavior": "include"})
    with pytest.raises(stripe.CardError):
        client.v1.invoices.pay(invoice.id)
    after = client.v1.invoices.retrieve(invoice.id)
    assert (after.status, after.attempt_count) == ("open", 1)
    assert len(client.v1.events.list(params={"type": "invoice.payment_failed"}).data) == 1
