"""reconcile: the index can always be rebuilt from Stripe."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, update

from billing.billing_accounts import service as accounts_service
from billing.models import BillingAccountIndex, utcnow
from tests.conftest import assert_error
from tests.test_billing_accounts import FULL, index_rows


def test_failure_between_stripe_and_database_is_recovered(reconcile_now: Any, as_user: Any, state: Any, monkeypatch: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace("single")

    def crash(*_: Any) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(accounts_service, "_activate", crash)
    assert_error(alice.post(f"/workspaces/{ws}/billing-accounts", FULL), 500, "internal_error")
    monkeypatch.undo()
    [row] = index_rows(state, ws)
    assert row.state == "pending" and row.customer_id is None
    [customer] = list(state.gateway.iter_customers())  # Stripe did create it
    report = reconcile_now()
    assert report.activated == [customer.id]
    [row] = index_rows(state, ws)
    assert row.state == "active" and row.customer_id == customer.id
    listed = alice.get(f"/workspaces/{ws}/billing-accounts").json["data"]
    assert [a["id"] for a in listed] == [customer.id]
    # The single slot is taken: no second account sneaks in.
    assert_error(alice.post(f"/workspaces/{ws}/billing-accounts", FULL), 409, "billing_account_limit_reached")
    assert reconcile_now().activated == []  # idempotent


def test_lost_index_is_restored_from_metadata(reconcile_now: Any, as_user: Any, state: Any, webhooks_lost: None) -> None:
    alice = as_user("alice")
    ws = alice.workspace()
    accounts = [alice.account(ws, name=f"A{i}", currency="gbp") for i in range(3)]
    state.gateway.client.v1.customers.create({"name": "not ours"})
    state.gateway.client.v1.customers.create({"name": "gone workspace", "metadata": {"workspace_id": "ws_nope"}})
    with state.db.write() as session:
        session.execute(delete(BillingAccountIndex))
    assert alice.get(f"/workspaces/{ws}/billing-accounts").json["data"] == []

    report = reconcile_now()
    assert sorted(report.restored) == sorted(a["id"] for a in accounts)
    rows = index_rows(state, ws)
    assert sorted(r.customer_id for r in rows) == sorted(a["id"] for a in accounts)
    assert {r.currency for r in rows} == {"gbp"}
    listed = alice.get(f"/workspaces/{ws}/billing-accounts").json["data"]
    assert sorted(a["id"] for a in listed) == sorted(a["id"] for a in accounts)


def test_deleted_customers_and_stale_reservations_are_cleared(reconcile_now: Any, as_user: Any, state: Any, webhooks_lost: None) -> None:
    alice = as_user("alice")
    ws = alice.workspace("single")
    account = alice.account(ws)
    state.gateway.client.v1.customers.delete(account["id"])
    report = reconcile_now()
    assert report.events_replayed >= 1  # customer.deleted, handled as its webhook would have been
    assert index_rows(state, ws) == []

    with state.db.write() as session:  # a reservation whose Stripe call never happened
        session.add(BillingAccountIndex(workspace_id=ws, reference="ref-stale", currency="usd", state="pending"))
        session.add(BillingAccountIndex(workspace_id=ws, reference="ref-fresh", currency="usd", state="pending"))
        session.execute(update(BillingAccountIndex).where(BillingAccountIndex.reference == "ref-stale")
                        .values(created_at=utcnow() - timedelta(hours=1)))
    report = reconcile_now()
    assert report.released == 1
    assert [r.reference for r in index_rows(state, ws)] == ["ref-fresh"]  # may still be in flight
