"""GET .../subscriptions: Stripe subscriptions reshaped into the seed's shape."""

from __future__ import annotations

import re
from typing import Any

from tests.helpers import assert_error

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
KEYS = {
    "id",
    "billing_account_id",
    "status",
    "currency",
    "product_quantities",
    "metadata",
    "current_period_start",
    "current_period_end",
    "created_at",
    "updated_at",
    "trial_end",
    "cancel_at_period_end",
    "cancel_at",
    "canceled_at",
    "pending_payment",
}


def test_list_reshapes_stripe_subscriptions(as_user: Any, subscribe_in_stripe: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace()
    account = alice.account(ws)
    sub = subscribe_in_stripe(account["id"], {"locations": 10, "users": 50}, metadata={"order_id": "6735"})
    response = alice.get(f"/workspaces/{ws}/billing-accounts/{account['id']}/subscriptions")
    assert response.status_code == 200
    body = response.json
    assert body["has_more"] is False and len(body["data"]) == 1
    item = body["data"][0]
    assert set(item) == KEYS
    assert item["id"] == sub.id and item["billing_account_id"] == account["id"]
    assert item["status"] == "active" and item["currency"] == "usd" and item["pending_payment"] is None
    assert item["metadata"] == {"order_id": "6735"}
    prices = {i.price.lookup_key: i.price.id for i in sub["items"].data}
    assert item["product_quantities"] == {
        "locations": {"price_id": prices["locations_usd_month"], "quantity": 10, "interval": "month"},
        "users": {"price_id": prices["users_usd_month"], "quantity": 50, "interval": "month"},
    }
    # Periods come from the subscription items (the pinned API keeps them there).
    first_item = sub["items"].data[0]
    assert item["current_period_start"] == _ts(first_item.current_period_start)
    assert item["current_period_end"] == _ts(first_item.current_period_end)
    for key in ("current_period_start", "current_period_end", "created_at", "updated_at"):
        assert TIMESTAMP.match(item[key]), key
    assert item["trial_end"] is None and item["cancel_at_period_end"] is False and item["canceled_at"] is None


def _ts(value: int) -> str:
    from schemas.common import format_timestamp

    return format_timestamp(value)


def test_list_newest_first_includes_canceled_and_trials(as_user: Any, subscribe_in_stripe: Any, state: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace()
    account = alice.account(ws)
    first = subscribe_in_stripe(account["id"], {"users": 1})
    state.gateway.client.v1.subscriptions.cancel(first.id)
    second = subscribe_in_stripe(account["id"], {"sso": 1}, interval="year")
    third = subscribe_in_stripe(account["id"], {"users": 2}, trial_period_days=14)
    data = alice.get(f"/workspaces/{ws}/billing-accounts/{account['id']}/subscriptions").json["data"]
    assert {d["id"] for d in data} == {first.id, second.id, third.id}
    assert [d["created_at"] for d in data] == sorted((d["created_at"] for d in data), reverse=True)
    by_id = {d["id"]: d for d in data}
    assert by_id[first.id]["status"] == "canceled" and by_id[first.id]["canceled_at"]
    assert by_id[second.id]["product_quantities"]["sso"]["interval"] == "year"
    assert by_id[third.id]["status"] == "trialing" and by_id[third.id]["trial_end"]


def test_paused_collection_reads_paused(as_user: Any, subscribe_in_stripe: Any, state: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace()
    account = alice.account(ws)
    sub = subscribe_in_stripe(account["id"], {"users": 1})
    state.gateway.client.v1.subscriptions.update(sub.id, {"pause_collection": {"behavior": "void"}})
    data = alice.get(f"/workspaces/{ws}/billing-accounts/{account['id']}/subscriptions").json["data"]
    assert data[0]["status"] == "paused"


def test_other_accounts_subscriptions_are_not_listed(as_user: Any, subscribe_in_stripe: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace()
    a, b = alice.account(ws), alice.account(ws)
    subscribe_in_stripe(b["id"], {"users": 1})
    assert alice.get(f"/workspaces/{ws}/billing-accounts/{a['id']}/subscriptions").json["data"] == []
    assert_error(alice.get(f"/workspaces/{ws}/billing-accounts/cus_unknown/subscriptions"), 404, "not_found")
