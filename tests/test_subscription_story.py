"""The whole subscription lifecycle through the HTTP API on the sandbox."""

from __future__ import annotations

from typing import Any

from tests.helpers import assert_error


def test_trial_to_cancellation_story(as_user: Any, state: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace("single")
    account = alice.account(ws)
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"

    # A trial, with no payment method.
    sub = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 5}})
    assert sub.status_code == 201, sub.json
    sub = sub.json
    path = f"{acc}/subscriptions/{sub['id']}"
    assert sub["status"] == "trialing"

    # The trial ends without a payment method: the subscription pauses.
    alice.advance_clock({"days": 15})
    assert alice.get(path).json["status"] == "paused"
    assert_error(alice.patch(path, {"action": "resume"}), 422, "payment_method_required")

    # A card arrives (Stripe's webhook makes the first one the default), then resume.
    card = alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_visa"})
    assert card.status_code == 201, card.json
    methods = alice.get(f"{acc}/payment-methods").json["data"]
    assert [(m["id"], m["is_default"], m["brand"], m["last4"]) for m in methods] == [
        (card.json["id"], True, "visa", "4242")
    ]
    resumed = alice.patch(path, {"action": "resume"})
    assert resumed.status_code == 200, resumed.json
    assert resumed.json["status"] == "active"
    invoices = alice.get(f"{acc}/invoices").json["data"]
    assert invoices[0]["status"] == "paid" and invoices[0]["amount_paid"] > 0

    # Add and remove products.
    grown = alice.patch(path, {"add_products": {"users": 2, "sso": 1}})
    assert grown.status_code == 200, grown.json
    assert {p: v["quantity"] for p, v in grown.json["product_quantities"].items()} == {"users": 7, "sso": 1}
    proration = alice.get(f"{acc}/invoices").json["data"][0]
    assert proration["status"] == "paid" and proration["amount_paid"] > 0  # increases are charged now
    before = len(alice.get(f"{acc}/invoices").json["data"])
    shrunk = alice.patch(path, {"remove_products": ["sso"]}).json
    assert set(shrunk["product_quantities"]) == {"users"}
    assert len(alice.get(f"{acc}/invoices").json["data"]) == before  # decreases: no credit, no invoice

    # Cancel at period end; the account is still in use until then.
    canceled = alice.delete(path).json
    assert canceled["cancel_at_period_end"] is True and canceled["status"] == "active"
    assert_error(alice.delete(acc), 422, "active_subscriptions_exist")

    # Past the period end it is canceled, and the account can go.
    alice.advance_clock({"days": 32})
    assert alice.get(path).json["status"] == "canceled"
    assert alice.delete(acc).status_code == 204
