"""Concurrent creates: the billing-mode limit holds, and Stripe and the index agree."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.test_billing_accounts import FULL, index_rows


def _create_concurrently(app: Any, headers: dict[str, str], ws: str, n: int) -> list[Any]:
    def create(i: int) -> Any:
        with app.test_client() as client:
            return client.post(f"/workspaces/{ws}/billing-accounts", json={**FULL, "name": f"Racer {i}"},
                               headers=headers)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(create, range(n)))


@pytest.mark.parametrize("mode,limit", [("single", 1), ("pooled", 10)])
def test_concurrent_creates_respect_the_limit(app: Any, as_user: Any, auth: Any, state: Any,
                                              mode: str, limit: int) -> None:
    ws = as_user("alice").workspace(mode)
    responses = _create_concurrently(app, auth("alice"), ws, 20)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * limit + [409] * (20 - limit), [r.get_json() for r in responses]
    assert all(r.get_json()["code"] == "billing_account_limit_reached" for r in responses if r.status_code == 409)
    created = {r.get_json()["id"] for r in responses if r.status_code == 201}
    rows = index_rows(state, ws)
    assert {r.customer_id for r in rows} == created and all(r.state == "active" for r in rows)
    # Every Stripe customer of this workspace has exactly one index row: none orphaned, none twice.
    in_stripe = [c.id for c in state.gateway.iter_customers() if c.metadata.to_dict().get("workspace_id") == ws]
    assert sorted(in_stripe) == sorted(created)


def test_concurrent_increments_of_one_subscription_are_never_lost(app: Any, as_user: Any, auth: Any,
                                                                  state: Any) -> None:
    """Twenty concurrent `add_products: {users: 1}`: each applies to the state the
    previous one left (or is refused with 409), and what is charged matches."""
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    account, _ = alice.account(ws), alice.account(ws, name="Second")
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_visa"})
    sub = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 2}}).json
    headers = auth("alice")

    def increment(_: int) -> Any:
        with app.test_client() as client:
            return client.patch(f"{acc}/subscriptions/{sub['id']}", json={"add_products": {"users": 1}},
                                headers=headers)

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(increment, range(20)))
    ok = [r for r in responses if r.status_code == 200]
    assert all(r.status_code == 409 and r.get_json()["code"] == "operation_in_progress"
               for r in responses if r.status_code != 200), [r.get_json() for r in responses]
    assert len(ok) >= 10
    stripe_sub = state.gateway.client.v1.subscriptions.retrieve(sub["id"])
    assert stripe_sub["items"].data[0].quantity == 2 + len(ok)
    assert alice.get(f"{acc}/subscriptions/{sub['id']}").json["product_quantities"]["users"]["quantity"] == 2 + len(ok)
    # Charges equal quantities: one prorated invoice per increase, each for exactly one more user.
    invoices = state.gateway.client.v1.invoices.list({"customer": account["id"], "limit": 100}).data
    increases = [i for i in invoices if i.billing_reason == "subscription_update"]
    assert len(increases) == len(ok)
    quantities = sorted(line.quantity for i in increases for line in i.lines.data if line.amount > 0)
    assert quantities == list(range(3, 3 + len(ok)))


def test_the_payment_method_limit_holds_at_attach_time(app: Any, as_user: Any, auth: Any, state: Any) -> None:
    """20 SetupIntents made at once, each then confirmed (as Stripe.js would):
    Stripe attaches every one, and the service detaches all but five; the
    sandbox's attach route refuses a sixth outright."""
    alice = as_user("alice")
    ws = alice.workspace()
    account = alice.account(ws)
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    headers = auth("alice")

    def setup_intent(_: int) -> Any:
        with app.test_client() as client:
            return client.post(f"{acc}/payment-methods", headers=headers)

    with ThreadPoolExecutor(max_workers=20) as pool:
        intents = [r.get_json()["client_secret"].split("_secret_")[0]
                   for r in pool.map(setup_intent, range(20)) if r.status_code == 201]
    assert len(intents) == 20

    def confirm(intent: str) -> Any:
        with app.test_client() as client:
            return client.post(f"/sandbox{acc}/setup-intents/{intent}/confirm", json={"payment_method": "pm_card_visa"},
                               headers=headers)

    with ThreadPoolExecutor(max_workers=10) as pool:
        assert {r.status_code for r in pool.map(confirm, intents)} == {200}
    attached = state.gateway.client.v1.customers.payment_methods.list(account["id"], {"limit": 100}).data
    assert len(attached) == 5
    listed = alice.get(f"{acc}/payment-methods").json["data"]
    assert sorted(m["id"] for m in listed) == sorted(m.id for m in attached)
    assert sum(m["is_default"] for m in listed) == 1
    sixth = alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_mastercard"})
    assert sixth.status_code == 409 and sixth.json["code"] == "payment_method_limit_reached"
