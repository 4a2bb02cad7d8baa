"""Concurrent creates: the billing-mode limit holds, and Stripe and the index agree."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from billing.stripe_ids import intent_id
from billing.subscriptions.invoice_limits import MARGIN, PER_MINUTE
from tests.helpers import FULL, index_rows


def _create_concurrently(app: Any, headers: dict[str, str], ws: str, n: int) -> list[Any]:
    def create(i: int) -> Any:
        with app.test_client() as client:
            return client.post(
                f"/workspaces/{ws}/billing-accounts", json={**FULL, "name": f"Racer {i}"}, headers=headers
            )

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(create, range(n)))


@pytest.mark.parametrize("mode,limit", [("single", 1), ("pooled", 10)])
def test_concurrent_creates_respect_the_limit(
    app: Any, as_user: Any, auth: Any, state: Any, mode: str, limit: int
) -> None:
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


def _pooled_subscription(as_user: Any, auth: Any) -> tuple[Any, str, dict[str, Any], dict[str, str]]:
    """Alice's pooled workspace (two accounts, so no trial): alice, the first account's path,
    its subscription of 2 users on a card, and her headers."""
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    account, _ = alice.account(ws), alice.account(ws, name="Second")
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_visa"})
    sub = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 2}}).json
    return alice, acc, sub, auth("alice")


def test_concurrent_increments_of_one_subscription_are_never_lost(
    app: Any, as_user: Any, auth: Any, state: Any
) -> None:
    """Twenty concurrent `add_products: {users: 1}`: each applies to the state the
    previous one left (or is refused with 409), and what is charged matches."""
    alice, acc, sub, headers = _pooled_subscription(as_user, auth)

    def increment(_: int) -> Any:
        with app.test_client() as client:
            return client.patch(
                f"{acc}/subscriptions/{sub['id']}", json={"add_products": {"users": 1}}, headers=headers
            )

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(increment, range(20)))
    ok = [r for r in responses if r.status_code == 200]
    assert all(
        r.status_code == 409 and r.get_json()["code"] == "operation_in_progress"
        for r in responses
        if r.status_code != 200
    ), [r.get_json() for r in responses]
    assert len(ok) >= 10
    stripe_sub = state.gateway.client.v1.subscriptions.retrieve(sub["id"])
    assert stripe_sub["items"].data[0].quantity == 2 + len(ok)
    assert alice.get(f"{acc}/subscriptions/{sub['id']}").json["product_quantities"]["users"]["quantity"] == 2 + len(ok)
    # Charges equal quantities: one proration per increase, each for exactly one more user, on an
    # invoice made at once or, past Stripe's limits on the subscription's invoices (a minute's 10
    # less the margin), waiting for the next one (billing.subscriptions.invoice_limits).
    customer = acc.rsplit("/", 1)[-1]
    invoices = state.gateway.client.v1.invoices.list({"customer": customer, "limit": 100}).data
    increases = [i for i in invoices if i.billing_reason == "subscription_update"]
    assert len(increases) == min(len(ok), PER_MINUTE - MARGIN - 1)  # its first invoice is of the same minute
    waiting = state.gateway.client.v1.invoice_items.list({"customer": customer, "pending": True, "limit": 100}).data
    quantities = sorted(
        [line.quantity for i in increases for line in i.lines.data if line.amount > 0]
        + [item.quantity for item in waiting if item.amount > 0]
    )
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
        intents = [
            intent_id(r.get_json()["client_secret"]) for r in pool.map(setup_intent, range(20)) if r.status_code == 201
        ]
    assert len(intents) == 20

    def confirm(intent: str) -> Any:
        with app.test_client() as client:
            return client.post(
                f"/sandbox{acc}/setup-intents/{intent}/confirm",
                json={"payment_method": "pm_card_visa"},
                headers=headers,
            )

    with ThreadPoolExecutor(max_workers=10) as pool:
        assert {r.status_code for r in pool.map(confirm, intents)} == {200}
    attached = state.gateway.client.v1.customers.payment_methods.list(account["id"], {"limit": 100}).data
    assert len(attached) == 5
    listed = alice.get(f"{acc}/payment-methods").json["data"]
    assert sorted(m["id"] for m in listed) == sorted(m.id for m in attached)
    assert sum(m["is_default"] for m in listed) == 1
    sixth = alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_mastercard"})
    assert sixth.status_code == 409 and sixth.json["code"] == "payment_method_limit_reached"


def test_concurrent_attaches_through_the_sandbox_never_pass_five(app: Any, as_user: Any, auth: Any, state: Any) -> None:
    """Twelve attaches at once through `/sandbox/.../payment-methods`, a path the
    service drives itself: the count and the attach run under the customer's lease,
    so five are attached (201) and seven refused (409) before reaching Stripe."""
    alice = as_user("alice")
    ws = alice.workspace()
    account = alice.account(ws)
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    headers = auth("alice")

    def attach(_: int) -> Any:
        with app.test_client() as client:
            return client.post(
                f"/sandbox{acc}/payment-methods", json={"payment_method": "pm_card_visa"}, headers=headers
            )

    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(attach, range(12)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 5 + [409] * 7, [r.get_json() for r in responses]
    assert {r.get_json()["code"] for r in responses if r.status_code == 409} == {"payment_method_limit_reached"}
    attached = state.gateway.client.v1.customers.payment_methods.list(account["id"], {"limit": 100}).data
    assert sorted(m.id for m in attached) == sorted(r.get_json()["id"] for r in responses if r.status_code == 201)
    assert sum(r.get_json()["is_default"] for r in responses if r.status_code == 201) == 1


def test_each_concurrent_change_answers_with_its_own_increment(
    app: Any, as_user: Any, auth: Any, state: Any, webhooks_lost: None
) -> None:
    """Twenty concurrent `add_products: {users: 1}` while the queue worker keeps
    re-reading the subscription (as it does for each event): a re-read that
    started during a change but read Stripe before it may be stored over the
    change's own view; each answer still shows its own increment."""
    alice, acc, sub, headers = _pooled_subscription(as_user, auth)
    done = threading.Event()

    def worker_rereads() -> int:
        reads = 0
        while not done.is_set():
            with app.app_context():
                state.gateway.retrieve_subscription(sub["id"])
            reads += 1
        return reads

    def increment(_: int) -> Any:
        with app.test_client() as client:
            return client.patch(
                f"{acc}/subscriptions/{sub['id']}", json={"add_products": {"users": 1}}, headers=headers
            )

    with ThreadPoolExecutor(max_workers=1) as rereader, ThreadPoolExecutor(max_workers=10) as pool:
        reads = rereader.submit(worker_rereads)
        try:
            responses = list(pool.map(increment, range(20)))
        finally:
            done.set()
        assert reads.result() > 0
    answered = sorted(
        r.get_json()["product_quantities"]["users"]["quantity"] for r in responses if r.status_code == 200
    )
    assert answered == list(range(3, 3 + len(answered))), answered  # each its own: no answer repeats another's
    stripe_sub = state.gateway.client.v1.subscriptions.retrieve(sub["id"])
    assert stripe_sub["items"].data[0].quantity == 2 + len(answered)


def test_a_change_overtaken_by_an_older_read_still_answers_with_itself(
    as_user: Any, state: Any, monkeypatch: Any, webhooks_lost: None
) -> None:
    """The interleaving, made certain: a queue worker's re-read starts while a
    change is at Stripe, reads the subscription before the change, and is
    stored with its later stamp over the change's view. The change's answer
    and the copy still show the change, at the cost of one more read."""
    from billing.gateway import LATEST_INVOICE_EXPANSIONS
    from billing.models import now_stamp
    from tests.helpers import count_stripe_requests

    paying = as_user("alice").account_without_trial()
    alice, acc = paying["alice"], paying["acc"]
    alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_visa"})
    sub = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 2}}).json
    path = f"{acc}/subscriptions/{sub['id']}"
    seen = count_stripe_requests(monkeypatch)
    plain = alice.patch(path, {"add_products": {"users": 1}})
    assert plain.json["product_quantities"]["users"]["quantity"] == 3
    assert [call.split(" ")[0] for call in seen] == ["GET", "POST"], seen  # no read more: nothing overtook it

    subscriptions = state.gateway.client.v1.subscriptions
    update = subscriptions.update

    def overtaken(subscription_id: str, *args: Any, **kw: Any) -> Any:
        read_started = now_stamp()  # while the change is at Stripe (its view is stamped earlier)
        before = subscriptions.retrieve(subscription_id, {"expand": LATEST_INVOICE_EXPANSIONS})
        state.gateway.keep(before, read_started)  # stored before the change's answer is
        return update(subscription_id, *args, **kw)

    monkeypatch.setattr(subscriptions, "update", overtaken)
    seen.clear()
    changed = alice.patch(path, {"add_products": {"users": 1}})
    assert changed.status_code == 200, changed.json
    assert changed.json["product_quantities"]["users"]["quantity"] == 4
    assert alice.get(path).json == changed.json
    assert [call.split(" ")[0] for call in seen] == ["GET", "GET", "POST", "GET"], seen

    seen.clear()
    cancelled = alice.delete(path)
    assert cancelled.status_code == 200 and cancelled.json["cancel_at_period_end"] is True
    assert alice.get(path).json == cancelled.json


def test_concurrent_member_adds_stop_at_100(app: Any, as_user: Any, auth: Any, state: Any) -> None:
    """90 members, then 20 adds at once: 10 are 201, 10 are 409 member_limit_reached, 100 remain
    (the adds count under the workspace's row lock: on PostgreSQL, each count sees the adds before it)."""
    from billing.models import Member

    ws = as_user("alice").workspace()
    with state.db.write() as session:
        session.add_all(Member(workspace_id=ws, user_id=f"member-{i}", role="viewer") for i in range(89))
    headers = auth("alice")
    barrier = threading.Barrier(20)

    def add(i: int) -> Any:
        with app.test_client() as client:
            barrier.wait(10)
            return client.post(
                f"/workspaces/{ws}/members", json={"user_id": f"racer-{i}", "role": "viewer"}, headers=headers
            )

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(add, range(20)))
    assert sorted(r.status_code for r in responses) == [201] * 10 + [409] * 10, [r.get_json() for r in responses]
    assert all(r.get_json()["code"] == "member_limit_reached" for r in responses if r.status_code == 409)
    with state.db.read() as session:
        assert session.query(Member).filter(Member.workspace_id == ws).count() == 100
