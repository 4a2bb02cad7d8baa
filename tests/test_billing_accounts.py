"""Billing accounts: all five calls, each rule, the state left in the index and in Stripe."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from sqlalchemy import update

from billing.models import BillingAccountIndex
from tests.helpers import BILLING_ACCOUNT_KEYS, FULL, assert_error, index_rows

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_create_returns_seed_shape_and_creates_customer(as_user: Any, state: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace()
    response = alice.post(f"/workspaces/{ws}/billing-accounts", FULL)
    assert response.status_code == 201, response.json
    body = response.json
    assert set(body) == BILLING_ACCOUNT_KEYS
    assert body["id"].startswith("cus_") and body["workspace_id"] == ws
    assert {k: body[k] for k in ("name", "email", "phone", "description", "currency")} == {
        k: FULL[k] for k in ("name", "email", "phone", "description", "currency")
    }
    assert body["address"] == FULL["address"]
    assert TIMESTAMP.match(body["created_at"]) and TIMESTAMP.match(body["updated_at"])
    customer = state.gateway.client.v1.customers.retrieve(body["id"])
    assert customer.metadata["workspace_id"] == ws and customer.metadata["currency"] == "eur"
    assert customer.email == FULL["email"] and customer.address.country == "US"
    rows = index_rows(state, ws)
    assert [(r.customer_id, r.state, r.currency) for r in rows] == [(body["id"], "active", "eur")]


def test_create_minimal_defaults(as_user: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace()
    body = alice.account(ws, address={"country": "za"})
    assert body["currency"] == "usd"
    assert body["phone"] is None and body["description"] is None
    assert body["address"] == {
        "country": "ZA",
        "line1": None,
        "line2": None,
        "city": None,
        "state": None,
        "postal_code": None,
    }


def test_create_validation_changes_nothing(as_user: Any, state: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace()
    bad = [
        ({**FULL, "name": ""}, "name"),
        ({**FULL, "name": "n" * 101}, "name"),
        ({k: v for k, v in FULL.items() if k != "name"}, "name"),
        ({**FULL, "email": "not-an-email"}, "email"),
        ({**FULL, "email": "a" * 140 + "@example.com"}, "email"),
        ({k: v for k, v in FULL.items() if k != "email"}, "email"),
        ({**FULL, "phone": "1" * 51}, "phone"),
        ({**FULL, "description": "d" * 201}, "description"),
        ({**FULL, "currency": "jpy"}, "currency"),
        ({**FULL, "address": {"line1": "x"}}, "address"),
        ({**FULL, "address": {"country": "XX"}}, "address"),
        ({**FULL, "address": {"country": "USA"}}, "address"),
        ({k: v for k, v in FULL.items() if k != "address"}, "address"),
        ({**FULL, "unknown": 1}, "unknown"),
    ]
    for payload, field in bad:
        body = assert_error(alice.post(f"/workspaces/{ws}/billing-accounts", payload), 422, "validation_failed")
        assert field in body["errors"], (field, body)
    assert index_rows(state) == []
    assert list(state.gateway.iter_customers()) == []


def test_list_is_read_your_writes(as_user: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace()
    assert alice.get(f"/workspaces/{ws}/billing-accounts").json == {"data": [], "has_more": False}
    created = [alice.account(ws, name=f"Account {i}") for i in range(3)]
    listed = alice.get(f"/workspaces/{ws}/billing-accounts").json
    assert listed["has_more"] is False
    assert [a["id"] for a in listed["data"]] == [a["id"] for a in created]
    assert listed["data"][0] == created[0]


def test_list_does_not_scan_the_stripe_account(as_user: Any, state: Any, monkeypatch: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace()
    mine = alice.account(ws)
    for i in range(30):  # customers of other tenants and of nobody
        state.gateway.client.v1.customers.create({"name": f"other {i}"})
    calls: list[str] = []
    original = state.gateway.client.v1.customers.list
    monkeypatch.setattr(
        state.gateway.client.v1.customers, "list", lambda *a, **k: calls.append("list") or original(*a, **k)
    )
    listed = alice.get(f"/workspaces/{ws}/billing-accounts").json["data"]
    assert [a["id"] for a in listed] == [mine["id"]]
    assert calls == []


def test_single_mode_limit(as_user: Any, state: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace("single")
    alice.account(ws)
    assert_error(alice.post(f"/workspaces/{ws}/billing-accounts", FULL), 409, "billing_account_limit_reached")
    assert len(index_rows(state, ws)) == 1
    assert len(list(state.gateway.iter_customers())) == 1


def test_pooled_mode_limit_is_ten(as_user: Any, state: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace("assigned")
    for i in range(10):
        alice.account(ws, name=f"A{i}")
    assert_error(alice.post(f"/workspaces/{ws}/billing-accounts", FULL), 409, "billing_account_limit_reached")
    assert len(index_rows(state, ws)) == 10
    assert len(alice.get(f"/workspaces/{ws}/billing-accounts").json["data"]) == 10


def test_retrieve(as_user: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace()
    created = alice.post(f"/workspaces/{ws}/billing-accounts", FULL).json
    assert alice.get(f"/workspaces/{ws}/billing-accounts/{created['id']}").json == created
    assert_error(alice.get(f"/workspaces/{ws}/billing-accounts/cus_doesnotexist"), 404, "not_found")


def test_update_mirrors_to_stripe(as_user: Any, state: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace()
    created = alice.post(f"/workspaces/{ws}/billing-accounts", FULL).json
    path = f"/workspaces/{ws}/billing-accounts/{created['id']}"
    response = alice.patch(
        path, {"name": "New name", "phone": None, "description": None, "address": {"country": "GB", "city": "London"}}
    )
    assert response.status_code == 200, response.json
    body = response.json
    assert body["name"] == "New name" and body["phone"] is None and body["description"] is None
    assert body["email"] == FULL["email"] and body["currency"] == "eur"
    assert body["address"]["country"] == "GB" and body["address"]["city"] == "London"
    assert body["address"]["line1"] is None
    assert body["updated_at"] >= body["created_at"]
    customer = state.gateway.client.v1.customers.retrieve(created["id"])
    assert customer.name == "New name" and customer.phone is None and customer.address.country == "GB"
    assert customer.metadata["workspace_id"] == ws  # ownership survives updates
    assert alice.get(path).json == body


def test_update_rules(as_user: Any, state: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace()
    created = alice.post(f"/workspaces/{ws}/billing-accounts", FULL).json
    path = f"/workspaces/{ws}/billing-accounts/{created['id']}"
    body = assert_error(alice.patch(path, {"currency": "usd"}), 422, "validation_failed")
    assert "currency" in body["errors"]
    assert_error(alice.patch(path, {"email": "nope"}), 422, "validation_failed")
    assert_error(alice.patch(path, {"address": {"city": "x"}}), 422, "validation_failed")
    assert_error(alice.patch(path, {"name": ""}), 422, "validation_failed")
    assert alice.get(path).json == created
    assert state.gateway.client.v1.customers.retrieve(created["id"]).metadata["currency"] == "eur"


def test_delete_removes_customer_and_index(as_user: Any, state: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace("single")
    created = alice.account(ws)
    path = f"/workspaces/{ws}/billing-accounts/{created['id']}"
    assert alice.delete(path).status_code == 204
    assert index_rows(state, ws) == []
    assert getattr(state.gateway.client.v1.customers.retrieve(created["id"]), "deleted", None) is True
    assert_error(alice.get(path), 404, "not_found")
    assert_error(alice.delete(path), 404, "not_found")
    alice.account(ws)  # the single slot is free again


def test_delete_guard_active_subscription(as_user: Any, state: Any, subscribe_in_stripe: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace()
    account = alice.account(ws)
    subscription = subscribe_in_stripe(account["id"], {"users": 3})
    path = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    assert_error(alice.delete(path), 422, "active_subscriptions_exist")
    assert len(index_rows(state, ws)) == 1
    assert getattr(state.gateway.client.v1.customers.retrieve(account["id"]), "deleted", None) is None
    state.gateway.client.v1.subscriptions.cancel(subscription.id)
    assert alice.delete(path).status_code == 204


def test_customer_deleted_in_stripe_disappears(
    as_user: Any, state: Any, webhooks_lost: None, reconcile_now: Any
) -> None:
    """Reads cost Stripe nothing, so a deletion whose webhook never arrived shows
    only once `reconcile` has caught up; then the index row is gone too."""
    alice = as_user("alice")
    ws = alice.workspace()
    account = alice.account(ws)
    state.gateway.client.v1.customers.delete(account["id"])
    assert [a["id"] for a in alice.get(f"/workspaces/{ws}/billing-accounts").json["data"]] == [account["id"]]
    reconcile_now()
    assert alice.get(f"/workspaces/{ws}/billing-accounts").json["data"] == []
    assert index_rows(state, ws) == []
    assert_error(alice.get(f"/workspaces/{ws}/billing-accounts/{account['id']}"), 404, "not_found")


def test_roles_on_billing_accounts(as_user: Any, state: Any) -> None:
    alice, bob, carol = as_user("alice"), as_user("bob"), as_user("carol")
    ws = alice.workspace()
    alice.add_member(ws, "bob", "admin")
    alice.add_member(ws, "carol", "viewer")
    account = bob.account(ws)
    path = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    assert carol.get(f"/workspaces/{ws}/billing-accounts").status_code == 200
    assert carol.get(path).status_code == 200
    assert_error(carol.post(f"/workspaces/{ws}/billing-accounts", FULL), 403, "permission_denied")
    assert_error(carol.patch(path, {"name": "x"}), 403, "permission_denied")
    assert_error(carol.delete(path), 403, "permission_denied")
    assert len(index_rows(state, ws)) == 1
    assert bob.patch(path, {"name": "by admin"}).status_code == 200


def test_customer_whose_metadata_names_another_workspace_is_not_shown(as_user: Any, state: Any) -> None:
    """Defence in depth: the index alone is not trusted; the customer's own
    metadata must name the workspace in the path."""
    alice = as_user("alice")
    workspace_id = alice.workspace()
    kept = alice.account(workspace_id, name="Kept")
    moved = alice.account(workspace_id, name="Moved")
    state.gateway.update_customer(
        moved["id"], {"metadata": {"workspace_id": "ws_someoneelse000000"}}, idempotency_key="test-move-metadata"
    )
    assert [a["id"] for a in alice.get(f"/workspaces/{workspace_id}/billing-accounts").json["data"]] == [kept["id"]]
    assert_error(alice.get(f"/workspaces/{workspace_id}/billing-accounts/{moved['id']}"), 404, "not_found")
    assert alice.get(f"/workspaces/{workspace_id}/billing-accounts/{kept['id']}").status_code == 200


def _crashed_reservation(state: Any, ws: str, *, reached_stripe: bool) -> str:
    """What a request that died between reserving a slot and activating it leaves:
    a pending row with its parameters (and, maybe, the customer made at Stripe)."""
    reference = uuid.uuid4().hex
    params = {
        "name": "Crashed",
        "email": "c@x.co",
        "address": {"country": "US"},
        "metadata": {"workspace_id": ws, "currency": "usd", "billing_api_reference": reference},
    }
    with state.db.write() as session:
        session.add(
            BillingAccountIndex(
                workspace_id=ws, reference=reference, currency="usd", state="pending", create_params=params
            )
        )
    if reached_stripe:
        state.gateway.client.v1.customers.create(params, {"idempotency_key": f"billing-account:{reference}"})
    return reference


@pytest.mark.stripe_reads  # the list settles the dead reservation: a Stripe create, once
@pytest.mark.parametrize("reached_stripe", [True, False])
def test_a_reservation_whose_request_died_is_settled_the_next_time_it_matters(
    as_user: Any, state: Any, reached_stripe: bool
) -> None:
    alice = as_user("alice")
    ws = alice.workspace("single")
    _crashed_reservation(state, ws, reached_stripe=reached_stripe)
    listed = alice.get(f"/workspaces/{ws}/billing-accounts").json["data"]
    assert [a["name"] for a in listed] == ["Crashed"]  # at once, not after 10 minutes
    [row] = index_rows(state, ws)
    assert row.state == "active" and row.customer_id == listed[0]["id"] and row.create_params is None
    in_stripe = [c for c in state.gateway.iter_customers() if c.metadata.to_dict().get("workspace_id") == ws]
    assert [c.id for c in in_stripe] == [row.customer_id]  # made once, whichever side of the crash
    assert_error(alice.post(f"/workspaces/{ws}/billing-accounts", FULL), 409, "billing_account_limit_reached")


def test_a_dead_reservation_refused_by_stripe_frees_its_slot(as_user: Any, state: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace("single")
    reference = _crashed_reservation(state, ws, reached_stripe=False)
    with state.db.write() as session:  # parameters Stripe refuses outright
        session.execute(
            update(BillingAccountIndex)
            .where(BillingAccountIndex.reference == reference)
            .values(create_params={"name": "x", "no_such_parameter": "y"})
        )
    response = alice.post(f"/workspaces/{ws}/billing-accounts", FULL)
    assert response.status_code == 201, response.json
    assert [r.customer_id for r in index_rows(state, ws)] == [response.json["id"]]


def test_a_reservation_whose_request_is_running_is_left_alone(as_user: Any, state: Any) -> None:
    from billing.leases import lease

    alice = as_user("alice")
    ws = alice.workspace("single")
    reference = _crashed_reservation(state, ws, reached_stripe=False)
    with lease(state.db, f"reservation:{reference}"):  # still in flight in another worker
        assert alice.get(f"/workspaces/{ws}/billing-accounts").json["data"] == []
        assert_error(alice.post(f"/workspaces/{ws}/billing-accounts", FULL), 409, "billing_account_limit_reached")
    assert [r.state for r in index_rows(state, ws)] == ["pending"]
