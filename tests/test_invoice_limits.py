"""Stripe's limits on one subscription's invoices (10 a minute, 20 a day): a workspace that
adds seats one at a time all day never meets them, and each seat is billed exactly once."""

from __future__ import annotations

from typing import Any

import pytest

from billing.subscriptions.invoice_limits import MARGIN, PER_DAY, PER_MINUTE


@pytest.fixture
def paying(as_user: Any) -> dict[str, Any]:
    paying = dict(as_user("alice").account_without_trial())
    response = paying["alice"].post(f"/sandbox{paying['acc']}/payment-methods", {"payment_method": "pm_card_visa"})
    assert response.status_code == 201
    return paying


def proration_items(state: Any, customer_id: str) -> list[tuple[str, str, str, int]]:
    """(invoice item, invoice, invoice status, amount) of every proration line Stripe has billed the customer."""
    found = []
    for invoice in state.gateway.client.v1.invoices.list({"customer": customer_id, "limit": 100}).auto_paging_iter():
        for line in invoice.lines.auto_paging_iter():
            details = line.parent.subscription_item_details if line.parent else None
            if details is not None and details.proration:
                found.append((details.invoice_item, invoice.id, invoice.status, line.amount))
    return found


def test_thirty_single_seat_increases_in_a_day_are_all_billed_once(
    paying: dict[str, Any], state: Any, frozen_sandbox_time: None
) -> None:
    alice, acc = paying["alice"], paying["acc"]
    sub = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 1}}).json
    path = f"{acc}/subscriptions/{sub['id']}"
    alice.advance_clock({"days": 10})
    invoices_before = len(alice.get(f"{acc}/invoices").json["data"])
    for seats in range(2, 32):
        response = alice.patch(path, {"product_quantities": {"users": seats}})
        assert response.status_code == 200, response.json
        assert response.json["product_quantities"]["users"]["quantity"] == seats
        if seats > PER_MINUTE:  # the first ten in one minute (the clock stands still), then one every 5 minutes
            alice.advance_clock({"minutes": 5})
    at_once = alice.get(f"{acc}/invoices").json["data"][: -invoices_before or None]
    # In the first minute 8 at once (the minute's 10 less the margin), 2 left for later; then at
    # once until the day's 20 less the margin: 18 in all, 12 left for the next invoice.
    assert len(at_once) == PER_DAY - MARGIN
    assert all(invoice["status"] == "paid" for invoice in at_once)
    alice.advance_clock({"days": 21})  # past the period's end: the renewal
    renewal = alice.get(f"{acc}/invoices").json["data"][0]
    items = proration_items(state, paying["account"]["id"])
    # Two prorations per increase (the unused time of the old quantity credited, the rest of the
    # period at the new one charged), each on exactly one invoice, every one of them paid.
    assert len(items) == 60 and len({item for item, *_ in items}) == 60
    assert {status for *_, status, _ in items} == {"paid"}
    later = [amount for _, invoice_id, _, amount in items if invoice_id == renewal["id"]]
    # Those of an increase past the limits wait for the next invoice: the next one made at once
    # (an always_invoice update takes the subscription's pending prorations too) or the renewal.
    assert {invoice_id for _, invoice_id, _, _ in items} <= {i["id"] for i in at_once} | {renewal["id"]}
    assert len(later) >= 2 * (30 - PER_DAY)
    assert renewal["total"] == sum(later) + 31 * renewal["lines"][-1]["unit_amount"]


def test_past_the_limits_the_preview_is_the_next_invoice_and_says_so(
    paying: dict[str, Any], state: Any, monkeypatch: pytest.MonkeyPatch, frozen_sandbox_time: None
) -> None:
    monkeypatch.setattr(state.gateway, "clock", state.sandbox_clock.now)  # Stripe's clock, frozen too
    alice, acc = paying["alice"], paying["acc"]
    sub = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 1}}).json
    path = f"{acc}/subscriptions/{sub['id']}"
    alice.advance_clock({"days": 10})
    for seats in range(2, 2 + PER_MINUTE - MARGIN):  # the minute's room, used
        assert alice.patch(path, {"product_quantities": {"users": seats}}).status_code == 200
    invoices = alice.get(f"{acc}/invoices").json["data"]
    seats = 2 + PER_MINUTE - MARGIN
    preview = alice.post(
        f"{acc}/invoices/preview",
        {"subscription_id": sub["id"], "items": [{"product_type": "users", "quantity": seats}]},
    ).json
    current = alice.get(path).json
    assert preview["created_at"] == current["current_period_end"]  # not now: with the renewal
    assert alice.patch(path, {"product_quantities": {"users": seats}}).status_code == 200
    assert alice.get(f"{acc}/invoices").json["data"] == invoices  # nothing invoiced now
    alice.advance_clock({"days": 21})
    renewal = alice.get(f"{acc}/invoices").json["data"][0]
    assert renewal["created_at"] == preview["created_at"]
    assert (renewal["total"], renewal["amount_due"]) == (preview["total"], preview["amount_due"])
    assert [(line["amount"], line["quantity"]) for line in renewal["lines"]] == [
        (line["amount"], line["quantity"]) for line in preview["lines"]
    ]
