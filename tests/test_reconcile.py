"""reconcile: the index can always be rebuilt from Stripe."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, update

from billing.billing_accounts import service as accounts_service
from billing.models import BillingAccountIndex, utcnow
from tests.helpers import FULL, assert_error, index_rows


def test_failure_between_stripe_and_database_is_recovered(
    reconcile_now: Any, as_user: Any, state: Any, monkeypatch: Any
) -> None:
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


def test_lost_index_is_restored_from_metadata(
    reconcile_now: Any, as_user: Any, state: Any, webhooks_lost: None
) -> None:
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
    assert sorted(r.customer_id for r in rows) == sorted(a["id"] for a in accounts)  # type: ignore[type-var]
    assert {r.currency for r in rows} == {"gbp"}
    listed = alice.get(f"/workspaces/{ws}/billing-accounts").json["data"]
    assert sorted(a["id"] for a in listed) == sorted(a["id"] for a in accounts)


def test_deleted_customers_and_stale_reservations_are_cleared(
    reconcile_now: Any, as_user: Any, state: Any, webhooks_lost: None
) -> None:
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
        session.execute(
            update(BillingAccountIndex)
            .where(BillingAccountIndex.reference == "ref-stale")
            .values(created_at=utcnow() - timedelta(hours=1))
        )
    report = reconcile_now()
    assert report.released == 1
    assert [r.reference for r in index_rows(state, ws)] == ["ref-fresh"]  # may still be in flight


def test_one_bad_object_is_listed_and_the_rest_reconciled(
    reconcile_now: Any, as_user: Any, state: Any, webhooks_lost: None
) -> None:
    """Two Stripe customers claim the same reservation of a workspace (one copied
    in the Dashboard, metadata and all): the index can't take both. That one is
    logged and listed in the report, and everything else is still done."""
    from billing.billing_accounts.service import REFERENCE_KEY

    alice = as_user("alice")
    ws = alice.workspace()
    metadata = {"workspace_id": ws, "currency": "usd", REFERENCE_KEY: "copied-reference"}
    first = state.gateway.client.v1.customers.create({"name": "Copy 1", "metadata": metadata})
    second = state.gateway.client.v1.customers.create({"name": "Copy 2", "metadata": metadata})
    report = reconcile_now()
    [restored] = report.restored
    [clash] = {first.id, second.id} - {restored}
    assert report.failed == [{"object": clash, "step": "index", "error": "IntegrityError"}]
    assert report.copied_customers == 1  # the steps after it ran: the restored account was copied
    assert [a["id"] for a in alice.get(f"/workspaces/{ws}/billing-accounts").json["data"]] == [restored]
    again = reconcile_now()  # the next run: its reference is taken now, so it gets one of its own
    assert (again.failed, again.restored) == ([], [clash])


def test_an_object_that_fails_is_listed_and_the_others_go_on(
    reconcile_now: Any, as_user: Any, state: Any, monkeypatch: Any, webhooks_lost: None
) -> None:
    """One account's objects can't be copied, nor its default set (Stripe answers
    them without a field the service reads, say): that account alone fails."""
    from billing import reconcile as reconcile_module
    from billing import replica

    alice = as_user("alice")
    ws = alice.workspace()
    good, bad = alice.account(ws, name="Good"), alice.account(ws, name="Bad")
    for account in (good, bad):
        state.gateway.client.v1.payment_methods.attach("pm_card_visa", {"customer": account["id"]})
    copy, default = replica.copy_customer, reconcile_module.ensure_default_payment_method  # type: ignore[attr-defined]

    def copy_but_bad(billing_state: Any, customer_id: str, **kwargs: Any) -> None:
        if customer_id == bad["id"]:
            raise KeyError("created")
        copy(billing_state, customer_id, **kwargs)

    def default_but_bad(billing_state: Any, customer_id: str) -> str | None:
        if customer_id == bad["id"]:
            raise AttributeError("invoice_settings")
        return default(billing_state, customer_id)

    monkeypatch.setattr(replica, "copy_customer", copy_but_bad)
    monkeypatch.setattr(reconcile_module, "ensure_default_payment_method", default_but_bad)
    report = reconcile_now(full=True)
    assert report.failed == [
        {"object": bad["id"], "step": "copy", "error": "KeyError"},
        {"object": bad["id"], "step": "default", "error": "AttributeError"},
    ]
    assert (report.copied_customers, report.defaults_set) == (1, [good["id"]])


def test_an_event_that_cant_be_stored_is_listed_and_the_others_applied(
    reconcile_now: Any, as_user: Any, state: Any, monkeypatch: Any, webhooks_lost: None
) -> None:
    from billing.webhooks import inbox

    alice = as_user("alice")
    ws = alice.workspace()
    good, bad = alice.account(ws, name="Good"), alice.account(ws, name="Bad")
    methods = {
        account["id"]: state.gateway.client.v1.payment_methods.attach("pm_card_visa", {"customer": account["id"]}).id
        for account in (good, bad)
    }
    [bad_event] = [
        e.id
        for e in state.gateway.client.v1.events.list({"limit": 100}).data
        if e.type == "payment_method.attached" and e.data.object.id == methods[bad["id"]]
    ]
    store = inbox.store

    def store_but_bad(db: Any, event: dict[str, Any], key: Any) -> Any:
        if event["id"] == bad_event:
            raise ValueError("an event the inbox can't hold")
        return store(db, event, key)

    monkeypatch.setattr(inbox, "store", store_but_bad)
    report = reconcile_now()
    assert report.failed == [{"object": bad_event, "step": "event", "error": "ValueError"}]
    customers = {c: state.gateway.client.v1.customers.retrieve(c) for c in methods}
    # The good card's event was stored and applied (its first card became the default).
    assert {c: customer.invoice_settings.default_payment_method for c, customer in customers.items()} == {
        good["id"]: methods[good["id"]],
        bad["id"]: None,
    }
