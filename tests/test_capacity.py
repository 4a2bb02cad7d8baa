"""Capacity in the three billing modes: usage reports, the limits read, the
capacity read, and the guards that keep subscriptions above usage."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, text, update

from billing.models import CapacityHold, Organization, utcnow
from billing.organizations import capacity, routes
from billing.organizations.capacity import holding, lock_workspace
from billing.tokens import mint_token
from tests.helpers import Api, account_path, assert_error, make_child, make_root, orgs, subscribe_with_card


@pytest.fixture
def alice(as_user: Any) -> Any:
    return as_user("alice")


def two_accounts(api: Any, ws: str, first: dict[str, int], second: dict[str, int]) -> tuple[str, str, dict[str, Any]]:
    """Two accounts, each subscribed to its quantities: (first, second, the first's subscription)."""
    first_id, second_id = api.account(ws)["id"], api.account(ws, name="Second")["id"]
    subscription = subscribe_with_card(api, ws, first_id, first)
    subscribe_with_card(api, ws, second_id, second)
    return first_id, second_id, subscription


def report(api: Any, ws: str, org: str, product: str, delta: int, **kw: Any) -> Any:
    return api.post(f"{orgs(ws)}/{org}/usage", {"product": product, "delta": delta}, **kw)


def limits(api: Any, ws: str, org: str) -> dict[str, Any]:
    response = api.get(f"{orgs(ws)}/{org}/limits")
    assert response.status_code == 200, response.json
    return dict(response.json)


def entry(api: Any, ws: str, org: str, product: str) -> dict[str, Any]:
    return next(e for e in limits(api, ws, org)["limits"] if e["type"] == product)


def pools(api: Any, ws: str) -> list[dict[str, Any]]:
    response = api.get(f"/workspaces/{ws}/capacity")
    assert response.status_code == 200, response.json
    return list(response.json["pools"])


def root_in(api: Any, ws: str, mode: str, account: str, **body: Any) -> dict[str, Any]:
    """A root organization drawing on `account` (in pooled mode: on the workspace's pool)."""
    return make_root(api, ws, **({} if mode == "pooled" else {"billing_account_id": account}), **body)


MODES = ["single", "assigned", "pooled"]


def usage_of(api: Any, ws: str, org: str) -> dict[str, Any]:
    return dict(api.get(f"{orgs(ws)}/{org}").json["usage"])


# -- the three modes -----------------------------------------------------------------


def test_single_one_account_funds_every_organization(alice: Any) -> None:
    ws = alice.workspace("single", name="Solo")
    account = alice.account(ws, name="Solo Billing")["id"]
    subscribe_with_card(alice, ws, account, {"users": 3, "locations": 1})
    first, second = make_root(alice, ws, billing_account_id=account), make_root(alice, ws, billing_account_id=account)
    assert report(alice, ws, first["id"], "users", 2).json == {
        "type": "users",
        "used": 2,
        "direct": 2,
        "free": 1,
        "org_limit": None,
        "total": 3,
    }
    assert_error(report(alice, ws, second["id"], "users", 2), 409, "capacity_exceeded")
    assert report(alice, ws, second["id"], "users", 1).status_code == 200
    assert pools(alice, ws) == [
        {
            "billing_account_id": None,
            "products": {
                "locations": {"capacity": 1, "used": 0, "free": 1},
                "users": {"capacity": 3, "used": 3, "free": 0},
                "sso": {"capacity": 0, "used": 0, "free": 0},
            },
        }
    ]
    read = limits(alice, ws, second["id"])
    assert read["organization_id"] == second["id"] and read["organization_name"] == "Root"
    assert [e["type"] for e in read["limits"]] == ["locations", "users", "sso"]
    assert read["context"] == {"type": "billing_account", "name": "Solo Billing"}


def test_pooled_every_account_feeds_one_pool(alice: Any) -> None:
    ws = alice.workspace("pooled", name="Pool party")
    two_accounts(alice, ws, {"users": 3}, {"users": 2, "sso": 1})
    root = make_root(alice, ws)
    assert report(alice, ws, root["id"], "users", 5).json["free"] == 0
    error = assert_error(report(alice, ws, root["id"], "users", 1), 409, "capacity_exceeded")
    assert "users" in error["message"] and "requested 1" in error["message"] and "free 0" in error["message"]
    assert pools(alice, ws) == [
        {
            "billing_account_id": None,
            "products": {
                "locations": {"capacity": 0, "used": 0, "free": 0},
                "users": {"capacity": 5, "used": 5, "free": 0},
                "sso": {"capacity": 1, "used": 0, "free": 1},
            },
        }
    ]
    assert limits(alice, ws, root["id"])["context"] == {"type": "workspace", "name": "Pool party"}


def test_assigned_each_root_draws_on_its_own_account(alice: Any) -> None:
    ws = alice.workspace("assigned")
    first, second, _ = two_accounts(alice, ws, {"users": 3}, {"users": 2})
    on_first = make_root(alice, ws, billing_account_id=first)
    on_second = make_root(alice, ws, billing_account_id=second)
    child = make_child(alice, ws, on_second["id"])
    assert_error(report(alice, ws, child["id"], "users", 3), 409, "capacity_exceeded")
    assert report(alice, ws, child["id"], "users", 2).status_code == 200
    assert report(alice, ws, on_first["id"], "users", 3).status_code == 200
    assert pools(alice, ws) == [
        {
            "billing_account_id": first,
            "products": {
                "locations": {"capacity": 0, "used": 0, "free": 0},
                "users": {"capacity": 3, "used": 3, "free": 0},
                "sso": {"capacity": 0, "used": 0, "free": 0},
            },
        },
        {
            "billing_account_id": second,
            "products": {
                "locations": {"capacity": 0, "used": 0, "free": 0},
                "users": {"capacity": 2, "used": 2, "free": 0},
                "sso": {"capacity": 0, "used": 0, "free": 0},
            },
        },
    ]
    assert limits(alice, ws, child["id"])["context"] == {"type": "billing_account", "name": "Second"}


@pytest.mark.parametrize("mode", ["single", "pooled", "assigned"])
def test_capacity_lists_all_three_products_with_nothing_provided(alice: Any, mode: str) -> None:
    ws = alice.workspace(mode)
    account = alice.account(ws)["id"]
    nothing = {p: {"capacity": 0, "used": 0, "free": 0} for p in ("locations", "users", "sso")}
    expected = account if mode == "assigned" else None
    assert pools(alice, ws) == [{"billing_account_id": expected, "products": nothing}]


# -- limits on the path, and what the read says ------------------------------------------


def test_limits_inherit_downward_and_the_tightest_wins(alice: Any) -> None:
    ws = alice.workspace("pooled")
    subscribe_with_card(alice, ws, alice.account(ws)["id"], {"users": 10, "sso": 5, "locations": 5})
    root = make_root(alice, ws, name="HQ", limits={"users": 6})
    team = make_child(alice, ws, root["id"], name="Team", limits={"users": 4})
    squad = make_child(alice, ws, team["id"], name="Squad")
    other = make_child(alice, ws, root["id"], name="Other")
    assert report(alice, ws, other["id"], "users", 1).status_code == 200
    # Squad: the pool has 9, HQ 5, Team 4 -> Team binds.
    assert entry(alice, ws, squad["id"], "users") == {
        "type": "users",
        "used": 0,
        "direct": 0,
        "free": 4,
        "org_limit": 4,
        "total": 4,
    }
    # The context names what binds the product with the least free (users, here).
    assert limits(alice, ws, squad["id"])["context"] == {"type": "parent", "name": "Team"}
    assert_error(report(alice, ws, squad["id"], "users", 5), 409, "capacity_exceeded")
    assert report(alice, ws, squad["id"], "users", 3).status_code == 200
    # Team's own read: used is its subtree's, direct its own; its own limit binds.
    assert report(alice, ws, team["id"], "users", 1).json == {
        "type": "users",
        "used": 4,
        "direct": 1,
        "free": 0,
        "org_limit": 4,
        "total": 4,
    }
    assert limits(alice, ws, team["id"])["context"] == {"type": "organization", "name": "Team"}
    # HQ: 6 - 5 used = 1.
    assert entry(alice, ws, root["id"], "users") == {
        "type": "users",
        "used": 5,
        "direct": 0,
        "free": 1,
        "org_limit": 6,
        "total": 6,
    }
    assert usage_of(alice, ws, root["id"]) == {
        "usage": {"locations": 0, "users": 0, "sso": 0},
        "subtree_usage": {"locations": 0, "users": 5, "sso": 0},
    }
    assert usage_of(alice, ws, squad["id"])["usage"]["users"] == 3


def test_zero_disables_and_a_limit_below_usage_only_refuses_increases(alice: Any) -> None:
    ws = alice.workspace("pooled")
    subscribe_with_card(alice, ws, alice.account(ws)["id"], {"users": 10, "sso": 2})
    root = make_root(alice, ws, limits={"sso": 0})
    assert entry(alice, ws, root["id"], "sso")["free"] == 0
    assert_error(report(alice, ws, root["id"], "sso", 1), 409, "capacity_exceeded")
    assert report(alice, ws, root["id"], "users", 5).status_code == 200
    response = alice.patch(f"{orgs(ws)}/{root['id']}", {"limits": {"users": 2}})
    assert response.status_code == 200 and response.json["usage"]["usage"]["users"] == 5
    assert entry(alice, ws, root["id"], "users") == {
        "type": "users",
        "used": 5,
        "direct": 5,
        "free": 0,
        "org_limit": 2,
        "total": 5,
    }
    assert_error(report(alice, ws, root["id"], "users", 1), 409, "capacity_exceeded")
    assert report(alice, ws, root["id"], "users", -4).json["used"] == 1
    assert report(alice, ws, root["id"], "users", 1).json["free"] == 0


def test_a_release_never_goes_below_zero(alice: Any) -> None:
    ws = alice.workspace("pooled")
    subscribe_with_card(alice, ws, alice.account(ws)["id"], {"users": 10})
    root = make_root(alice, ws)
    child = make_child(alice, ws, root["id"])
    report(alice, ws, root["id"], "users", 2)
    report(alice, ws, child["id"], "users", 3)
    assert report(alice, ws, child["id"], "users", -7).json == {
        "type": "users",
        "used": 0,
        "direct": 0,
        "free": 8,
        "org_limit": None,
        "total": 8,
    }
    assert usage_of(alice, ws, root["id"])["subtree_usage"]["users"] == 2  # the root's own usage stays


@pytest.mark.parametrize(
    "body",
    [
        {"product": "users", "delta": 0},
        {"product": "seats", "delta": 1},
        {"product": "users"},
        {"delta": 1},
        {"product": "users", "delta": "1"},
        {"product": "users", "delta": 1.5},
        {"product": "users", "delta": 10**9},
        {"product": "users", "delta": 1, "org": "x"},
    ],
)
def test_bad_usage_reports_are_422_and_change_nothing(alice: Any, body: dict[str, Any]) -> None:
    ws = alice.workspace("pooled")
    subscribe_with_card(alice, ws, alice.account(ws)["id"], {"users": 10})
    root = make_root(alice, ws)
    assert_error(alice.post(f"{orgs(ws)}/{root['id']}/usage", body), 422, "validation_failed")
    assert usage_of(alice, ws, root["id"])["usage"] == {"locations": 0, "users": 0, "sso": 0}


# -- capacity that falls without our API -------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_trial_that_pauses_keeps_usage_and_refuses_increases(alice: Any, mode: str) -> None:
    ws = alice.workspace(mode)
    account = alice.account(ws)["id"]
    acc = account_path(ws, account)
    sub = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 3}}).json  # a trial, no card
    assert sub["status"] == "trialing"
    root = root_in(alice, ws, mode, account)
    assert report(alice, ws, root["id"], "users", 2).status_code == 200
    alice.advance_clock({"days": 15})
    assert alice.get(f"{acc}/subscriptions/{sub['id']}").json["status"] == "paused"
    assert entry(alice, ws, root["id"], "users") == {
        "type": "users",
        "used": 2,
        "direct": 2,
        "free": 0,
        "org_limit": None,
        "total": 2,
    }
    assert pools(alice, ws)[0]["products"]["users"] == {"capacity": 0, "used": 2, "free": 0}
    assert_error(report(alice, ws, root["id"], "users", 1), 409, "capacity_exceeded")
    assert report(alice, ws, root["id"], "users", -1).json["used"] == 1  # releasing still works


@pytest.mark.parametrize("mode", MODES)
def test_a_subscription_that_ends_elsewhere_leaves_usage(alice: Any, state: Any, mode: str) -> None:
    ws = alice.workspace(mode)
    account = alice.account(ws)["id"]
    sub = subscribe_with_card(alice, ws, account, {"users": 3})
    root = root_in(alice, ws, mode, account)
    report(alice, ws, root["id"], "users", 3)
    state.gateway.client.v1.subscriptions.cancel(sub["id"])  # e.g. from the Dashboard; the webhook tells us
    assert pools(alice, ws)[0]["products"]["users"] == {"capacity": 0, "used": 3, "free": 0}
    assert_error(report(alice, ws, root["id"], "users", 1), 409, "capacity_exceeded")
    # Archiving: no active subscription, but organizations still use capacity.
    assert_error(alice.delete(f"/workspaces/{ws}"), 409, "workspace_not_empty")
    assert alice.get(f"/workspaces/{ws}").json["archived"] is False
    report(alice, ws, root["id"], "users", -3)
    assert alice.delete(f"/workspaces/{ws}").status_code == 204


def test_an_account_deleted_elsewhere_leaves_its_pool_in_use(alice: Any, state: Any) -> None:
    """Assigned mode: a customer deleted in the Dashboard (its subscriptions end
    with it) leaves its roots' usage; the capacity read still shows that pool."""
    ws = alice.workspace("assigned")
    gone, kept = alice.account(ws, name="Gone")["id"], alice.account(ws, name="Kept")["id"]
    subscribe_with_card(alice, ws, gone, {"users": 3})
    subscribe_with_card(alice, ws, kept, {"users": 1})
    root = root_in(alice, ws, "assigned", gone)
    report(alice, ws, root["id"], "users", 2)
    state.gateway.client.v1.customers.delete(gone)  # the webhook removes the account
    assert [a["id"] for a in alice.get(f"/workspaces/{ws}/billing-accounts").json["data"]] == [kept]
    assert [(p["billing_account_id"], p["products"]["users"]) for p in pools(alice, ws)] == [
        (kept, {"capacity": 1, "used": 0, "free": 1}),
        (gone, {"capacity": 0, "used": 2, "free": 0}),
    ]
    assert entry(alice, ws, root["id"], "users")["free"] == 0
    assert_error(report(alice, ws, root["id"], "users", 1), 409, "capacity_exceeded")


# -- guards ----------------------------------------------------------------------------


def _quantity(api: Any, ws: str, account: str, sub: str, product: str) -> int | None:
    found = api.get(f"{account_path(ws, account)}/subscriptions/{sub}").json["product_quantities"].get(product)
    return None if found is None else int(found["quantity"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "change",
    [
        {"product_quantities": {"users": 2, "sso": 1}},
        {"remove_products": ["users"]},
        {"product_quantities": {"sso": 1}},
    ],
)
def test_lowering_below_usage_is_would_underprovision(
    alice: Any, state: Any, change: dict[str, Any], mode: str
) -> None:
    ws = alice.workspace(mode)
    account = alice.account(ws)["id"]
    sub = subscribe_with_card(alice, ws, account, {"users": 5, "sso": 1})
    root = root_in(alice, ws, mode, account)
    report(alice, ws, root["id"], "users", 3)
    error = assert_error(
        alice.patch(f"{account_path(ws, account)}/subscriptions/{sub['id']}", change), 409, "would_underprovision"
    )
    assert "users" in error["message"] and "3" in error["message"]
    assert state.gateway.client.v1.subscriptions.retrieve(sub["id"])["items"].data[0].quantity == 5
    assert _quantity(alice, ws, account, sub["id"], "users") == 5
    # Down to exactly the usage is fine.
    assert (
        alice.patch(
            f"{account_path(ws, account)}/subscriptions/{sub['id']}", {"product_quantities": {"users": 3, "sso": 1}}
        ).status_code
        == 200
    )
    assert _quantity(alice, ws, account, sub["id"], "users") == 3


def two_subscriptions_in_use(alice: Any, users: int) -> tuple[str, dict[str, Any], str, str]:
    """A pooled workspace fed 5 users by its first account and 2 by a second,
    `users` of them in use by a root: (ws, root, first subscription's id, its path)."""
    ws = alice.workspace("pooled")
    first, _, sub = two_accounts(alice, ws, {"users": 5}, {"users": 2})
    root = make_root(alice, ws)
    report(alice, ws, root["id"], "users", users)
    return ws, root, sub["id"], f"{account_path(ws, first)}/subscriptions/{sub['id']}"


def test_another_subscription_can_cover_a_decrease(alice: Any) -> None:
    path = two_subscriptions_in_use(alice, 6)[3]
    assert alice.patch(path, {"product_quantities": {"users": 4}}).status_code == 200
    assert_error(alice.patch(path, {"product_quantities": {"users": 3}}), 409, "would_underprovision")


def test_in_assigned_mode_only_the_accounts_own_pool_counts(alice: Any) -> None:
    ws = alice.workspace("assigned")
    first, second, sub = two_accounts(alice, ws, {"users": 5}, {"users": 5})
    on_second = make_root(alice, ws, billing_account_id=second)
    report(alice, ws, on_second["id"], "users", 5)
    # Usage drawn on the second account doesn't hold the first one's subscription.
    assert (
        alice.patch(
            f"{account_path(ws, first)}/subscriptions/{sub['id']}", {"product_quantities": {"users": 1}}
        ).status_code
        == 200
    )


def test_a_change_that_does_not_lower_a_short_product_is_allowed(alice: Any, state: Any) -> None:
    """A pool already below usage (capacity fell elsewhere) doesn't block a
    change that doesn't lower that product further."""
    ws = alice.workspace("pooled")
    account = alice.account(ws)["id"]
    first = subscribe_with_card(alice, ws, account, {"users": 3})
    second = subscribe_with_card(alice, ws, account, {"locations": 2, "users": 1})
    root = make_root(alice, ws)
    report(alice, ws, root["id"], "users", 4)
    state.gateway.client.v1.subscriptions.cancel(first["id"])  # users fall to 1 without our API
    path = f"{account_path(ws, account)}/subscriptions/{second['id']}"
    assert alice.patch(path, {"product_quantities": {"locations": 1, "users": 1}}).status_code == 200
    assert_error(alice.patch(path, {"product_quantities": {"locations": 1}}), 409, "would_underprovision")


@pytest.mark.parametrize("mode", MODES)
def test_pausing_below_usage_is_refused(alice: Any, mode: str) -> None:
    ws = alice.workspace(mode)
    account = alice.account(ws)["id"]
    sub = subscribe_with_card(alice, ws, account, {"users": 3})
    root = root_in(alice, ws, mode, account)
    report(alice, ws, root["id"], "users", 1)
    path = f"{account_path(ws, account)}/subscriptions/{sub['id']}"
    assert_error(alice.patch(path, {"action": "pause"}), 409, "would_underprovision")
    assert alice.get(path).json["status"] in ("trialing", "active")
    report(alice, ws, root["id"], "users", -1)
    assert alice.patch(path, {"action": "pause"}).json["status"] == "paused"
    assert pools(alice, ws)[0]["products"]["users"]["capacity"] == 0


@pytest.mark.parametrize("mode", MODES)
def test_cancelling_the_only_subscription_below_usage_is_refused(alice: Any, state: Any, mode: str) -> None:
    ws = alice.workspace(mode)
    account = alice.account(ws)["id"]
    sub = subscribe_with_card(alice, ws, account, {"users": 2, "sso": 1})
    root = root_in(alice, ws, mode, account)
    report(alice, ws, root["id"], "sso", 1)
    path = f"{account_path(ws, account)}/subscriptions/{sub['id']}"
    error = assert_error(alice.delete(path), 409, "cancellation_would_underprovision")
    assert error["message"] == "Cancelling would leave 0 sso for 1 in use."
    assert alice.get(path).json["cancel_at_period_end"] is False
    report(alice, ws, root["id"], "sso", -1)
    assert alice.delete(path).json["cancel_at_period_end"] is True


def test_cancelling_below_usage_names_product_usage_and_capacity_left(alice: Any, state: Any) -> None:
    ws, root, sub_id, path = two_subscriptions_in_use(alice, 4)
    error = assert_error(alice.delete(path), 409, "cancellation_would_underprovision")
    assert error["message"] == "Cancelling would leave 2 users for 4 in use."
    assert state.gateway.client.v1.subscriptions.retrieve(sub_id).cancel_at_period_end is False
    report(alice, ws, root["id"], "users", -2)
    assert alice.delete(path).json["cancel_at_period_end"] is True
    # Scheduled to cancel, it still provides until it ends.
    assert pools(alice, ws)[0]["products"]["users"]["capacity"] == 7


@pytest.mark.parametrize("mode", MODES)
def test_deleting_an_organization_with_usage_is_refused(alice: Any, state: Any, mode: str) -> None:
    ws = alice.workspace(mode)
    account = alice.account(ws)["id"]
    subscribe_with_card(alice, ws, account, {"users": 5})
    root = root_in(alice, ws, mode, account)
    child = make_child(alice, ws, root["id"])
    grandchild = make_child(alice, ws, child["id"])
    report(alice, ws, grandchild["id"], "users", 1)
    for org in (root, child, grandchild):
        assert_error(alice.delete(f"{orgs(ws)}/{org['id']}"), 409, "organization_has_usage")
    assert len(alice.get(orgs(ws)).json["data"]) == 3
    report(alice, ws, grandchild["id"], "users", -1)
    assert alice.delete(f"{orgs(ws)}/{root['id']}").status_code == 204


@pytest.mark.parametrize("mode", ["single", "assigned"])
def test_an_account_a_root_is_assigned_to_cannot_be_deleted(alice: Any, state: Any, mode: str) -> None:
    ws = alice.workspace(mode)
    account = alice.account(ws)["id"]
    subscribe_with_card(alice, ws, account, {"users": 1})
    root = make_root(alice, ws, billing_account_id=account)
    child = make_child(alice, ws, root["id"])
    # Checked before the active-subscription guard.
    assert_error(alice.delete(account_path(ws, account)), 409, "billing_account_in_use")
    assert alice.get(account_path(ws, account)).status_code == 200
    assert not getattr(state.gateway.client.v1.customers.retrieve(account), "deleted", None)
    assert alice.get(f"{orgs(ws)}/{child['id']}").json["billing_account_id"] == account
    assert alice.delete(f"{orgs(ws)}/{root['id']}").status_code == 204
    assert_error(alice.delete(account_path(ws, account)), 422, "active_subscriptions_exist")


def test_in_pooled_mode_organizations_hold_no_account(alice: Any, state: Any) -> None:
    """Pooled roots name no account, so none stops an account's deletion."""
    ws = alice.workspace("pooled")
    account, spare = alice.account(ws)["id"], alice.account(ws, name="Spare")["id"]
    subscribe_with_card(alice, ws, account, {"users": 2})
    root = make_root(alice, ws)
    report(alice, ws, root["id"], "users", 2)
    assert alice.delete(account_path(ws, spare)).status_code == 204
    assert entry(alice, ws, root["id"], "users")["used"] == 2


def test_reassigning_a_root_needs_room_in_the_new_pool(alice: Any) -> None:
    ws = alice.workspace("assigned")
    first, second, _ = two_accounts(alice, ws, {"users": 5}, {"users": 3})
    root = make_root(alice, ws, billing_account_id=first)
    child = make_child(alice, ws, root["id"])
    already = make_root(alice, ws, billing_account_id=second)
    report(alice, ws, child["id"], "users", 2)
    report(alice, ws, already["id"], "users", 2)
    error = assert_error(
        alice.patch(f"{orgs(ws)}/{root['id']}", {"billing_account_id": second}), 409, "capacity_exceeded"
    )
    assert "users" in error["message"]
    assert alice.get(f"{orgs(ws)}/{child['id']}").json["billing_account_id"] == first
    report(alice, ws, already["id"], "users", -1)
    assert alice.patch(f"{orgs(ws)}/{root['id']}", {"billing_account_id": second}).status_code == 200
    by_account = {p["billing_account_id"]: p["products"]["users"] for p in pools(alice, ws)}
    assert by_account == {first: {"capacity": 5, "used": 0, "free": 5}, second: {"capacity": 3, "used": 3, "free": 0}}


def test_a_usage_report_sees_a_decrease_in_flight(app: Any, alice: Any, state: Any) -> None:
    """While a decrease is being sent to Stripe, its hold already counts: a
    report that fits only the old capacity is refused."""
    ws = alice.workspace("pooled")
    account = alice.account(ws)["id"]
    sub = subscribe_with_card(alice, ws, account, {"users": 5})
    root = make_root(alice, ws)
    with app.app_context(), holding(state, ws, account, sub["id"], {"users": 2}, cancelling=False):
        assert entry(alice, ws, root["id"], "users")["free"] == 2
        assert_error(report(alice, ws, root["id"], "users", 3), 409, "capacity_exceeded")
    assert report(alice, ws, root["id"], "users", 3).status_code == 200


def test_a_capacity_known_from_an_earlier_report_is_not_used_once_a_hold_lowers_it(
    app: Any, alice: Any, state: Any
) -> None:
    """A process keeps the capacity its last report read (PostgreSQL): the next report checks,
    under the lock, that what it was computed from is unchanged; a hold placed since is not."""
    ws = alice.workspace("pooled")
    account = alice.account(ws)["id"]
    sub = subscribe_with_card(alice, ws, account, {"users": 5})
    root = make_root(alice, ws)
    assert report(alice, ws, root["id"], "users", 1).json["free"] == 4
    with app.app_context(), holding(state, ws, account, sub["id"], {"users": 2}, cancelling=False):
        error = assert_error(report(alice, ws, root["id"], "users", 3), 409, "capacity_exceeded")
        assert error["message"] == "Not enough users capacity: requested 3, free 1."
        assert report(alice, ws, root["id"], "users", 1).json["free"] == 0
    assert report(alice, ws, root["id"], "users", 3).json["free"] == 0
    assert usage_of(alice, ws, root["id"])["usage"]["users"] == 5


# -- callers: service tokens, idempotency ------------------------------------------------


def test_a_service_token_reports_and_reads_in_any_workspace(alice: Any, client: Any, config: Any) -> None:
    ws = alice.workspace("pooled")
    subscribe_with_card(alice, ws, alice.account(ws)["id"], {"users": 4})
    root = make_root(alice, ws)
    service = Api(
        client, {"Authorization": f"Bearer {mint_token(config, 'svc-inventory', scope='read billing:usage')}"}
    )
    assert report(service, ws, root["id"], "users", 2).json["used"] == 2
    assert entry(service, ws, root["id"], "users")["free"] == 2
    assert pools(service, ws)[0]["products"]["users"]["used"] == 2
    # Nothing else: the token is not a member.
    for response in (
        service.get(f"{orgs(ws)}/{root['id']}"),
        service.get(orgs(ws)),
        service.post(orgs(ws), {"name": "No"}),
        service.patch(f"{orgs(ws)}/{root['id']}", {"name": "N"}),
        service.get(f"/workspaces/{ws}"),
    ):
        assert_error(response, 404, "not_found")
    # Scope is space-separated words: a look-alike is not the scope.
    other = Api(client, {"Authorization": f"Bearer {mint_token(config, 'svc-x', scope='billing:usage:read')}"})
    assert_error(report(other, ws, root["id"], "users", 1), 404, "not_found")
    assert_error(other.get(f"/workspaces/{ws}/capacity"), 404, "not_found")
    assert usage_of(alice, ws, root["id"])["usage"]["users"] == 2
    # Another workspace's organization under this workspace is still 404.
    ws2 = alice.workspace("pooled", name="Other")
    assert_error(report(service, ws2, root["id"], "users", 1), 404, "not_found")
    assert_error(report(service, "ws_doesnotexist0000", root["id"], "users", 1), 404, "not_found")
    # The limits read takes the organization with the access, in one query: the same 404s.
    assert_error(service.get(f"{orgs(ws2)}/{root['id']}/limits"), 404, "not_found")
    assert_error(service.get(f"{orgs('ws_doesnotexist0000')}/{root['id']}/limits"), 404, "not_found")
    assert_error(other.get(f"{orgs(ws)}/{root['id']}/limits"), 404, "not_found")


def service_api(client: Any, config: Any) -> Api:
    return Api(client, {"Authorization": f"Bearer {mint_token(config, 'svc-inventory', scope='billing:usage')}"})


def test_a_service_tokens_known_organization_is_checked_again_each_report(alice: Any, client: Any, config: Any) -> None:
    """A process keeps the organizations its service tokens reported on and skips their access
    check next time (PostgreSQL): each report still sees the pool the organization draws on now,
    an organization deleted, a workspace archived since."""
    ws = alice.workspace("assigned")
    big, small, _ = two_accounts(alice, ws, {"users": 50}, {"users": 5})
    root = make_root(alice, ws, billing_account_id=big)
    child = make_child(alice, ws, root["id"])
    service = service_api(client, config)
    assert report(service, ws, child["id"], "users", 1).json["free"] == 49
    assert alice.patch(f"{orgs(ws)}/{root['id']}", {"billing_account_id": small}).status_code == 200
    assert report(service, ws, child["id"], "users", 3).json["free"] == 1  # the small pool's
    assert_error(report(service, ws, child["id"], "users", 2), 409, "capacity_exceeded")
    assert report(service, ws, child["id"], "users", -4).json["free"] == 5
    by_account = {p["billing_account_id"]: p["products"]["users"] for p in pools(alice, ws)}
    assert by_account == {big: {"capacity": 50, "used": 0, "free": 50}, small: {"capacity": 5, "used": 0, "free": 5}}
    # The same organization under another workspace is not the one this process knows.
    other = alice.workspace("pooled", name="Other")
    assert_error(report(service, other, child["id"], "users", 1), 404, "not_found")
    assert alice.delete(f"{orgs(ws)}/{child['id']}").status_code == 204
    assert_error(report(service, ws, child["id"], "users", 1), 404, "not_found")
    assert report(service, ws, root["id"], "users", 1).status_code == 200


def test_a_service_tokens_known_organization_in_an_archived_workspace_is_refused(
    app: Any, alice: Any, client: Any, config: Any, state: Any
) -> None:
    """Archived since its last report (with no subscription and no usage), then given capacity
    again from outside (a subscription made in the Dashboard): a report is still refused."""
    ws = alice.workspace("pooled")
    account = alice.account(ws)["id"]
    sub = subscribe_with_card(alice, ws, account, {"users": 3})
    root = make_root(alice, ws)
    service = service_api(client, config)
    assert report(service, ws, root["id"], "users", 1).status_code == 200
    assert report(service, ws, root["id"], "users", -1).status_code == 200
    state.gateway.client.v1.subscriptions.cancel(sub["id"])
    assert alice.delete(f"/workspaces/{ws}").status_code == 204
    with app.app_context():
        price = state.prices.price_id("users", "usd", "month")
    state.gateway.client.v1.subscriptions.create({"customer": account, "items": [{"price": price, "quantity": 3}]})
    assert pools(alice, ws)[0]["products"]["users"]["capacity"] == 3
    capacity._KNOWN_CAPACITY.clear()  # as in a process that has not read the pool yet: its capacity is current
    assert_error(report(service, ws, root["id"], "users", 1), 409, "workspace_archived")
    assert usage_of(alice, ws, root["id"])["usage"]["users"] == 0


def test_a_members_report_is_access_checked_each_time(alice: Any, as_user: Any) -> None:
    """Only a service token's targets are kept: a member's role is read at each report."""
    ws = alice.workspace("pooled")
    subscribe_with_card(alice, ws, alice.account(ws)["id"], {"users": 5})
    root = make_root(alice, ws)
    alice.add_member(ws, "adam", "admin")
    adam = as_user("adam")
    assert report(adam, ws, root["id"], "users", 1).status_code == 200
    assert alice.patch(f"/workspaces/{ws}/members/adam", {"role": "viewer"}).status_code == 200
    assert_error(report(adam, ws, root["id"], "users", 1), 403, "permission_denied")
    assert alice.delete(f"/workspaces/{ws}/members/adam").status_code == 204
    assert_error(report(adam, ws, root["id"], "users", -1), 404, "not_found")
    assert usage_of(alice, ws, root["id"])["usage"]["users"] == 1


def test_an_organization_deleted_during_its_limits_read_is_404(alice: Any, state: Any, monkeypatch: Any) -> None:
    """The organization is read with the caller's access, its path a statement
    later: a delete in between (its subtree with it) answers 404, not a 500."""
    ws = alice.workspace("pooled")
    subscribe_with_card(alice, ws, alice.account(ws)["id"], {"users": 4})
    child = make_child(alice, ws, make_root(alice, ws)["id"])
    found = routes.organization_access  # type: ignore[attr-defined]

    def deleted_meanwhile(workspace_id: str, org_id: str) -> Any:
        access = found(workspace_id, org_id)
        with state.db.write() as session:
            session.execute(delete(Organization).where(Organization.id == org_id))
        return access

    monkeypatch.setattr(routes, "organization_access", deleted_meanwhile)
    assert_error(alice.get(f"{orgs(ws)}/{child['id']}/limits"), 404, "not_found")


def test_a_retried_report_is_counted_once(alice: Any) -> None:
    ws = alice.workspace("pooled")
    subscribe_with_card(alice, ws, alice.account(ws)["id"], {"users": 4})
    root = make_root(alice, ws)
    headers = {**alice.headers, "Idempotency-Key": "usage-report-1"}
    first = alice.client.post(f"{orgs(ws)}/{root['id']}/usage", json={"product": "users", "delta": 1}, headers=headers)
    again = alice.client.post(f"{orgs(ws)}/{root['id']}/usage", json={"product": "users", "delta": 1}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json == first.json
    assert usage_of(alice, ws, root["id"])["usage"]["users"] == 1
    assert_error(
        alice.client.post(f"{orgs(ws)}/{root['id']}/usage", json={"product": "users", "delta": 2}, headers=headers),
        409,
        "idempotency_key_reused",
    )


# -- concurrency -------------------------------------------------------------------------


def _concurrently(
    app: Any, headers: dict[str, str], calls: list[tuple[str, dict[str, Any]]], threads: int | None = None
) -> list[Any]:
    def run(call: tuple[str, dict[str, Any]]) -> Any:
        with app.test_client() as client:
            return client.post(call[0], json=call[1], headers=headers)

    with ThreadPoolExecutor(max_workers=threads or len(calls)) as pool:
        return list(pool.map(run, calls))


def test_concurrent_reports_never_overshoot_the_pool(app: Any, alice: Any, auth: Any) -> None:
    ws = alice.workspace("pooled")
    subscribe_with_card(alice, ws, alice.account(ws)["id"], {"users": 12})
    root = make_root(alice, ws)
    kids = [make_child(alice, ws, root["id"], name=f"Kid {i}") for i in range(3)]
    calls = [(f"{orgs(ws)}/{kids[i % 3]['id']}/usage", {"product": "users", "delta": 1}) for i in range(40)]
    responses = _concurrently(app, auth("alice"), calls)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 12 + [409] * 28, [r.get_json() for r in responses if r.status_code not in (200, 409)]
    assert all(r.get_json()["code"] == "capacity_exceeded" for r in responses if r.status_code == 409)
    assert usage_of(alice, ws, root["id"])["subtree_usage"]["users"] == 12
    assert sum(usage_of(alice, ws, k["id"])["usage"]["users"] for k in kids) == 12
    assert pools(alice, ws)[0]["products"]["users"] == {"capacity": 12, "used": 12, "free": 0}


def test_concurrent_reports_never_overshoot_a_limit_on_the_path(app: Any, alice: Any, auth: Any) -> None:
    ws = alice.workspace("pooled")
    subscribe_with_card(alice, ws, alice.account(ws)["id"], {"users": 50})
    root = make_root(alice, ws)
    team = make_child(alice, ws, root["id"], name="Team", limits={"users": 7})
    members = [make_child(alice, ws, team["id"], name=f"M{i}") for i in range(2)]
    calls = [(f"{orgs(ws)}/{members[i % 2]['id']}/usage", {"product": "users", "delta": 1}) for i in range(32)]
    calls += [(f"{orgs(ws)}/{root['id']}/usage", {"product": "users", "delta": 1}) for _ in range(4)]
    responses = _concurrently(app, auth("alice"), calls)
    assert sum(r.status_code == 200 for r in responses[:32]) == 7
    assert all(r.status_code == 200 for r in responses[32:])
    assert usage_of(alice, ws, team["id"])["subtree_usage"]["users"] == 7
    assert usage_of(alice, ws, root["id"])["subtree_usage"]["users"] == 11


def test_concurrent_reports_never_overshoot_the_organizations_own_limit(app: Any, alice: Any, auth: Any) -> None:
    """The organization's own row is read after the workspace lock: 40 reports at
    once on a root limited to 10 (the pool has 50) take exactly 10, and children
    with limits of their own under a limited parent hold each bound too."""
    ws = alice.workspace("pooled")
    subscribe_with_card(alice, ws, alice.account(ws)["id"], {"users": 50})
    root = make_root(alice, ws, limits={"users": 10})
    # 20 threads: each request holds up to two of the app's 28 pooled connections.
    responses = _concurrently(
        app,
        auth("alice"),
        [(f"{orgs(ws)}/{root['id']}/usage", {"product": "users", "delta": 1}) for _ in range(40)],
        threads=20,
    )
    assert sorted(r.status_code for r in responses) == [200] * 10 + [409] * 30
    assert sorted(r.get_json()["used"] for r in responses if r.status_code == 200) == list(range(1, 11))
    assert usage_of(alice, ws, root["id"])["usage"]["users"] == 10

    other = make_root(alice, ws, name="Other", limits={"users": 9})
    kids = [make_child(alice, ws, other["id"], name=f"Kid {i}", limits={"users": 4}) for i in range(3)]
    calls = [(f"{orgs(ws)}/{kids[i % 3]['id']}/usage", {"product": "users", "delta": 1}) for i in range(30)]
    calls += [(f"{orgs(ws)}/{other['id']}/usage", {"product": "users", "delta": 1}) for _ in range(10)]
    responses = _concurrently(app, auth("alice"), calls, threads=20)
    assert sum(r.status_code == 200 for r in responses) == 9
    kid_usage = [usage_of(alice, ws, kid["id"])["usage"]["users"] for kid in kids]
    assert all(used <= 4 for used in kid_usage), kid_usage
    assert usage_of(alice, ws, other["id"])["subtree_usage"]["users"] == 9


def blocked_on_a_lock(state: Any) -> bool:
    """PostgreSQL: some other session of this database waits for a lock."""
    with state.db.read() as session:
        return bool(
            session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                )
            )
        )


def while_locked(app: Any, state: Any, ws: str, change: Any, request: Any) -> Any:
    """PostgreSQL: run `change(session)` under the workspace lock, and commit it
    only once `request()` (made meanwhile) waits for that lock; its answer."""
    if state.db.is_sqlite:
        pytest.skip("SQLite takes the write lock before reading anything: nothing is read before the wait")
    changed, done = threading.Event(), threading.Event()

    def hold() -> None:
        with app.app_context(), state.db.write() as session:
            lock_workspace(session, ws, writable=False)
            change(session)
            changed.set()
            while not blocked_on_a_lock(state) and not done.is_set():
                time.sleep(0.01)

    with ThreadPoolExecutor(max_workers=1) as pool:
        holder = pool.submit(hold)
        assert changed.wait(30)
        try:
            return request()
        finally:
            done.set()
            holder.result()


@pytest.fixture(params=["member", "service"])
def reporter(request: Any, app: Any, auth: Any, config: Any) -> Any:
    """reporter(ws, orgs) -> who reports in a race: alice (an admin), or a service token whose
    reports of `orgs` this process knows (each reported +1 then -1 first: no access check)."""

    def make(ws: str, known: list[dict[str, Any]]) -> Api:
        if request.param == "member":
            return Api(app.test_client(), auth("alice"))
        service = service_api(app.test_client(), config)
        for org in known:
            for delta in (1, -1):
                assert report(service, ws, org["id"], "users", delta).status_code == 200
        return service

    return make


def test_a_report_waiting_on_a_reassignment_counts_the_new_pool(app: Any, alice: Any, auth: Any, state: Any) -> None:
    """A report that waited for the workspace lock while its root was reassigned
    counts the pool the root draws on now, not the one it read before waiting."""
    ws = alice.workspace("assigned")
    big, small, _ = two_accounts(alice, ws, {"users": 50}, {"users": 2})
    root = make_root(alice, ws, billing_account_id=big)
    full = make_root(alice, ws, name="Full", billing_account_id=small)
    assert report(alice, ws, full["id"], "users", 2).status_code == 200  # the small pool is full
    response = while_locked(
        app,
        state,
        ws,
        lambda session: session.execute(
            update(Organization).where(Organization.id == root["id"]).values(billing_account_id=small)
        ),  # as update_organization does
        lambda: report(Api(app.test_client(), auth("alice")), ws, root["id"], "users", 1),
    )
    assert_error(response, 409, "capacity_exceeded")
    assert pools(alice, ws)[1]["products"]["users"] == {"capacity": 2, "used": 2, "free": 0}


def test_a_report_waiting_on_another_counts_what_it_took(app: Any, alice: Any, reporter: Any, state: Any) -> None:
    """Two reports at once, the first holding the workspace lock with its move not yet committed:
    the second reads the rows it checks once it has the lock (PostgreSQL: in a snapshot taken
    after it), so it sees the first's usage, on its own path (a limit) and in the pool."""
    ws = alice.workspace("pooled")
    subscribe_with_card(alice, ws, alice.account(ws)["id"], {"users": 5})
    limited, other = make_root(alice, ws, limits={"users": 3}), make_root(alice, ws, name="Other")
    third = make_root(alice, ws, name="Third")
    client = reporter(ws, [limited, third])
    # The limit (the pool had room: 3 + 1 of 5), then the pool (no limit on `third`).
    for taken, reported, moved in ((limited, limited, 3), (other, third, 2)):
        response = while_locked(
            app,
            state,
            ws,
            lambda session, taken=taken, moved=moved: session.execute(
                update(Organization)
                .where(Organization.id == taken["id"])
                .values(usage_users=Organization.usage_users + moved, subtree_users=Organization.subtree_users + moved)
            ),  # as a report does
            lambda reported=reported: report(client, ws, reported["id"], "users", 1),
        )
        assert_error(response, 409, "capacity_exceeded")
    assert [usage_of(alice, ws, o["id"])["usage"]["users"] for o in (limited, other, third)] == [3, 2, 0]
    assert pools(alice, ws)[0]["products"]["users"] == {"capacity": 5, "used": 5, "free": 0}


def test_a_report_waiting_on_a_decrease_counts_its_hold(app: Any, alice: Any, reporter: Any, state: Any) -> None:
    """A report reads the pool's capacity before it waits for the workspace lock; a decrease's
    hold committed meanwhile changes it: the report is checked again against the capacity as
    the lock's holder left it, not the one it read before waiting."""
    ws = alice.workspace("pooled")
    sub = subscribe_with_card(alice, ws, alice.account(ws)["id"], {"users": 5})
    root = make_root(alice, ws)
    client = reporter(ws, [root])
    response = while_locked(
        app,
        state,
        ws,
        lambda session: session.add(
            CapacityHold(
                workspace_id=ws,
                subscription_id=sub["id"],
                quantities={"users": 2, "locations": 0, "sso": 0},
                expires_at=utcnow() + timedelta(seconds=60),
            )
        ),  # as holding does
        lambda: report(client, ws, root["id"], "users", 3),
    )
    assert_error(response, 409, "capacity_exceeded")
    assert usage_of(alice, ws, root["id"])["usage"]["users"] == 0
    assert pools(alice, ws)[0]["products"]["users"] == {"capacity": 2, "used": 0, "free": 2}


def test_a_delete_waiting_on_a_report_sees_its_usage(app: Any, alice: Any, auth: Any, state: Any) -> None:
    """Deleting reads the organization's usage after the workspace lock: usage
    reported while it waited refuses the delete."""
    ws = alice.workspace("pooled")
    subscribe_with_card(alice, ws, alice.account(ws)["id"], {"users": 5})
    root = make_root(alice, ws)
    response = while_locked(
        app,
        state,
        ws,
        lambda session: session.execute(
            update(Organization).where(Organization.id == root["id"]).values(usage_users=1, subtree_users=1)
        ),  # as report_usage does
        lambda: Api(app.test_client(), auth("alice")).delete(f"{orgs(ws)}/{root['id']}"),
    )
    assert_error(response, 409, "organization_has_usage")
