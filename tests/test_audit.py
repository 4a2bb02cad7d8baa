"""The audit trail (API.md, "Audit trail"): every change to a workspace's billing has its
entry, written with the change, by whoever made it; a failed write and a replay have none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, update

from billing.models import AuditEvent
from billing.tokens import mint_token
from tests.helpers import Api, account_path, assert_error, make_child, make_root, orgs


def trail(api: Any, ws: str, query: str = "") -> list[dict[str, Any]]:
    """The workspace's entries, oldest first (the route answers newest first)."""
    response = api.get(f"/workspaces/{ws}/audit-events?limit=200{query}")
    assert response.status_code == 200, response.json
    return list(reversed(response.json["data"]))


def summary(entries: list[dict[str, Any]]) -> list[tuple[str, str | None, str, str]]:
    return [(e["actor"]["type"], e["actor"]["id"], e["action"], e["target"]["id"]) for e in entries]


def count(state: Any) -> int:
    with state.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(AuditEvent)) or 0)


def new_entries(api: Any, ws: str, before: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen = {e["id"] for e in before}
    return [e for e in trail(api, ws) if e["id"] not in seen]


def test_workspace_and_member_writes_are_recorded(as_user: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace("pooled", name="Acme")
    assert alice.patch(f"/workspaces/{ws}", {"name": "Acme Inc", "description": None}).status_code == 200
    alice.add_member(ws, "bob", "viewer")
    assert alice.patch(f"/workspaces/{ws}/members/bob", {"role": "admin"}).status_code == 200
    assert alice.delete(f"/workspaces/{ws}/members/bob").status_code == 204
    assert alice.delete(f"/workspaces/{ws}").status_code == 204
    entries = trail(alice, ws)
    assert summary(entries) == [
        ("user", "alice", "workspace.created", ws),
        ("user", "alice", "workspace.updated", ws),
        ("user", "alice", "member.added", "bob"),
        ("user", "alice", "member.role_changed", "bob"),
        ("user", "alice", "member.removed", "bob"),
        ("user", "alice", "workspace.archived", ws),
    ]
    assert [e["changes"] for e in entries] == [
        {"name": {"before": None, "after": "Acme"}, "billing_mode": {"before": None, "after": "pooled"}},
        {"name": {"before": "Acme", "after": "Acme Inc"}},  # description: null before and after, no change
        {"role": {"before": None, "after": "viewer"}},
        {"role": {"before": "viewer", "after": "admin"}},
        {"role": {"before": "admin", "after": None}},
        {"archived": {"before": False, "after": True}},
    ]
    assert [e["target"]["type"] for e in entries] == [
        "workspace",
        "workspace",
        "member",
        "member",
        "member",
        "workspace",
    ]
    assert all(e["request_id"].startswith("req_") and e["stripe_event_id"] is None for e in entries)
    assert len({e["request_id"] for e in entries}) == 6


def test_billing_account_writes_are_recorded_and_an_idempotent_replay_adds_nothing(as_user: Any, state: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    body = {"name": "Acme EU", "email": "eu@acme.com", "address": {"country": "DE"}, "currency": "eur"}
    headers = {**alice.headers, "Idempotency-Key": "create-eu"}
    created = alice.client.post(f"/workspaces/{ws}/billing-accounts", json=body, headers=headers)
    assert created.status_code == 201
    replayed = alice.client.post(f"/workspaces/{ws}/billing-accounts", json=body, headers=headers)
    assert replayed.headers["Idempotent-Replayed"] == "true"
    acc = account_path(ws, created.json["id"])
    assert alice.patch(acc, {"name": "Acme Europe", "phone": "+4930123456"}).status_code == 200
    assert alice.delete(acc).status_code == 204
    entries = trail(alice, ws)[1:]
    assert summary(entries) == [
        ("user", "alice", "billing_account.created", created.json["id"]),
        ("user", "alice", "billing_account.updated", created.json["id"]),
        ("user", "alice", "billing_account.deleted", created.json["id"]),
    ]
    assert entries[0]["idempotency_key"] == "create-eu" and entries[1]["idempotency_key"] is None
    assert entries[0]["changes"]["name"] == {"before": None, "after": "Acme EU"}
    assert entries[0]["changes"]["currency"] == {"before": None, "after": "eur"}
    assert entries[1]["changes"] == {
        "name": {"before": "Acme EU", "after": "Acme Europe"},
        "phone": {"before": None, "after": "+4930123456"},
    }
    assert entries[2]["changes"]["name"] == {"before": "Acme Europe", "after": None}
    # The replay ran nothing: one create entry in all, whatever a third try does.
    alice.client.post(f"/workspaces/{ws}/billing-accounts", json=body, headers=headers)
    assert [e["action"] for e in trail(alice, ws)].count("billing_account.created") == 1


def test_payment_method_writes_are_recorded_with_brand_and_last4_only(as_user: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    account = alice.account(ws)
    acc = account_path(ws, account["id"])
    visa = alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_visa"}).json
    mastercard = alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_mastercard"}).json
    before = trail(alice, ws)
    assert alice.client.put(f"{acc}/payment-methods/{mastercard['id']}", headers=alice.headers).status_code == 200
    assert alice.delete(f"{acc}/payment-methods/{visa['id']}").status_code == 204
    entries = new_entries(alice, ws, before)
    assert summary(entries) == [
        ("user", "alice", "payment_method.default_changed", mastercard["id"]),
        ("user", "alice", "payment_method.removed", visa["id"]),
    ]
    assert entries[0]["changes"] == {"default_payment_method": {"before": visa["id"], "after": mastercard["id"]}}
    assert entries[1]["changes"] == {
        "billing_account_id": {"before": account["id"], "after": None},
        "card": {"before": {"type": "card", "brand": "visa", "last4": "4242"}, "after": None},
    }
    added = [e for e in before if e["action"] == "payment_method.added"]
    assert [e["target"]["id"] for e in added] == [visa["id"], mastercard["id"]]
    assert added[1]["changes"]["card"]["after"] == {"type": "card", "brand": "mastercard", "last4": "4444"}


def test_subscription_writes_are_recorded(as_user: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    account, _ = alice.account(ws), alice.account(ws, name="Second")  # two accounts: no trial
    acc = account_path(ws, account["id"])
    alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_visa"})
    before = trail(alice, ws)
    sub = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 2}}).json
    path = f"{acc}/subscriptions/{sub['id']}"
    for change in (
        {"product_quantities": {"users": 3}},
        {"metadata": {"order_id": "6735"}},
        {"add_products": {"sso": 1}},
        {"action": "pause"},
        {"action": "resume"},
    ):
        assert alice.patch(path, change).status_code == 200, change
    assert alice.delete(path).status_code == 200
    assert alice.patch(path, {"action": "resume"}).status_code == 200  # un-cancels
    entries = [e for e in new_entries(alice, ws, before) if e["target"]["type"] == "subscription"]
    assert summary(entries) == [
        ("user", "alice", "subscription.created", sub["id"]),
        ("user", "alice", "subscription.quantity_changed", sub["id"]),
        ("user", "alice", "subscription.metadata_changed", sub["id"]),
        ("user", "alice", "subscription.product_changed", sub["id"]),
        ("user", "alice", "subscription.paused", sub["id"]),
        ("user", "alice", "subscription.resumed", sub["id"]),
        ("user", "alice", "subscription.canceled", sub["id"]),
        ("user", "alice", "subscription.uncanceled", sub["id"]),
    ]
    changes = [e["changes"] for e in entries]
    assert changes[0] == {
        "status": {"before": None, "after": "active"},
        "product_quantities": {"before": None, "after": {"users": 2}},
    }
    assert changes[1] == {"product_quantities": {"before": {"users": 2}, "after": {"users": 3}}}
    assert changes[2] == {"metadata": {"before": {}, "after": {"order_id": "6735"}}}
    assert changes[3] == {"product_quantities": {"before": {"users": 3}, "after": {"users": 3, "sso": 1}}}
    assert changes[4] == {"status": {"before": "active", "after": "paused"}}
    assert changes[5] == {"status": {"before": "paused", "after": "active"}}
    assert changes[6]["cancel_at_period_end"] == {"before": False, "after": True}
    assert changes[7]["cancel_at_period_end"] == {"before": True, "after": False}
    # The first invoice, paid with the create, is the same request's.
    [paid] = [e for e in new_entries(alice, ws, before) if e["action"] == "invoice.paid"][:1]
    assert paid["request_id"] == entries[0]["request_id"] and paid["changes"]["status"]["after"] == "paid"


def test_organization_writes_and_refused_usage_are_recorded(as_user: Any, config: Any, client: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    root = make_root(alice, ws, name="HQ")
    child = make_child(alice, ws, root["id"], name="Team")
    assert alice.patch(f"{orgs(ws)}/{child['id']}", {"limits": {"users": 5}}).status_code == 200
    assert alice.patch(f"{orgs(ws)}/{child['id']}", {"name": "Team A"}).status_code == 200
    service = Api(client, {"Authorization": f"Bearer {mint_token(config, 'svc-inventory', scope='billing:usage')}"})
    refused = service.post(f"{orgs(ws)}/{child['id']}/usage", {"product": "users", "delta": 1})
    assert_error(refused, 409, "capacity_exceeded")  # no subscription: no capacity
    assert alice.post(f"{orgs(ws)}/{child['id']}/usage", {"product": "users", "delta": -1}).status_code == 200
    assert alice.delete(f"{orgs(ws)}/{root['id']}").status_code == 204
    entries = trail(alice, ws)[1:]
    assert summary(entries) == [
        ("user", "alice", "organization.created", root["id"]),
        ("user", "alice", "organization.created", child["id"]),
        ("user", "alice", "organization.limits_changed", child["id"]),
        ("user", "alice", "organization.updated", child["id"]),
        ("service", "svc-inventory", "usage.refused", child["id"]),
        ("user", "alice", "organization.deleted", root["id"]),
    ]
    assert entries[1]["changes"]["parent_id"] == {"before": None, "after": root["id"]}
    assert entries[2]["changes"] == {
        "limits": {
            "before": {"locations": None, "users": None, "sso": None},
            "after": {"locations": None, "users": 5, "sso": None},
        }
    }
    assert entries[3]["changes"] == {"name": {"before": "Team", "after": "Team A"}}
    assert entries[4]["changes"] == {"usage.users": {"before": 0, "after": 1}}
    assert entries[5]["changes"] == {
        "name": {"before": "HQ", "after": None},
        "descendants": {"before": [child["id"]], "after": None},
    }


def test_a_moved_organization_is_recorded(as_user: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace("assigned")
    first, second = alice.account(ws), alice.account(ws, name="Second")
    root = make_root(alice, ws, billing_account_id=first["id"])
    assert alice.patch(f"{orgs(ws)}/{root['id']}", {"billing_account_id": second["id"]}).status_code == 200
    [moved] = [e for e in trail(alice, ws) if e["action"] == "organization.moved"]
    assert moved["changes"] == {"billing_account_id": {"before": first["id"], "after": second["id"]}}


def test_failed_writes_leave_no_entry(as_user: Any, state: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    account, _ = alice.account(ws), alice.account(ws, name="Second")
    acc = account_path(ws, account["id"])
    alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_visa"})
    sub = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 2}}).json
    declining = alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_chargeCustomerFail"}).json
    assert alice.client.put(f"{acc}/payment-methods/{declining['id']}", headers=alice.headers).status_code == 200
    before = count(state)
    path = f"{acc}/subscriptions/{sub['id']}"
    assert_error(alice.patch(path, {"add_products": {"users": 5}}), 402, "card_declined")  # Stripe refuses
    assert_error(alice.post(f"/workspaces/{ws}/members", {"user_id": "alice", "role": "admin"}), 409, "member_exists")
    assert_error(alice.patch(f"/workspaces/{ws}/members/alice", {"role": "viewer"}), 422, "cannot_remove_last_owner")
    assert alice.patch(acc, {"email": "not an email"}).status_code == 422
    assert_error(alice.delete(acc), 422, "active_subscriptions_exist")
    assert_error(alice.delete(f"/workspaces/{ws}"), 409, "workspace_not_empty")
    assert_error(as_user("mallory").patch(f"/workspaces/{ws}", {"name": "Mine"}), 404, "not_found")
    assert count(state) == before


def test_changes_made_in_stripe_are_recorded_as_stripes(as_user: Any, state: Any) -> None:
    """A Dashboard rename, a renewal, a declined renewal and its retry: actor `stripe`, with the event."""
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    account, _ = alice.account(ws), alice.account(ws, name="Second")
    acc = account_path(ws, account["id"])
    alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_visa"})
    sub = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 2}}).json
    before = trail(alice, ws)
    state.gateway.client.v1.customers.update(account["id"], {"name": "Renamed in the Dashboard"})
    alice.advance_clock({"days": 32})  # a renewal, paid
    declining = alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_chargeCustomerFail"}).json
    assert alice.client.put(f"{acc}/payment-methods/{declining['id']}", headers=alice.headers).status_code == 200
    seen = trail(alice, ws)
    alice.advance_clock({"days": 31})  # the next renewal declines: past_due
    alice.advance_clock({"days": 2})  # a retry (Smart Retries, every 2 days in the sandbox) declines too
    stripes = [e for e in new_entries(alice, ws, before) if e["actor"]["type"] == "stripe"]
    assert all(e["actor"]["id"] is None and e["stripe_event_id"].startswith("evt_") for e in stripes)
    assert all(e["request_id"] is None for e in stripes)
    renamed = next(e for e in stripes if e["action"] == "billing_account.updated")
    assert renamed["changes"] == {"name": {"before": "ACME Corp Billing", "after": "Renamed in the Dashboard"}}
    renewals = [e for e in stripes if e["action"] == "subscription.renewed"]
    assert len(renewals) == 2 and all(e["target"]["id"] == sub["id"] for e in renewals)
    later = new_entries(alice, ws, seen)
    [past_due] = [e for e in later if e["action"] == "subscription.status_changed"]
    assert past_due["changes"] == {"status": {"before": "active", "after": "past_due"}}
    assert past_due["actor"] == {"type": "stripe", "id": None}
    failures = [e for e in later if e["action"] == "invoice.payment_failed"]
    assert [f["changes"]["attempt_count"]["after"] for f in failures] == [1, 2]
    assert len({f["target"]["id"] for f in failures}) == 1
    assert all(f["actor"]["type"] == "stripe" for f in failures)


def test_only_owners_and_admins_read_the_trail(as_user: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    alice.add_member(ws, "victor", "viewer")
    alice.add_member(ws, "ada", "admin")
    assert_error(as_user("victor").get(f"/workspaces/{ws}/audit-events"), 403, "permission_denied")
    assert as_user("ada").get(f"/workspaces/{ws}/audit-events").status_code == 200
    assert_error(as_user("mallory").get(f"/workspaces/{ws}/audit-events"), 404, "not_found")


def test_pages_and_filters(as_user: Any, state: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    for n in range(5):
        alice.add_member(ws, f"user{n}", "viewer")
    alice.patch(f"/workspaces/{ws}", {"name": "Renamed"})
    everything = trail(alice, ws)
    assert len(everything) == 7
    newest_first = [e["id"] for e in reversed(everything)]
    base = f"/workspaces/{ws}/audit-events"
    first = alice.get(f"{base}?limit=3").json
    assert [e["id"] for e in first["data"]] == newest_first[:3]
    assert first["has_more"] and first["next_cursor"] == newest_first[2] and first["previous_cursor"] is None
    second = alice.get(f"{base}?limit=3&after={first['next_cursor']}").json
    assert [e["id"] for e in second["data"]] == newest_first[3:6]
    assert second["previous_cursor"] == newest_first[3]
    back = alice.get(f"{base}?limit=3&before={second['previous_cursor']}").json
    assert [e["id"] for e in back["data"]] == newest_first[:3]
    last = alice.get(f"{base}?limit=3&after={second['next_cursor']}").json
    assert [e["id"] for e in last["data"]] == newest_first[6:] and not last["has_more"]
    # Filters.
    assert [e["action"] for e in trail(alice, ws, "&action=member.")] == ["member.added"] * 5
    assert [e["target"]["id"] for e in trail(alice, ws, "&target_id=user3")] == ["user3"]
    assert len(trail(alice, ws, "&actor=alice")) == 7 and trail(alice, ws, "&actor=stripe") == []
    assert trail(alice, ws, "&action=member.added_") == []  # a prefix, not a pattern
    with state.db.write() as session:  # the rename happened an hour ago
        session.execute(
            update(AuditEvent)
            .where(AuditEvent.id != everything[-1]["id"], AuditEvent.workspace_id == ws)
            .values(occurred_at=datetime.now(UTC) - timedelta(hours=1))
        )
    since = (datetime.now(UTC) - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [e["action"] for e in trail(alice, ws, f"&since={since}")] == ["workspace.updated"]
    assert len(trail(alice, ws, f"&until={since}")) == 6
    # A cursor from another workspace is no cursor here.
    other = alice.workspace("pooled")
    assert_error(alice.get(f"/workspaces/{other}/audit-events?after={newest_first[0]}"), 422, "validation_failed")
    assert alice.get(f"{base}?after=x&before=y").status_code == 422
    assert alice.get(f"{base}?since=9999-12-31T23:59:59-14:00").status_code == 422
    assert alice.get(f"{base}?limit=201").status_code == 422


def test_the_sweep_prunes_entries_past_their_retention(app: Flask, as_user: Any, state: Any) -> None:
    from billing.jobs import sweep

    alice = as_user("alice")
    ws = alice.workspace("pooled")
    alice.patch(f"/workspaces/{ws}", {"name": "Renamed"})
    old = trail(alice, ws)[0]["id"]
    retention = state.config.audit_retention_days
    assert retention == 400
    with state.db.write() as session:
        session.execute(
            update(AuditEvent)
            .where(AuditEvent.id == old)
            .values(occurred_at=datetime.now(UTC) - timedelta(days=retention, minutes=1))
        )
    with app.app_context():
        sweep()
    assert [e["action"] for e in trail(alice, ws)] == ["workspace.updated"]


@pytest.mark.parametrize("value", ["0", "-1", "x"])
def test_retention_must_be_a_positive_number_of_days(value: str) -> None:
    from billing.config import Config, ConfigError
    from tests.helpers import TEST_ENV

    with pytest.raises(ConfigError, match="AUDIT_RETENTION_DAYS"):
        Config.from_env({**TEST_ENV, "AUDIT_RETENTION_DAYS": value})
    assert Config.from_env({**TEST_ENV, "AUDIT_RETENTION_DAYS": "30"}).audit_retention_days == 30


def test_a_view_the_copy_already_holds_adds_nothing(as_user: Any, state: Any, reconcile_now: Any) -> None:
    """Re-reading everything from Stripe (reconcile --full, webhooks of changes already
    stored) finds nothing changed; an older view is not stored, so it records nothing either."""
    from billing.models import now_stamp
    from billing.replica import Keeper

    alice = as_user("alice")
    ws = alice.workspace("pooled")
    account, _ = alice.account(ws), alice.account(ws, name="Second")
    acc = account_path(ws, account["id"])
    alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_visa"})
    alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 2}})
    before = count(state)
    reconcile_now(full=True)
    assert count(state) == before
    older = state.gateway.client.v1.customers.retrieve(account["id"]).to_dict()
    Keeper(state.db).keep_data({**older, "name": "An old view"}, now_stamp() - 3_600_000_000)
    assert count(state) == before
    Keeper(state.db).keep_data({**older, "name": "A newer view"}, now_stamp())
    assert count(state) == before + 1


def test_a_card_is_shown_by_brand_and_last4_only() -> None:
    from billing.audit.trail import stripe_entries
    from billing.catalog import CatalogProducts

    card = {
        "id": "pm_1",
        "object": "payment_method",
        "type": "card",
        "customer": "cus_1",
        "billing_details": {"name": "Ada Lovelace", "email": "ada@example.com"},
        "card": {"brand": "visa", "last4": "4242", "exp_month": 4, "exp_year": 2030, "fingerprint": "Xt5EWLLDS7FJjR1c"},
    }
    [entry] = stripe_entries("payment_method", "pm_1", None, card, CatalogProducts(None))  # type: ignore[arg-type]  # no read needed
    assert entry.changes["card"] == {"before": None, "after": {"type": "card", "brand": "visa", "last4": "4242"}}
    assert "Ada" not in str(entry.changes) and "2030" not in str(entry.changes)


def test_a_write_adds_one_insert_at_most(as_user: Any, state: Any) -> None:
    """Recording is cheap: each write sends one INSERT into audit_events, however many
    entries it makes (a subscription's change and the invoice it paid are one statement)."""
    from sqlalchemy import event

    alice = as_user("alice")
    ws = alice.workspace("pooled")
    account, _ = alice.account(ws), alice.account(ws, name="Second")
    acc = account_path(ws, account["id"])
    alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_visa"})
    sub = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 2}}).json
    inserts: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO AUDIT_EVENTS"):
            inserts.append(statement)

    event.listen(state.db.engine, "before_cursor_execute", seen)
    try:
        writes = [
            lambda: alice.patch(f"{acc}/subscriptions/{sub['id']}", {"product_quantities": {"users": 3}}),
            lambda: alice.patch(acc, {"name": "Renamed"}),
            lambda: alice.patch(f"/workspaces/{ws}", {"name": "Renamed"}),
            lambda: alice.post(f"/workspaces/{ws}/members", {"user_id": "bob", "role": "viewer"}),
        ]
        for write in writes:
            before = count(state)
            inserts.clear()
            assert write().status_code in (200, 201)
            assert len(inserts) == 1 and count(state) > before
    finally:
        event.remove(state.db.engine, "before_cursor_execute", seen)
