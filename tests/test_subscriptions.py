"""Subscriptions through the API: create, read, change, cancel; each rule both ways."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from billing.catalog import lookup_key
from billing.models import Workspace
from tests.helpers import assert_error


def subs_path(ws: str, account_id: str, sub_id: str = "") -> str:
    path = f"/workspaces/{ws}/billing-accounts/{account_id}/subscriptions"
    return f"{path}/{sub_id}" if sub_id else path


@pytest.fixture
def trial_setup(as_user: Any) -> dict[str, Any]:
    alice = as_user("alice")
    ws = alice.workspace("single")
    account = alice.account(ws, currency="eur")
    return {"alice": alice, "ws": ws, "account": account, "path": subs_path(ws, account["id"])}


def stripe_price(state: Any, product: str, currency: str = "usd", interval: str = "month") -> Any:
    key = lookup_key(product, currency, interval)
    return state.gateway.prices_by_lookup_key([key])[key]


def test_first_subscription_is_a_trial_without_payment_method(trial_setup: dict[str, Any], state: Any) -> None:
    alice, path = trial_setup["alice"], trial_setup["path"]
    response = alice.post(path, {"product_quantities": {"users": 5, "locations": 2}, "metadata": {"order_id": "6735"}})
    assert response.status_code == 201, response.json
    body = response.json
    assert body["status"] == "trialing" and body["currency"] == "eur"
    assert body["metadata"] == {"order_id": "6735"}
    assert body["product_quantities"]["users"] == {
        "price_id": stripe_price(state, "users", "eur").id,
        "quantity": 5,
        "interval": "month",
    }
    assert body["product_quantities"]["locations"]["quantity"] == 2
    sub = state.gateway.client.v1.subscriptions.retrieve(body["id"])
    assert sub.trial_end - sub.trial_start == 14 * 86400
    assert sub.trial_settings.end_behavior.missing_payment_method == "pause"
    assert body["trial_end"] is not None
    with state.db.read() as session:
        assert session.scalar(select(Workspace.first_subscription_at).where(Workspace.id == trial_setup["ws"]))
    assert alice.get(subs_path(trial_setup["ws"], trial_setup["account"]["id"], body["id"])).json == body


def test_second_subscription_needs_a_payment_method(trial_setup: dict[str, Any], state: Any) -> None:
    alice, path = trial_setup["alice"], trial_setup["path"]
    assert alice.post(path, {"product_quantities": {"users": 1}}).status_code == 201
    assert_error(alice.post(path, {"product_quantities": {"sso": 1}}), 422, "payment_method_required")
    assert len(state.gateway.list_subscriptions(trial_setup["account"]["id"])) == 1


def test_no_trial_with_two_accounts(as_user: Any, state: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    first, _second = alice.account(ws), alice.account(ws)
    assert_error(
        alice.post(subs_path(ws, first["id"]), {"product_quantities": {"users": 1}}), 422, "payment_method_required"
    )
    assert state.gateway.list_subscriptions(first["id"]) == []


def test_trial_is_once_per_workspace(trial_setup: dict[str, Any], state: Any) -> None:
    alice, ws, account = trial_setup["alice"], trial_setup["ws"], trial_setup["account"]
    sub = alice.post(trial_setup["path"], {"product_quantities": {"users": 1}}).json
    state.gateway.client.v1.subscriptions.cancel(sub["id"])
    assert alice.delete(f"/workspaces/{ws}/billing-accounts/{account['id']}").status_code == 204
    fresh = alice.account(ws)
    eligibility = alice.get(f"/workspaces/{ws}/billing-accounts/{fresh['id']}/trial-eligibility").json
    assert eligibility["trial_eligible"] is False
    assert_error(
        alice.post(subs_path(ws, fresh["id"]), {"product_quantities": {"users": 1}}), 422, "payment_method_required"
    )


@pytest.mark.parametrize(
    "body,field",
    [
        ({}, "product_quantities"),
        ({"product_quantities": {}}, "product_quantities"),
        ({"product_quantities": {"users": 0}}, "product_quantities"),
        ({"product_quantities": {"users": 1.5}}, "product_quantities"),
        ({"product_quantities": {"users": "2"}}, "product_quantities"),
        ({"product_quantities": {"widgets": 1}}, "product_quantities"),
        ({"product_quantities": {"users": 1}, "interval": "week"}, "interval"),
        ({"product_quantities": {"users": 1}, "metadata": {f"k{i}": "v" for i in range(11)}}, "metadata"),
        ({"product_quantities": {"users": 1}, "metadata": {"k" * 41: "v"}}, "metadata"),
        ({"product_quantities": {"users": 1}, "metadata": {"k": "v" * 501}}, "metadata"),
        ({"product_quantities": {"users": 1}, "metadata": {"k": 5}}, "metadata"),
        ({"product_quantities": {"users": 1}, "metadata": {"billing_api_x": "v"}}, "metadata"),
        ({"product_quantities": {"users": 1}, "extra": True}, "extra"),
    ],
)
def test_create_validation(trial_setup: dict[str, Any], state: Any, body: dict[str, Any], field: str) -> None:
    error = assert_error(trial_setup["alice"].post(trial_setup["path"], body), 422, "validation_failed")
    assert field in error["errors"]
    assert state.gateway.list_subscriptions(trial_setup["account"]["id"]) == []


def test_missing_price_is_price_not_configured(trial_setup: dict[str, Any], state: Any) -> None:
    price = stripe_price(state, "sso", "eur", "year")
    state.gateway.client.v1.prices.update(price.id, {"active": False})
    state.prices.clear()
    response = trial_setup["alice"].post(trial_setup["path"], {"product_quantities": {"sso": 1}, "interval": "year"})
    assert_error(response, 422, "price_not_configured")
    assert state.gateway.list_subscriptions(trial_setup["account"]["id"]) == []


def test_yearly_interval(trial_setup: dict[str, Any], state: Any) -> None:
    body = trial_setup["alice"].post(trial_setup["path"], {"product_quantities": {"sso": 1}, "interval": "year"}).json
    assert body["product_quantities"]["sso"] == {
        "price_id": stripe_price(state, "sso", "eur", "year").id,
        "quantity": 1,
        "interval": "year",
    }


def test_changes_on_a_trial(trial_setup: dict[str, Any], state: Any) -> None:
    alice, ws, account = trial_setup["alice"], trial_setup["ws"], trial_setup["account"]
    sub = alice.post(trial_setup["path"], {"product_quantities": {"users": 5}, "metadata": {"a": "1"}}).json
    path = subs_path(ws, account["id"], sub["id"])

    body = alice.patch(path, {"add_products": {"users": 2, "sso": 1}}).json
    assert {p: v["quantity"] for p, v in body["product_quantities"].items()} == {"users": 7, "sso": 1}

    body = alice.patch(path, {"remove_products": ["sso"]}).json
    assert {p: v["quantity"] for p, v in body["product_quantities"].items()} == {"users": 7}

    body = alice.patch(
        path, {"product_quantities": {"locations": 3, "users": 2}, "metadata": {"b": "2", "a": None}}
    ).json
    assert {p: v["quantity"] for p, v in body["product_quantities"].items()} == {"locations": 3, "users": 2}
    assert body["metadata"] == {"b": "2"}

    body = alice.patch(path, {"metadata": {"c": "3"}}).json
    assert body["metadata"] == {"b": "2", "c": "3"}

    assert_error(alice.patch(path, {"remove_products": ["locations", "users"]}), 422, "cannot_remove_last_product")
    stripe_sub = state.gateway.client.v1.subscriptions.retrieve(sub["id"])
    assert sorted((i.price.lookup_key, i.quantity) for i in stripe_sub["items"].data) == [
        ("locations_eur_month", 3),
        ("users_eur_month", 2),
    ]
    assert alice.get(path).json["product_quantities"] == body["product_quantities"]


@pytest.mark.parametrize(
    "body",
    [
        {"action": "pause", "add_products": {"users": 1}},
        {"product_quantities": {"users": 1}, "remove_products": ["users"]},
        {"add_products": {"users": 1}, "metadata": {"a": "b"}},
        {"action": "sync", "metadata": {"a": "b"}},
    ],
)
def test_more_than_one_operation(trial_setup: dict[str, Any], state: Any, body: dict[str, Any]) -> None:
    alice, ws, account = trial_setup["alice"], trial_setup["ws"], trial_setup["account"]
    sub = alice.post(trial_setup["path"], {"product_quantities": {"users": 5}}).json
    path = subs_path(ws, account["id"], sub["id"])
    assert_error(alice.patch(path, body), 422, "multiple_operations")
    assert alice.get(path).json == sub


def test_patch_validation(trial_setup: dict[str, Any]) -> None:
    alice, ws, account = trial_setup["alice"], trial_setup["ws"], trial_setup["account"]
    sub = alice.post(trial_setup["path"], {"product_quantities": {"users": 5}}).json
    path = subs_path(ws, account["id"], sub["id"])
    bodies: list[dict[str, Any]] = [
        {},
        {"action": "explode"},
        {"add_products": {"users": 0}},
        {"remove_products": []},
        {"remove_products": ["widgets"]},
        {"product_quantities": {}},
    ]
    for body in bodies:
        assert_error(alice.patch(path, body), 422, "validation_failed")
    assert alice.get(path).json == sub


def test_cancel_at_period_end_and_undo(trial_setup: dict[str, Any], state: Any) -> None:
    alice, ws, account = trial_setup["alice"], trial_setup["ws"], trial_setup["account"]
    sub = alice.post(trial_setup["path"], {"product_quantities": {"users": 1}}).json
    path = subs_path(ws, account["id"], sub["id"])
    response = alice.delete(path)
    assert response.status_code == 200
    assert response.json["cancel_at_period_end"] is True and response.json["status"] == "trialing"
    assert state.gateway.client.v1.subscriptions.retrieve(sub["id"]).cancel_at_period_end is True
    # Cancelling again is harmless.
    assert alice.delete(path).json["cancel_at_period_end"] is True
    # Still active until then: the account can't be deleted.
    assert_error(alice.delete(f"/workspaces/{ws}/billing-accounts/{account['id']}"), 422, "active_subscriptions_exist")
    body = alice.patch(path, {"action": "resume"}).json
    assert body["cancel_at_period_end"] is False and body["cancel_at"] is None
    assert state.gateway.client.v1.subscriptions.retrieve(sub["id"]).cancel_at_period_end is False


def test_pause_and_resume_collection(trial_setup: dict[str, Any], state: Any) -> None:
    alice, ws, account = trial_setup["alice"], trial_setup["ws"], trial_setup["account"]
    sub = alice.post(trial_setup["path"], {"product_quantities": {"users": 1}}).json
    path = subs_path(ws, account["id"], sub["id"])
    body = alice.patch(path, {"action": "pause"}).json
    assert body["status"] == "paused"
    assert state.gateway.client.v1.subscriptions.retrieve(sub["id"]).pause_collection.behavior == "void"
    assert alice.patch(path, {"action": "pause"}).json["status"] == "paused"  # idempotent
    body = alice.patch(path, {"action": "resume"}).json
    assert body["status"] == "trialing"
    assert state.gateway.client.v1.subscriptions.retrieve(sub["id"]).pause_collection is None
    assert alice.patch(path, {"action": "sync"}).json == alice.get(path).json


def test_canceled_subscription_cannot_change(trial_setup: dict[str, Any], state: Any) -> None:
    alice, ws, account = trial_setup["alice"], trial_setup["ws"], trial_setup["account"]
    sub = alice.post(trial_setup["path"], {"product_quantities": {"users": 1}}).json
    state.gateway.client.v1.subscriptions.cancel(sub["id"])
    path = subs_path(ws, account["id"], sub["id"])
    assert_error(alice.patch(path, {"add_products": {"users": 1}}), 409, "subscription_not_active")
    assert_error(alice.patch(path, {"action": "pause"}), 409, "subscription_not_active")
    assert alice.delete(path).json["status"] == "canceled"


def test_subscription_of_another_account_is_404(as_user: Any, subscribe_in_stripe: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    a, b = alice.account(ws), alice.account(ws)
    sub_b = subscribe_in_stripe(b["id"], {"users": 1})
    for method in ("get", "delete"):
        assert_error(getattr(alice, method)(subs_path(ws, a["id"], sub_b.id)), 404, "not_found")
    assert_error(alice.patch(subs_path(ws, a["id"], sub_b.id), {"action": "pause"}), 404, "not_found")
    assert_error(alice.get(subs_path(ws, a["id"], "sub_nope")), 404, "not_found")


def test_trial_eligibility_body(trial_setup: dict[str, Any]) -> None:
    alice, ws, account = trial_setup["alice"], trial_setup["ws"], trial_setup["account"]
    path = f"/workspaces/{ws}/billing-accounts/{account['id']}/trial-eligibility"
    body = alice.get(path).json
    assert body == {
        "trial_eligible": True,
        "has_payment_method": False,
        "can_create_subscription": True,
        "trial_info": {"trial_days": 14, "message": body["trial_info"]["message"]},
        "requirements": {},
    }
    alice.post(trial_setup["path"], {"product_quantities": {"users": 1}})
    body = alice.get(path).json
    assert body["trial_eligible"] is False and body["trial_info"] is None
    assert body["can_create_subscription"] is False
    assert set(body["requirements"]) == {"add_payment_method"}


def test_archived_workspace_cannot_create_subscriptions(trial_setup: dict[str, Any]) -> None:
    alice, ws, account = trial_setup["alice"], trial_setup["ws"], trial_setup["account"]
    assert alice.delete(f"/workspaces/{ws}").status_code == 204
    body = alice.get(f"/workspaces/{ws}/billing-accounts/{account['id']}/trial-eligibility").json
    assert body["trial_eligible"] is True and body["can_create_subscription"] is False
    assert_error(alice.post(trial_setup["path"], {"product_quantities": {"users": 1}}), 409, "workspace_archived")
