"""Workspaces and members: every call with its role rules."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from billing.models import Member, Workspace
from tests.helpers import assert_error

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_create_workspace_makes_caller_owner(as_user: Any, state: Any) -> None:
    alice = as_user("alice")
    response = alice.post("/workspaces", {"name": "Acme", "billing_mode": "single", "description": "HQ"})
    assert response.status_code == 201
    body = response.json
    assert re.fullmatch(r"ws_[A-Za-z0-9]{16}", body["id"])
    assert body["name"] == "Acme" and body["description"] == "HQ" and body["billing_mode"] == "single"
    assert body["archived"] is False and body["archived_at"] is None
    assert TIMESTAMP.match(body["created_at"]) and TIMESTAMP.match(body["updated_at"])
    with state.db.read() as session:
        member = session.get(Member, (body["id"], "alice"))
        assert member is not None and member.role == "owner"
    assert alice.get("/workspaces").json["data"][0]["id"] == body["id"]
    assert alice.get(f"/workspaces/{body['id']}").json == body


def test_create_workspace_validation(as_user: Any, state: Any) -> None:
    alice = as_user("alice")
    body = assert_error(
        alice.post("/workspaces", {"name": "x" * 51, "billing_mode": "weird"}), 422, "validation_failed"
    )
    assert set(body["errors"]) == {"name", "billing_mode"}
    assert_error(alice.post("/workspaces", {"billing_mode": "single"}), 422, "validation_failed")
    assert_error(
        alice.post("/workspaces", {"name": "a", "billing_mode": "single", "extra": 1}), 422, "validation_failed"
    )
    assert_error(
        alice.post("/workspaces", {"name": "a", "billing_mode": "single", "description": "d" * 201}),
        422,
        "validation_failed",
    )
    with state.db.read() as session:
        assert session.scalars(select(Workspace)).all() == []


def test_bad_json_is_400(as_user: Any) -> None:
    alice = as_user("alice")
    response = alice.client.post(
        "/workspaces", data="{not json", headers={**alice.headers, "Content-Type": "application/json"}
    )
    assert_error(response, 400, "invalid_json")


def test_update_workspace_rules(as_user: Any) -> None:
    alice, bob, carol = as_user("alice"), as_user("bob"), as_user("carol")
    ws = alice.workspace()
    alice.add_member(ws, "bob", "admin")
    alice.add_member(ws, "carol", "viewer")
    response = bob.patch(f"/workspaces/{ws}", {"name": "Renamed", "description": None})
    assert response.status_code == 200
    assert response.json["name"] == "Renamed" and response.json["description"] is None
    body = assert_error(alice.patch(f"/workspaces/{ws}", {"billing_mode": "single"}), 422, "validation_failed")
    assert "billing_mode" in body["errors"]
    assert alice.get(f"/workspaces/{ws}").json["billing_mode"] == "pooled"
    assert_error(carol.patch(f"/workspaces/{ws}", {"name": "Nope"}), 403, "permission_denied")
    assert alice.get(f"/workspaces/{ws}").json["name"] == "Renamed"


def test_archive_rules(as_user: Any) -> None:
    alice, bob = as_user("alice"), as_user("bob")
    ws = alice.workspace()
    alice.add_member(ws, "bob", "admin")
    assert_error(bob.delete(f"/workspaces/{ws}"), 403, "permission_denied")
    assert alice.delete(f"/workspaces/{ws}").status_code == 204
    body = alice.get(f"/workspaces/{ws}").json
    assert body["archived"] is True and TIMESTAMP.match(body["archived_at"])
    # reads still work, writes are 409
    assert alice.get(f"/workspaces/{ws}/members").status_code == 200
    assert alice.get(f"/workspaces/{ws}/billing-accounts").status_code == 200
    assert_error(alice.patch(f"/workspaces/{ws}", {"name": "x"}), 409, "workspace_archived")
    assert_error(
        alice.post(f"/workspaces/{ws}/members", {"user_id": "dan", "role": "viewer"}), 409, "workspace_archived"
    )
    assert_error(
        alice.post(
            f"/workspaces/{ws}/billing-accounts", {"name": "a", "email": "a@b.co", "address": {"country": "US"}}
        ),
        409,
        "workspace_archived",
    )
    assert_error(alice.delete(f"/workspaces/{ws}"), 409, "workspace_archived")


def test_non_member_sees_404(as_user: Any) -> None:
    alice, mallory = as_user("alice"), as_user("mallory")
    ws = alice.workspace()
    assert_error(mallory.get(f"/workspaces/{ws}"), 404, "not_found")
    assert_error(mallory.get("/workspaces/ws_doesnotexist0000"), 404, "not_found")
    assert mallory.get("/workspaces").json["data"] == []


# -- members -------------------------------------------------------------------


def test_member_lifecycle(as_user: Any) -> None:
    alice, bob = as_user("alice"), as_user("bob")
    ws = alice.workspace()
    response = alice.post(f"/workspaces/{ws}/members", {"user_id": "bob", "role": "viewer"})
    assert response.status_code == 201
    assert (
        response.json["user_id"] == "bob" and response.json["workspace_id"] == ws and response.json["role"] == "viewer"
    )
    assert_error(alice.post(f"/workspaces/{ws}/members", {"user_id": "bob", "role": "admin"}), 409, "member_exists")
    members = bob.get(f"/workspaces/{ws}/members").json["data"]
    assert {(m["user_id"], m["role"]) for m in members} == {("alice", "owner"), ("bob", "viewer")}
    response = alice.patch(f"/workspaces/{ws}/members/bob", {"role": "admin"})
    assert response.status_code == 200 and response.json["role"] == "admin"
    assert_error(alice.patch(f"/workspaces/{ws}/members/nobody", {"role": "admin"}), 404, "not_found")
    assert alice.delete(f"/workspaces/{ws}/members/bob").status_code == 204
    assert_error(bob.get(f"/workspaces/{ws}"), 404, "not_found")


def test_only_owner_grants_owner(as_user: Any) -> None:
    alice, bob = as_user("alice"), as_user("bob")
    ws = alice.workspace()
    alice.add_member(ws, "bob", "admin")
    assert_error(bob.post(f"/workspaces/{ws}/members", {"user_id": "dan", "role": "owner"}), 403, "permission_denied")
    assert_error(bob.patch(f"/workspaces/{ws}/members/bob", {"role": "owner"}), 403, "permission_denied")
    assert_error(bob.patch(f"/workspaces/{ws}/members/alice", {"role": "viewer"}), 403, "permission_denied")
    assert_error(bob.delete(f"/workspaces/{ws}/members/alice"), 403, "permission_denied")
    assert bob.post(f"/workspaces/{ws}/members", {"user_id": "dan", "role": "viewer"}).status_code == 201
    assert alice.patch(f"/workspaces/{ws}/members/bob", {"role": "owner"}).json["role"] == "owner"


def test_viewer_cannot_manage_members_but_can_leave(as_user: Any) -> None:
    alice, carol = as_user("alice"), as_user("carol")
    ws = alice.workspace()
    alice.add_member(ws, "carol", "viewer")
    alice.add_member(ws, "dan", "viewer")
    assert_error(
        carol.post(f"/workspaces/{ws}/members", {"user_id": "eve", "role": "viewer"}), 403, "permission_denied"
    )
    assert_error(carol.delete(f"/workspaces/{ws}/members/dan"), 403, "permission_denied")
    assert_error(carol.patch(f"/workspaces/{ws}/members/carol", {"role": "admin"}), 403, "permission_denied")
    assert carol.delete(f"/workspaces/{ws}/members/carol").status_code == 204
    assert_error(carol.get(f"/workspaces/{ws}"), 404, "not_found")


def test_last_owner_is_kept(as_user: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace()
    assert_error(alice.patch(f"/workspaces/{ws}/members/alice", {"role": "admin"}), 422, "cannot_remove_last_owner")
    assert_error(alice.delete(f"/workspaces/{ws}/members/alice"), 422, "cannot_remove_last_owner")
    alice.add_member(ws, "bob", "owner")
    assert alice.patch(f"/workspaces/{ws}/members/alice", {"role": "admin"}).status_code == 200
    bob = as_user("bob")
    assert_error(bob.delete(f"/workspaces/{ws}/members/bob"), 422, "cannot_remove_last_owner")


def test_member_validation(as_user: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace()
    body = assert_error(
        alice.post(f"/workspaces/{ws}/members", {"user_id": "", "role": "boss"}), 422, "validation_failed"
    )
    assert set(body["errors"]) == {"user_id", "role"}
    assert len(alice.get(f"/workspaces/{ws}/members").json["data"]) == 1


def test_a_workspace_holds_at_most_100_members(as_user: Any, state: Any) -> None:
    """The owner and 99 more; the next add is 409 member_limit_reached and adds nothing."""
    alice = as_user("alice")
    ws = alice.workspace()
    with state.db.write() as session:  # 98 members at once: the API's own adds are the last ones
        session.add_all(Member(workspace_id=ws, user_id=f"user-{i}", role="viewer") for i in range(98))
    alice.add_member(ws, "number-100", "viewer")
    body = assert_error(
        alice.post(f"/workspaces/{ws}/members", {"user_id": "number-101", "role": "viewer"}),
        409,
        "member_limit_reached",
    )
    assert "100" in body["message"]
    assert len(alice.get(f"/workspaces/{ws}/members").json["data"]) == 100
    assert alice.delete(f"/workspaces/{ws}/members/user-0").status_code == 204  # room again
    alice.add_member(ws, "number-101", "viewer")


def test_pooled_seat_limit_is_the_pools_users_capacity(as_user: Any) -> None:
    """In pooled mode every Workspace answer carries the pool's users capacity
    (the sum over its accounts' subscriptions); null in the other modes."""
    alice = as_user("alice")
    pooled, single = alice.workspace("pooled"), alice.workspace("single", name="Solo")
    assert alice.get(f"/workspaces/{pooled}").json["pooled_seat_limit"] == 0
    assert alice.get(f"/workspaces/{single}").json["pooled_seat_limit"] is None
    first = alice.account(pooled)
    trial = alice.post(
        f"/workspaces/{pooled}/billing-accounts/{first['id']}/subscriptions",
        {"product_quantities": {"users": 7, "locations": 2}},
    )
    assert trial.status_code == 201 and trial.json["status"] == "trialing"
    second = f"/workspaces/{pooled}/billing-accounts/{alice.account(pooled, name='Second')['id']}"
    assert alice.post(f"/sandbox{second}/payment-methods", {"payment_method": "pm_card_visa"}).status_code == 201
    assert alice.post(f"{second}/subscriptions", {"product_quantities": {"users": 3}}).status_code == 201
    assert alice.get(f"/workspaces/{pooled}").json["pooled_seat_limit"] == 10
    listed = {w["id"]: w["pooled_seat_limit"] for w in alice.get("/workspaces").json["data"]}
    assert listed == {pooled: 10, single: None}
    assert alice.patch(f"/workspaces/{pooled}", {"name": "Renamed"}).json["pooled_seat_limit"] == 10
    created = alice.post("/workspaces", {"name": "New", "billing_mode": "assigned"}).json
    assert list(created) == [
        "id",
        "name",
        "description",
        "billing_mode",
        "pooled_seat_limit",
        "archived",
        "created_at",
        "updated_at",
        "archived_at",
    ]  # API.md's Workspace shape, in order
    assert created["pooled_seat_limit"] is None
