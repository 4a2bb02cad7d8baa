"""Reads cost Stripe nothing: the copy of Stripe is kept true by writes, webhooks
and reconcile; an older view never overwrites a newer one; reads go on while
Stripe is down."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import stripe
from flask import Flask
from sqlalchemy import delete

from billing.instrumentation import InstrumentedHTTPClient
from billing.models import StripeCopy
from tests.builders import Builder
from tests.helpers import assert_error, count_stripe_requests, deliver


@pytest.fixture
def paying(as_user: Any, app: Flask) -> dict[str, Any]:
    """A pooled workspace, an account with a Visa card as default and a subscription of 2
    users (made through the services: the tests are about the copy, not the set-up)."""
    alice, build = as_user("alice"), Builder(app, "alice")
    with build.webhooks_at_the_end():
        ws = build.workspace("pooled")
        account = build.account(ws)
        build.account(ws, name="Second")  # two accounts: no trial
        card = build.card(ws, account["id"], "pm_card_visa")
        sub = build.subscription(ws, account["id"], {"users": 2})
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    return {"alice": alice, "ws": ws, "acc": acc, "customer": account["id"], "sub": sub["id"], "card": card["id"]}


def users(alice: Any, acc: str, sub: str) -> int:
    return int(alice.get(f"{acc}/subscriptions/{sub}").json["product_quantities"]["users"]["quantity"])


def sub_events(state: Any, sub: str) -> list[stripe.Event]:
    events = state.gateway.client.v1.events.list({"type": "customer.subscription.updated", "limit": 100}).data
    return [e for e in events if e.data.object.id == sub]


def change_behind_our_back(state: Any, sub: str, quantity: int) -> None:
    """A change made directly in Stripe (as from the Dashboard)."""
    client = state.gateway.client
    item = client.v1.subscriptions.retrieve(sub)["items"].data[0]
    client.v1.subscriptions.update(
        sub, {"items": [{"id": item.id, "quantity": quantity}], "proration_behavior": "none"}
    )


def test_webhooks_bring_changes_made_elsewhere(paying: dict[str, Any], state: Any) -> None:
    alice, acc, sub = paying["alice"], paying["acc"], paying["sub"]
    change_behind_our_back(state, sub, 7)
    assert users(alice, acc, sub) == 7


def test_out_of_order_and_concurrent_webhooks_end_at_the_newest(
    paying: dict[str, Any], state: Any, client: Any, app: Any, webhooks_lost: None, apply_now: Any
) -> None:
    alice, acc, sub = paying["alice"], paying["acc"], paying["sub"]
    for quantity in (3, 4, 5):
        change_behind_our_back(state, sub, quantity)
    assert users(alice, acc, sub) == 2  # no webhook arrived yet
    events = sub_events(state, sub)  # newest first
    assert len(events) >= 3
    payloads = [json.dumps(e.to_dict(), default=str).encode() for e in events]
    # Newest first, then all of them again at once: the copy ends at the newest view.
    assert deliver(client, payloads[0]).status_code == 200
    apply_now()
    assert users(alice, acc, sub) == 5
    for payload in payloads[1:]:
        assert deliver(client, payload).status_code == 200
    apply_now()
    assert users(alice, acc, sub) == 5

    def post(payload: bytes) -> int:
        with app.test_client() as c:
            return int(deliver(c, payload).status_code)

    with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
        assert set(pool.map(post, payloads)) == {200}
    apply_now()
    assert users(alice, acc, sub) == 5


def test_an_older_view_never_overwrites_a_newer_one(paying: dict[str, Any], state: Any, app: Any) -> None:
    """A fetch that started earlier (a slow webhook re-fetch, a reconcile page)
    is not stored over one that started later, whatever the order they finish in."""
    from billing.models import now_stamp, stamp_of
    from billing.replica import Keeper

    alice, acc, sub = paying["alice"], paying["acc"], paying["sub"]
    started_early = now_stamp() - stamp_of(5)
    old_view = state.gateway.client.v1.subscriptions.retrieve(sub).to_dict()
    old_view["items"]["data"][0]["quantity"] = 99
    Keeper(state.db).keep_data(old_view, started_early)
    assert users(alice, acc, sub) == 2
    Keeper(state.db).keep_data(old_view, now_stamp())  # a view fetched later does win
    assert users(alice, acc, sub) == 99


def test_duplicate_and_older_events_cost_no_stripe_request(
    paying: dict[str, Any], state: Any, client: Any, monkeypatch: Any, webhooks_lost: None, apply_now: Any
) -> None:
    alice, acc, sub = paying["alice"], paying["acc"], paying["sub"]
    change_behind_our_back(state, sub, 6)
    [event] = sub_events(state, sub)[:1]
    payload = json.dumps(event.to_dict(), default=str).encode()
    seen = count_stripe_requests(monkeypatch)
    assert deliver(client, payload).json == {"received": True, "duplicate": False}
    assert seen == []  # acknowledged without a Stripe request
    apply_now()
    assert len(seen) == 1 and seen[0].endswith(f"/v1/subscriptions/{sub}")  # one re-fetch
    assert deliver(client, payload).json == {"received": True, "duplicate": True}
    apply_now()
    assert len(seen) == 1
    # An event created well before the stored view was fetched: nothing to learn from Stripe.
    stale = event.to_dict()
    stale["id"], stale["created"] = "evt_stale_replay", int(time.time()) - 3600
    assert deliver(client, json.dumps(stale, default=str).encode()).status_code == 200
    apply_now()
    assert len(seen) == 1
    assert users(alice, acc, sub) == 6


def test_a_missed_webhook_is_healed_by_reconcile(
    paying: dict[str, Any], state: Any, webhooks_lost: None, reconcile_now: Any
) -> None:
    alice, acc, sub = paying["alice"], paying["acc"], paying["sub"]
    change_behind_our_back(state, sub, 9)
    assert users(alice, acc, sub) == 2
    report = reconcile_now()
    assert report.events_replayed >= 1
    assert users(alice, acc, sub) == 9
    assert reconcile_now().events_replayed == 0  # each event once


def test_reconcile_full_rebuilds_the_whole_copy(paying: dict[str, Any], state: Any, reconcile_now: Any) -> None:
    alice, acc = paying["alice"], paying["acc"]
    pages = {
        path: alice.get(path).json
        for path in (
            f"/workspaces/{paying['ws']}/billing-accounts",
            f"{acc}/subscriptions",
            f"{acc}/payment-methods",
            f"{acc}/invoices",
            f"{acc}/trial-eligibility",
        )
    }
    with state.db.write() as session:
        session.execute(delete(StripeCopy).where(StripeCopy.object_type != "product"))
    report = reconcile_now(full=True)
    assert report.copied_customers == 2

    def without_change_times(page: Any) -> Any:
        # When the copy saw a subscription change is history a rebuild can't recover.
        if isinstance(page, dict) and "data" in page:
            return {**page, "data": [{k: v for k, v in item.items() if k != "updated_at"} for item in page["data"]]}
        return page

    assert {path: without_change_times(alice.get(path).json) for path in pages} == {
        path: without_change_times(page) for path, page in pages.items()
    }


def test_stripe_down_reads_go_on_writes_are_503(paying: dict[str, Any], monkeypatch: Any) -> None:
    alice, acc, sub = paying["alice"], paying["acc"], paying["sub"]

    def down(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise stripe.APIConnectionError("Stripe is down")

    monkeypatch.setattr(InstrumentedHTTPClient, "request_with_retries", down)
    for path in (
        f"/workspaces/{paying['ws']}/billing-accounts",
        acc,
        f"{acc}/subscriptions",
        f"{acc}/subscriptions/{sub}",
        f"{acc}/payment-methods",
        f"{acc}/invoices",
        f"{acc}/trial-eligibility",
    ):
        response = alice.get(path)
        assert response.status_code == 200, (path, response.json)
    assert users(alice, acc, sub) == 2
    assert_error(alice.patch(acc, {"name": "Renamed"}), 503, "stripe_unavailable")
    assert_error(alice.patch(f"{acc}/subscriptions/{sub}", {"add_products": {"users": 1}}), 503, "stripe_unavailable")


def test_read_your_writes_after_each_write(paying: dict[str, Any], webhooks_lost: None) -> None:
    """With no webhook arriving at all, each write is visible to the next read."""
    alice, acc, sub, ws = paying["alice"], paying["acc"], paying["sub"], paying["ws"]
    accounts = f"/workspaces/{ws}/billing-accounts"
    created = alice.post(accounts, {"name": "Third", "email": "t@x.co", "address": {"country": "GB"}}).json
    assert created in alice.get(accounts).json["data"]
    renamed = alice.patch(acc, {"name": "Renamed"}).json
    assert alice.get(acc).json == renamed and renamed["name"] == "Renamed"
    assert alice.delete(f"{accounts}/{created['id']}").status_code == 204
    assert created["id"] not in [a["id"] for a in alice.get(accounts).json["data"]]

    patched = alice.patch(f"{acc}/subscriptions/{sub}", {"add_products": {"users": 3, "sso": 1}}).json
    assert alice.get(f"{acc}/subscriptions/{sub}").json == patched
    assert {p: v["quantity"] for p, v in patched["product_quantities"].items()} == {"users": 5, "sso": 1}
    paused = alice.patch(f"{acc}/subscriptions/{sub}", {"action": "pause"}).json
    assert alice.get(f"{acc}/subscriptions/{sub}").json["status"] == paused["status"] == "paused"
    alice.patch(f"{acc}/subscriptions/{sub}", {"action": "resume"})
    canceled = alice.delete(f"{acc}/subscriptions/{sub}").json
    assert alice.get(f"{acc}/subscriptions").json["data"][0] == canceled and canceled["cancel_at_period_end"]
    second = alice.post(f"{acc}/subscriptions", {"product_quantities": {"locations": 1}}).json
    assert alice.get(f"{acc}/subscriptions").json["data"][0]["id"] == second["id"]

    amex = alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_amex"}).json
    assert amex["id"] in [m["id"] for m in alice.get(f"{acc}/payment-methods").json["data"]]
    assert alice.client.put(f"{acc}/payment-methods/{amex['id']}", headers=alice.headers).status_code == 200
    methods = {m["id"]: m["is_default"] for m in alice.get(f"{acc}/payment-methods").json["data"]}
    assert methods == {amex["id"]: True, paying["card"]: False}
    assert alice.delete(f"{acc}/payment-methods/{paying['card']}").status_code == 204
    assert [m["id"] for m in alice.get(f"{acc}/payment-methods").json["data"]] == [amex["id"]]
    invoices = alice.get(f"{acc}/invoices").json["data"]
    # The first charge, the prorated increase, the second subscription's: each came back
    # expanded with the write that caused it.
    assert len(invoices) == 3 and all(i["status"] == "paid" for i in invoices)


def test_updated_at_moves_with_each_change(paying: dict[str, Any]) -> None:
    """Stripe keeps no update time: a subscription's updated_at is when the
    service's copy saw it change, so a quantity PATCH, a pause and a resume move it."""
    alice, acc, sub = paying["alice"], paying["acc"], paying["sub"]
    path = f"{acc}/subscriptions/{sub}"
    seen = [alice.get(path).json["updated_at"]]
    for body in ({"add_products": {"users": 1}}, {"action": "pause"}, {"action": "resume"}):
        time.sleep(0.01)
        changed = alice.patch(path, body)
        assert changed.status_code == 200, changed.json
        assert changed.json["updated_at"] > seen[-1], body
        assert alice.get(path).json == changed.json  # the same view, read back
        seen.append(changed.json["updated_at"])
    unchanged = alice.patch(path, {"action": "sync"}).json  # nothing changed: nothing moves
    assert alice.get(path).json["updated_at"] == seen[-1] == unchanged["updated_at"]


def test_updated_at_moves_when_a_trial_ends_in_stripe(as_user: Any) -> None:
    """The trial ends without a payment method (Stripe pauses it): updated_at is
    when the copy saw that, on Stripe's clock (the sandbox's, moved by the advance)."""
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    acc = f"/workspaces/{ws}/billing-accounts/{alice.account(ws)['id']}"
    sub = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 2}}).json
    assert sub["status"] == "trialing"
    alice.advance_clock({"days": 15})
    paused = alice.get(f"{acc}/subscriptions/{sub['id']}").json
    assert paused["status"] == "paused"
    assert paused["updated_at"] >= paused["trial_end"] > sub["updated_at"]


def test_updated_at_moves_when_a_renewal_fails_in_stripe(paying: dict[str, Any], state: Any) -> None:
    """A renewal charged to a card that declines: Stripe makes it past_due, and updated_at follows."""
    from schemas.common import format_timestamp

    alice, acc, sub = paying["alice"], paying["acc"], paying["sub"]
    path = f"{acc}/subscriptions/{sub}"
    failing = alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_chargeCustomerFail"}).json
    assert alice.client.put(f"{acc}/payment-methods/{failing['id']}", headers=alice.headers).status_code == 200
    end = state.gateway.client.v1.subscriptions.retrieve(sub)["items"].data[0].current_period_end
    alice.advance_clock({"seconds": end - state.sandbox_clock.now() + 60})  # renewed; its invoice is a draft
    assert alice.get(path).json["status"] == "active"
    before = format_timestamp(state.sandbox_clock.now())
    alice.advance_clock({"hours": 1})  # the renewal is charged, and declined
    failed = alice.get(path).json
    assert failed["status"] == "past_due" and failed["updated_at"] >= before


def test_after_the_sandbox_clock_moves_a_view_fetched_since_an_event_arrived_costs_nothing(
    paying: dict[str, Any], state: Any, client: Any, monkeypatch: Any, webhooks_lost: None, apply_now: Any
) -> None:
    """One clock, ours: a view fetched after the event reached us holds its change
    (an advance dates its events in the past, so their `created` can't say)."""
    alice, acc, sub = paying["alice"], paying["acc"], paying["sub"]
    monkeypatch.setattr(state.webhooks, "after_run", None)  # no worker runs until apply_now()
    state.sandbox_clock.advance(days=3)
    change_behind_our_back(state, sub, 8)
    [event] = sub_events(state, sub)[:1]
    assert deliver(client, json.dumps(event.to_dict(), default=str).encode()).status_code == 200
    # Before a worker gets to it, a user's write stores a newer view of the subscription.
    assert alice.patch(f"{acc}/subscriptions/{sub}", {"metadata": {"k": "v"}}).status_code == 200
    seen = count_stripe_requests(monkeypatch)
    apply_now()
    assert seen == []
    assert users(alice, acc, sub) == 8
