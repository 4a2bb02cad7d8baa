"""Organizations: the tree, its bounds, billing accounts by mode, limits and usage."""

from __future__ import annotations

from typing import Any

import pytest

from billing.models import Organization, utcnow
from tests.helpers import assert_error, make_child, make_root, orgs


@pytest.fixture
def alice(as_user: Any) -> Any:
    return as_user("alice")


def stored(state: Any, org_id: str) -> Organization | None:
    with state.db.read() as session:
        return session.get(Organization, org_id)  # type: ignore[no-any-return]


# -- the shape and the tree ---------------------------------------------------------


def test_a_root_and_its_children_in_the_published_shape(alice: Any) -> None:
    ws = alice.workspace("assigned")
    account = alice.account(ws)["id"]
    root = make_root(alice, ws, billing_account_id=account, limits={"users": 5})
    assert root["id"].startswith("org_") and len(root["id"]) == 20
    assert root["workspace_id"] == ws and root["parent_org_id"] is None
    assert root["path"] == "" and root["depth"] == 0 and root["billing_account_id"] == account
    assert root["limits"] == {"locations": None, "users": 5, "sso": None}
    assert root["usage"] == {
        "usage": {"locations": 0, "users": 0, "sso": 0},
        "subtree_usage": {"locations": 0, "users": 0, "sso": 0},
    }
    assert len(root["external_id"]) == 36 and root["created_at"].endswith("Z")
    child = make_child(alice, ws, root["id"], name="Team")
    grandchild = make_child(alice, ws, child["id"], name="Squad")
    assert child["path"] == root["id"] and child["depth"] == 1
    assert grandchild["path"] == f"{root['id']}#{child['id']}" and grandchild["depth"] == 2
    # Children show their root's account.
    assert child["billing_account_id"] == grandchild["billing_account_id"] == account
    assert child["external_id"] != root["external_id"]
    assert alice.get(f"{orgs(ws)}/{grandchild['id']}").json == grandchild
    listed = alice.get(orgs(ws)).json
    assert listed["has_more"] is False
    assert [o["id"] for o in listed["data"]] == [root["id"], child["id"], grandchild["id"]]


def test_parent_and_descendants(alice: Any) -> None:
    ws = alice.workspace("pooled")
    root = make_root(alice, ws)
    a = make_child(alice, ws, root["id"], name="A")
    b = make_child(alice, ws, root["id"], name="B")
    a1 = make_child(alice, ws, a["id"], name="A1")
    a1x = make_child(alice, ws, a1["id"], name="A1x")
    b1 = make_child(alice, ws, b["id"], name="B1")
    root_parent = alice.get(f"{orgs(ws)}/{root['id']}/parent")
    assert root_parent.status_code == 204 and root_parent.get_data() == b""
    assert alice.get(f"{orgs(ws)}/{a1['id']}/parent").json["id"] == a["id"]
    names = [o["name"] for o in alice.get(f"{orgs(ws)}/{root['id']}/descendants").json["data"]]
    assert names == ["A", "A1", "A1x", "B", "B1"]  # depth-first, siblings in creation order
    assert [o["id"] for o in alice.get(f"{orgs(ws)}/{a['id']}/descendants").json["data"]] == [a1["id"], a1x["id"]]
    assert alice.get(f"{orgs(ws)}/{b1['id']}/descendants").json == {"data": []}


def test_update_name_and_limits_merge(alice: Any) -> None:
    ws = alice.workspace("pooled")
    root = make_root(alice, ws, limits={"users": 5, "sso": 1})
    path = f"{orgs(ws)}/{root['id']}"
    response = alice.patch(path, {"name": "Renamed", "limits": {"users": None, "locations": 0}})
    assert response.status_code == 200, response.json
    assert response.json["name"] == "Renamed"
    assert response.json["limits"] == {"locations": 0, "users": None, "sso": 1}  # null removes; others stay
    assert response.json["updated_at"] > root["updated_at"]
    assert alice.get(path).json["limits"] == {"locations": 0, "users": None, "sso": 1}


def test_delete_removes_the_subtree(alice: Any, state: Any) -> None:
    ws = alice.workspace("pooled")
    root = make_root(alice, ws)
    other = make_root(alice, ws, name="Other")
    child = make_child(alice, ws, root["id"])
    grandchild = make_child(alice, ws, child["id"])
    assert alice.delete(f"{orgs(ws)}/{child['id']}").status_code == 204
    assert stored(state, child["id"]) is None and stored(state, grandchild["id"]) is None
    assert_error(alice.get(f"{orgs(ws)}/{grandchild['id']}"), 404, "not_found")
    assert [o["id"] for o in alice.get(orgs(ws)).json["data"]] == [root["id"], other["id"]]


def test_names_with_like_wildcards_do_not_leak_into_other_subtrees(alice: Any, state: Any) -> None:
    """Descendants are found by path prefix; `_` in ids must not match any character."""
    ws = alice.workspace("pooled")
    root = make_root(alice, ws)
    child = make_child(alice, ws, root["id"])
    # A sibling root whose id differs from `root` only where `org_` has its underscore.
    twin_id = root["id"].replace("_", "X", 1)
    with state.db.write() as session:
        now = utcnow()
        session.add(
            Organization(
                id=twin_id,
                workspace_id=ws,
                parent_id=None,
                path="",
                depth=0,
                name="Twin",
                external_id="00000000-0000-4000-8000-000000000000",
                created_at=now,
                updated_at=now,
            )
        )
        session.add(
            Organization(
                id="orgXtwinchild00000",
                workspace_id=ws,
                parent_id=twin_id,
                path=twin_id,
                depth=1,
                name="Twin's child",
                external_id="00000000-0000-4000-8000-000000000001",
                created_at=now,
                updated_at=now,
            )
        )
        session.add(
            Organization(
                id="orgXtwingrandchild",
                workspace_id=ws,
                parent_id="orgXtwinchild00000",
                path=f"{twin_id}#orgXtwinchild00000",
                depth=2,
                name="Twin's grandchild",
                external_id="00000000-0000-4000-8000-000000000002",
                created_at=now,
                updated_at=now,
            )
        )
    assert [o["id"] for o in alice.get(f"{orgs(ws)}/{root['id']}/descendants").json["data"]] == [child["id"]]
    assert alice.delete(f"{orgs(ws)}/{root['id']}").status_code == 204
    assert stored(state, "orgXtwingrandchild") is not None


# -- billing accounts by mode ----------------------------------------------------------


@pytest.mark.parametrize("mode", ["single", "assigned"])
def test_a_root_needs_an_account_of_this_workspace(alice: Any, as_user: Any, state: Any, mode: str) -> None:
    ws = alice.workspace(mode)
    bob = as_user("bob")
    bobs = bob.account(bob.workspace(mode))["id"]
    for body, field in [
        ({}, "billing_account_id"),
        ({"billing_account_id": None}, "billing_account_id"),
        ({"billing_account_id": bobs}, "billing_account_id"),
        ({"billing_account_id": "cus_nope"}, "billing_account_id"),
    ]:
        error = assert_error(alice.post(orgs(ws), {"name": "Root", **body}), 422, "validation_failed")
        assert field in error["errors"]
    assert alice.get(orgs(ws)).json["data"] == []
    mine = alice.account(ws)["id"]
    assert make_root(alice, ws, billing_account_id=mine)["billing_account_id"] == mine


def test_pooled_roots_have_no_account(alice: Any) -> None:
    ws = alice.workspace("pooled")
    account = alice.account(ws)["id"]
    error = assert_error(
        alice.post(orgs(ws), {"name": "Root", "billing_account_id": account}), 422, "validation_failed"
    )
    assert "billing_account_id" in error["errors"]
    root = make_root(alice, ws, billing_account_id=None)
    assert root["billing_account_id"] is None
    assert_error(alice.patch(f"{orgs(ws)}/{root['id']}", {"billing_account_id": account}), 422, "validation_failed")


def test_children_take_no_account(alice: Any) -> None:
    ws = alice.workspace("single")
    account = alice.account(ws)["id"]
    root = make_root(alice, ws, billing_account_id=account)
    assert_error(
        alice.post(f"{orgs(ws)}/{root['id']}/children", {"name": "Kid", "billing_account_id": account}),
        422,
        "validation_failed",
    )
    child = make_child(alice, ws, root["id"])
    assert_error(alice.patch(f"{orgs(ws)}/{child['id']}", {"billing_account_id": account}), 422, "validation_failed")
    assert len(alice.get(orgs(ws)).json["data"]) == 2


def test_reassigning_a_root_moves_its_subtree(alice: Any) -> None:
    ws = alice.workspace("assigned")
    first, second = alice.account(ws)["id"], alice.account(ws, name="Second")["id"]
    root = make_root(alice, ws, billing_account_id=first)
    child = make_child(alice, ws, root["id"])
    response = alice.patch(f"{orgs(ws)}/{root['id']}", {"billing_account_id": second})
    assert response.status_code == 200, response.json
    assert response.json["billing_account_id"] == second
    assert alice.get(f"{orgs(ws)}/{child['id']}").json["billing_account_id"] == second


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 51},
        {"name": "A", "limits": {"seats": 1}},
        {"name": "A", "limits": {"users": -1}},
        {"name": "A", "limits": {"users": "5"}},
        {"name": "A", "limits": {"users": 1.5}},
        {"name": "A", "parent_org_id": "org_x"},
    ],
)
def test_bad_organization_bodies_are_422_and_create_nothing(alice: Any, body: dict[str, Any]) -> None:
    ws = alice.workspace("pooled")
    assert_error(alice.post(orgs(ws), body), 422, "validation_failed")
    assert alice.get(orgs(ws)).json["data"] == []


# -- bounds ----------------------------------------------------------------------------


def test_depth_is_at_most_nine(alice: Any) -> None:
    ws = alice.workspace("pooled")
    node = make_root(alice, ws)
    for _ in range(9):
        node = make_child(alice, ws, node["id"])
    assert node["depth"] == 9
    assert_error(
        alice.post(f"{orgs(ws)}/{node['id']}/children", {"name": "Too deep"}), 409, "organization_limit_reached"
    )
    assert len(alice.get(orgs(ws)).json["data"]) == 10


def _insert_children(state: Any, ws: str, parent: dict[str, Any] | None, count: int) -> None:
    now = utcnow()
    with state.db.write() as session:
        for i in range(count):
            session.add(
                Organization(
                    workspace_id=ws,
                    parent_id=parent["id"] if parent else None,
                    path=parent["id"] if parent else "",
                    depth=1 if parent else 0,
                    name=f"Bulk {i}",
                    external_id=f"00000000-0000-4000-8000-{i:012d}",
                    created_at=now,
                    updated_at=now,
                )
            )


def test_at_most_one_hundred_children(alice: Any, state: Any) -> None:
    ws = alice.workspace("pooled")
    root = make_root(alice, ws)
    _insert_children(state, ws, root, 99)
    make_child(alice, ws, root["id"])
    assert_error(alice.post(f"{orgs(ws)}/{root['id']}/children", {"name": "101st"}), 409, "organization_limit_reached")
    assert len(alice.get(f"{orgs(ws)}/{root['id']}/descendants").json["data"]) == 100


def test_at_most_one_thousand_per_workspace(alice: Any, state: Any) -> None:
    ws = alice.workspace("pooled")
    _insert_children(state, ws, None, 999)
    make_root(alice, ws, name="The thousandth")
    assert_error(alice.post(orgs(ws), {"name": "One too many"}), 409, "organization_limit_reached")
    root = alice.get(orgs(ws)).json["data"][0]
    assert_error(
        alice.post(f"{orgs(ws)}/{root['id']}/children", {"name": "Nor a child"}), 409, "organization_limit_reached"
    )
    assert len(alice.get(orgs(ws)).json["data"]) == 1000


# -- roles and archive ---------------------------------------------------------------


def test_viewers_read_admins_write(alice: Any, as_user: Any) -> None:
    ws = alice.workspace("pooled")
    alice.add_member(ws, "vera", "viewer")
    alice.add_member(ws, "adam", "admin")
    vera, adam = as_user("vera"), as_user("adam")
    root = make_root(adam, ws)
    path = f"{orgs(ws)}/{root['id']}"
    for response in (
        vera.get(orgs(ws)),
        vera.get(path),
        vera.get(f"{path}/descendants"),
        vera.get(f"{path}/limits"),
        vera.get(f"/workspaces/{ws}/capacity"),
    ):
        assert response.status_code == 200, response.json
    assert vera.get(f"{path}/parent").status_code == 204
    for response in (
        vera.post(orgs(ws), {"name": "No"}),
        vera.post(f"{path}/children", {"name": "No"}),
        vera.patch(path, {"name": "No"}),
        vera.delete(path),
        vera.post(f"{path}/usage", {"product": "users", "delta": -1}),
    ):
        assert_error(response, 403, "permission_denied")
    assert alice.get(path).json["name"] == "Root"
    assert adam.delete(path).status_code == 204


def test_archived_workspace_reads_but_refuses_writes(alice: Any) -> None:
    ws = alice.workspace("pooled")
    root = make_root(alice, ws)
    assert alice.delete(f"/workspaces/{ws}").status_code == 204
    path = f"{orgs(ws)}/{root['id']}"
    assert alice.get(path).status_code == 200
    for response in (
        alice.post(orgs(ws), {"name": "No"}),
        alice.post(f"{path}/children", {"name": "No"}),
        alice.patch(path, {"name": "No"}),
        alice.delete(path),
        alice.post(f"{path}/usage", {"product": "users", "delta": -1}),
    ):
        assert_error(response, 409, "workspace_archived")
    assert alice.get(path).json["name"] == "Root"


def test_an_empty_update_is_422(alice: Any) -> None:
    ws = alice.workspace("pooled")
    root = make_root(alice, ws)
    assert_error(alice.patch(f"{orgs(ws)}/{root['id']}", {}), 422, "validation_failed")
    assert alice.get(f"{orgs(ws)}/{root['id']}").json["updated_at"] == root["updated_at"]


def test_the_document_says_what_a_usage_report_and_limits_accept(client: Any) -> None:
    schemas = client.get("/openapi.json").json["components"]["schemas"]
    delta = schemas["UsageReport"]["properties"]["delta"]
    assert delta["not"] == {"enum": [0]} and delta["minimum"] == -delta["maximum"]
    assert schemas["UsageReport"]["properties"]["product"]["enum"] == ["locations", "users", "sso"]
    limits = schemas["LimitsMap"]
    assert set(limits["properties"]) == {"locations", "users", "sso"} and limits["additionalProperties"] is False
    assert limits["properties"]["users"]["minimum"] == 0 and limits["properties"]["users"]["nullable"] is True
