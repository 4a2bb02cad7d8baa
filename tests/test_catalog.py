"""The catalog command and the process price cache."""

from __future__ import annotations

import json
from typing import Any

from billing.catalog import all_lookup_keys, load_catalog, sync_catalog
from tests.helpers import wipe


def _count(state: Any, kind: str) -> int:
    return len(list(getattr(state.gateway.client.v1, kind).list({"limit": 100}).auto_paging_iter()))


def test_sync_from_empty_then_idempotent(app: Any, state: Any) -> None:
    wipe(app, keep_catalog=False)
    report = sync_catalog(state.gateway)
    assert len(report.products_created) == 3 and len(report.prices_created) == 30
    prices = state.gateway.prices_by_lookup_key(all_lookup_keys())
    assert set(prices) == set(all_lookup_keys())
    catalog = load_catalog()
    users_zar_year = prices["users_zar_year"]
    assert users_zar_year.unit_amount == catalog["users"]["year"]["zar"]
    assert users_zar_year.currency == "zar" and users_zar_year.recurring.interval == "year"
    before = (_count(state, "products"), _count(state, "prices"))
    again = sync_catalog(state.gateway)
    assert again.products_created == [] and again.prices_created == [] and again.prices_replaced == []
    assert again.unchanged == 30
    assert (_count(state, "products"), _count(state, "prices")) == before
    wipe(app, keep_catalog=False)


def test_changed_amount_replaces_the_price(app: Any, state: Any) -> None:
    wipe(app, keep_catalog=False)
    sync_catalog(state.gateway)
    old = state.gateway.prices_by_lookup_key(["sso_gbp_month"])["sso_gbp_month"]
    catalog = load_catalog()
    catalog["sso"]["month"]["gbp"] = 4200
    report = sync_catalog(state.gateway, catalog)
    assert report.prices_replaced == ["sso_gbp_month"] and report.unchanged == 29
    new = state.gateway.prices_by_lookup_key(["sso_gbp_month"])["sso_gbp_month"]
    assert new.id != old.id and new.unit_amount == 4200
    assert state.gateway.client.v1.prices.retrieve(old.id).active is False
    wipe(app, keep_catalog=False)


def test_cli_command(app: Any) -> None:
    result = app.test_cli_runner().invoke(args=["sync-catalog"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["unchanged"] == 30


def test_price_book_caches(state: Any, monkeypatch: Any) -> None:
    calls: list[int] = []
    original = state.gateway.prices_by_lookup_key
    monkeypatch.setattr(state.gateway, "prices_by_lookup_key", lambda keys: calls.append(1) or original(keys))
    state.prices.clear()
    first = state.prices.price_id("users", "usd", "month")
    for _ in range(20):
        assert state.prices.price_id("users", "usd", "month") == first
        state.prices.price_id("sso", "aud", "year")
    assert len(calls) == 1


def test_a_price_change_never_orphans_a_subscription(as_user: Any, state: Any) -> None:
    """Another worker changes a price (sync-catalog moves the lookup key to a new
    price and retires the old one) while this worker's price cache is warm:
    existing subscriptions keep their product and price, changes add to the same
    item, and new subscriptions get the new price."""
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    account, other = alice.account(ws), alice.account(ws, name="Other")
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    other_acc = f"/workspaces/{ws}/billing-accounts/{other['id']}"
    for path in (acc, other_acc):
        alice.post(f"/sandbox{path}/payment-methods", {"payment_method": "pm_card_visa"})
    sub = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 3}}).json
    old_price = sub["product_quantities"]["users"]["price_id"]

    catalog = load_catalog()
    catalog["users"]["month"]["usd"] += 100
    sync_catalog(state.gateway, catalog)  # state.prices is not cleared: the cache still names the old price
    new_price = state.gateway.prices_by_lookup_key(["users_usd_month"])["users_usd_month"].id
    assert new_price != old_price

    shown = alice.get(f"{acc}/subscriptions/{sub['id']}").json["product_quantities"]
    assert shown == {"users": {"price_id": old_price, "quantity": 3, "interval": "month"}}
    more = alice.patch(f"{acc}/subscriptions/{sub['id']}", {"add_products": {"users": 2}})
    assert more.status_code == 200, more.json
    assert more.json["product_quantities"] == {"users": {"price_id": old_price, "quantity": 5, "interval": "month"}}
    assert len(state.gateway.client.v1.subscriptions.retrieve(sub["id"])["items"].data) == 1
    fresh = alice.post(f"{other_acc}/subscriptions", {"product_quantities": {"users": 1}})
    assert fresh.status_code == 201, fresh.json
    assert fresh.json["product_quantities"]["users"]["price_id"] == new_price
