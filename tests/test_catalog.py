"""The catalog command and the process price cache."""

from __future__ import annotations

import json
from typing import Any

from billing.catalog import all_lookup_keys, load_catalog, sync_catalog
from tests.conftest import wipe


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
