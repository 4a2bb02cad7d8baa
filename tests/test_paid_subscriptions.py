"""Paid subscriptions: the payment-method rule, declines, the limit, proration."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.helpers import assert_error


@pytest.fixture
def paying(as_user: Any) -> dict[str, Any]:
    """A pooled workspace (no trial: two accounts) whose first account has a Visa."""
    paying = dict(as_user("alice").account_without_trial())
    response = paying["alice"].post(f"/sandbox{paying['acc']}/payment-methods", {"payment_method": "pm_card_visa"})
    assert response.status_code == 201
    return paying


def active_count(state: Any, customer_id: str) -> int:
    return sum(
        s.status not in ("canceled", "incomplete_expired") for s in state.gateway.list_subscriptions(customer_id)
    )


def test_paid_subscription_is_active_and_charged(paying: dict[str, Any]) -> None:
    alice, acc = paying["alice"], paying["acc"]
    response = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 3}, "interval": "year"})
    assert response.status_code == 201, response.json
    assert response.json["status"] == "active" and response.json["trial_end"] is None
    [invoice] = alice.get(f"{acc}/invoices").json["data"]
    assert invoice["status"] == "paid" and invoice["amount_paid"] == invoice["total"] > 0
    assert invoice["lines"][0]["quantity"] == 3 and invoice["lines"][0]["product_name"] == "Users"


def test_declined_card_is_402_and_leaves_nothing(as_user: Any, state: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    account, _ = alice.account(ws), alice.account(ws)
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_chargeCustomerFail"})
    for _ in range(4):  # more than the limit: declines never count against it
        response = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 1}})
        body = assert_error(response, 402, "card_declined")
        assert body["type"] == "payment_error"
    assert state.gateway.list_subscriptions(account["id"]) == []
    assert alice.get(f"{acc}/subscriptions").json["data"] == []
    # A working card afterwards goes through.
    alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_visa"})
    methods = alice.get(f"{acc}/payment-methods").json["data"]
    visa = next(m for m in methods if m["last4"] == "4242")
    assert alice.client.put(f"{acc}/payment-methods/{visa['id']}", headers=alice.headers).status_code == 200
    assert alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 1}}).status_code == 201


def test_at_most_three_active_subscriptions(paying: dict[str, Any], state: Any) -> None:
    alice, acc = paying["alice"], paying["acc"]
    subs = [alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 1}}).json for _ in range(3)]
    assert_error(
        alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 1}}), 409, "subscription_limit_reached"
    )
    assert active_count(state, paying["account"]["id"]) == 3
    # Scheduled to cancel still counts; actually canceled frees the slot.
    alice.delete(f"{acc}/subscriptions/{subs[0]['id']}")
    assert_error(
        alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 1}}), 409, "subscription_limit_reached"
    )
    state.gateway.client.v1.subscriptions.cancel(subs[0]["id"])
    assert alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 1}}).status_code == 201


def test_limit_holds_under_concurrency(paying: dict[str, Any], app: Any, state: Any) -> None:
    alice, acc = paying["alice"], paying["acc"]

    def create(_: int) -> Any:
        with app.test_client() as client:
            return client.post(f"{acc}/subscriptions", json={"product_quantities": {"users": 1}}, headers=alice.headers)

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(create, range(6)))
    assert sorted(r.status_code for r in results) == [201] * 3 + [409] * 3, [r.get_json() for r in results]
    assert active_count(state, paying["account"]["id"]) == 3


def test_increase_is_prorated_now_decrease_not_credited(paying: dict[str, Any], state: Any) -> None:
    alice, acc = paying["alice"], paying["acc"]
    sub = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 10}}).json
    path = f"{acc}/subscriptions/{sub['id']}"
    alice.advance_clock({"days": 10})
    first_invoices = alice.get(f"{acc}/invoices").json["data"]
    assert alice.patch(path, {"product_quantities": {"users": 12}}).status_code == 200
    invoices = alice.get(f"{acc}/invoices").json["data"]
    assert len(invoices) == len(first_invoices) + 1
    proration = invoices[0]
    full_price = first_invoices[0]["lines"][0]["unit_amount"] * 2
    assert proration["status"] == "paid" and 0 < proration["amount_paid"] < full_price
    balance_before = state.gateway.client.v1.customers.retrieve(paying["account"]["id"]).balance
    assert alice.patch(path, {"product_quantities": {"users": 4}}).status_code == 200
    assert len(alice.get(f"{acc}/invoices").json["data"]) == len(invoices)  # no credit note, no invoice
    assert state.gateway.client.v1.customers.retrieve(paying["account"]["id"]).balance == balance_before
    # The next period bills the new quantity.
    alice.advance_clock({"days": 25})
    renewal = alice.get(f"{acc}/invoices").json["data"][0]
    assert [line["quantity"] for line in renewal["lines"]] == [4]


def test_increase_with_declining_card_changes_nothing(as_user: Any, state: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    account, _ = alice.account(ws), alice.account(ws)
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    visa = alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_visa"}).json
    sub = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 2}}).json
    declined = alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_chargeCustomerFail"}).json
    alice.client.put(f"{acc}/payment-methods/{declined['id']}", headers=alice.headers)
    path = f"{acc}/subscriptions/{sub['id']}"
    assert_error(alice.patch(path, {"add_products": {"users": 5, "sso": 1}}), 402, "card_declined")
    assert alice.get(path).json["product_quantities"] == sub["product_quantities"]
    assert visa["id"] != declined["id"]


def test_resume_paused_subscription_with_declining_card_is_402(as_user: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace("single")
    account = alice.account(ws)
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    sub = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 1}}).json
    alice.advance_clock({"days": 15})
    alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_chargeCustomerFail"})
    response = alice.patch(f"{acc}/subscriptions/{sub['id']}", {"action": "resume"})
    assert response.status_code == 402, response.json
    assert alice.get(f"{acc}/subscriptions/{sub['id']}").json["status"] == "paused"


def test_card_attached_before_its_webhook_arrives_is_used(as_user: Any, state: Any, webhooks_lost: None) -> None:
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    account, _ = alice.account(ws), alice.account(ws)
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    # Attached and kept in the copy, as the sandbox's attach did before it applied the
    # first-default rule itself: the copy knows the card, and its webhook has not come.
    card = state.gateway.attach_payment_method("pm_card_visa", account["id"], idempotency_key="card-before-webhook")
    assert state.gateway.client.v1.customers.retrieve(account["id"]).invoice_settings.default_payment_method is None
    response = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 1}})
    assert response.status_code == 201 and response.json["status"] == "active"
    assert state.gateway.client.v1.customers.retrieve(account["id"]).invoice_settings.default_payment_method == card.id


def test_account_delete_waits_for_a_subscription_being_created(
    paying: dict[str, Any], state: Any, subscribe_in_stripe: Any
) -> None:
    """Delete checks for subscriptions under the account's lease, which creation holds too."""
    import threading
    import time

    from billing.leases import account_lease_name, lease

    alice, account = paying["alice"], paying["account"]
    created = threading.Event()

    def in_flight_create() -> None:
        with lease(state.db, account_lease_name(account["id"])):
            created.set()
            time.sleep(0.3)  # the create is still talking to Stripe...
            subscribe_in_stripe(account["id"], {"users": 1})

    worker = threading.Thread(target=in_flight_create)
    worker.start()
    created.wait(5)
    response = alice.delete(paying["acc"])
    worker.join()
    assert_error(response, 422, "active_subscriptions_exist")
    assert not getattr(state.gateway.client.v1.customers.retrieve(account["id"]), "deleted", None)


def test_archive_after_a_subscription_in_flight_is_refused(
    paying: dict[str, Any], state: Any, subscribe_in_stripe: Any
) -> None:
    import threading
    import time

    from billing.leases import account_lease_name, lease

    alice, account = paying["alice"], paying["account"]
    started = threading.Event()

    def in_flight_create() -> None:
        with lease(state.db, account_lease_name(account["id"])):
            started.set()
            time.sleep(0.3)
            subscribe_in_stripe(account["id"], {"users": 1})

    worker = threading.Thread(target=in_flight_create)
    worker.start()
    started.wait(5)
    response = alice.delete(f"/workspaces/{paying['ws']}")
    worker.join()
    assert_error(response, 409, "workspace_not_empty")
    assert alice.get(f"/workspaces/{paying['ws']}").json["archived"] is False


def test_archive_refused_names_the_account_and_its_subscriptions(paying: dict[str, Any]) -> None:
    alice, acc, account = paying["alice"], paying["acc"], paying["account"]
    first = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 1}}).json
    second = alice.post(f"{acc}/subscriptions", {"product_quantities": {"sso": 1}}).json
    body = assert_error(alice.delete(f"/workspaces/{paying['ws']}"), 409, "workspace_not_empty")
    assert body["message"] == (
        f'Cancel the active subscriptions first: billing account "ACME Corp Billing" '
        f"({account['id']}) has {second['id']}, {first['id']}."
    )
