"""Stripe faults at each Stripe call of each route, through the real HTTP path.

The service runs with a (fake) live key, so every Stripe call goes through the
library's requests client; `responses` hands each HTTP request to the sandbox
(the brain behind a fake api.stripe.com) unless the fault plan says otherwise.
For every route and every Stripe call it makes, and for each kind of fault:
the right status and envelope, nothing half-written in our database, no lease
left behind, and a retry with the same Idempotency-Key that succeeds without
duplicating anything at Stripe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from billing.db import Base
from tests.helpers import FAULTS_API_KEY as API_KEY
from tests.helpers import Api, Plan, wipe

EXPECTED = {
    "500": (502, "stripe_unavailable"),
    "429": (429, "rate_limited"),
    "timeout": (503, "stripe_unavailable"),
    "reset": (503, "stripe_unavailable"),
    "malformed": (502, "stripe_unavailable"),
    "lost": (503, "stripe_unavailable"),
}


def build(world: dict[str, Any], auth: Any) -> dict[str, Any]:
    """A pooled workspace: account A with two cards and a paid subscription, account B bare."""
    app, brain = world["app"], world["brain"]
    alice = Api(app.test_client(), auth("alice"))
    ws = alice.workspace("pooled")
    a, b = alice.account(ws, name="A"), alice.account(ws, name="B")
    first = brain.attach_payment_method("pm_card_visa", a["id"], idempotency_key=f"w-{a['id']}-1")
    brain.set_default_payment_method(a["id"], first.id, idempotency_key=f"w-{a['id']}-d")
    second = brain.attach_payment_method("pm_card_amex", a["id"], idempotency_key=f"w-{a['id']}-2")
    acc_a = f"/workspaces/{ws}/billing-accounts/{a['id']}"
    sub = alice.post(f"{acc_a}/subscriptions", {"product_quantities": {"users": 2}})
    assert sub.status_code == 201, sub.json
    ws2 = alice.workspace("pooled", name="Empty")
    c = alice.account(ws2, name="C")  # the workspace's only account, never subscribed: a trial
    return {
        "acc_c": f"/workspaces/{ws2}/billing-accounts/{c['id']}",
        "c": c["id"],
        "alice": alice,
        "ws": ws,
        "ws2": ws2,
        "a": a["id"],
        "b": b["id"],
        "acc_a": acc_a,
        "acc_b": f"/workspaces/{ws}/billing-accounts/{b['id']}",
        "sub": sub.json["id"],
        "pm": second.id,
    }


ROUTES: list[tuple[str, Callable[[dict[str, Any]], tuple[str, str, Any]]]] = [
    ("list accounts", lambda w: ("GET", f"/workspaces/{w['ws']}/billing-accounts", None)),
    (
        "create account",
        lambda w: (
            "POST",
            f"/workspaces/{w['ws']}/billing-accounts",
            {"name": "New", "email": "n@x.co", "address": {"country": "US"}},
        ),
    ),
    ("get account", lambda w: ("GET", w["acc_b"], None)),
    ("update account", lambda w: ("PATCH", w["acc_b"], {"name": "Renamed"})),
    ("delete account", lambda w: ("DELETE", w["acc_b"], None)),
    ("archive workspace", lambda w: ("DELETE", f"/workspaces/{w['ws2']}", None)),
    ("list subscriptions", lambda w: ("GET", f"{w['acc_a']}/subscriptions", None)),
    ("create subscription", lambda w: ("POST", f"{w['acc_a']}/subscriptions", {"product_quantities": {"sso": 1}})),
    (
        "create trial subscription",
        lambda w: ("POST", f"{w['acc_c']}/subscriptions", {"product_quantities": {"users": 3}}),
    ),
    ("get subscription", lambda w: ("GET", f"{w['acc_a']}/subscriptions/{w['sub']}", None)),
    (
        "change subscription",
        lambda w: (
            "PATCH",
            f"{w['acc_a']}/subscriptions/{w['sub']}",
            {"product_quantities": {"users": 1, "locations": 2}},
        ),
    ),
    ("cancel subscription", lambda w: ("DELETE", f"{w['acc_a']}/subscriptions/{w['sub']}", None)),
    ("trial eligibility", lambda w: ("GET", f"{w['acc_a']}/trial-eligibility", None)),
    ("list payment methods", lambda w: ("GET", f"{w['acc_a']}/payment-methods", None)),
    ("setup intent", lambda w: ("POST", f"{w['acc_a']}/payment-methods", None)),
    ("set default", lambda w: ("PUT", f"{w['acc_a']}/payment-methods/{w['pm']}", None)),
    ("detach", lambda w: ("DELETE", f"{w['acc_a']}/payment-methods/{w['pm']}", None)),
    ("list invoices", lambda w: ("GET", f"{w['acc_a']}/invoices", None)),
    (
        "preview",
        lambda w: (
            "POST",
            f"{w['acc_a']}/invoices/preview",
            {"subscription_id": w["sub"], "items": [{"product_type": "users", "quantity": 5}]},
        ),
    ),
]


def service_state(app: Flask) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the service's own tables (the sandbox's are Stripe's business)."""
    state = app.extensions["billing"]
    snapshot = {}
    with state.db.read() as session:
        for table in Base.metadata.sorted_tables:
            # The copy of Stripe holds what Stripe answered, even to a request that then failed;
            # the request budget counts every attempt.
            if table.name.startswith("sandbox_") or table.name in (
                "idempotency_keys",
                "stripe_events",
                "stripe_copies",
                "stripe_budget_windows",
            ):
                continue
            columns = [c for c in table.columns if c.name not in ("updated_at",)]
            snapshot[table.name] = sorted(map(tuple, session.execute(select(*columns)).all()), key=repr)
    return snapshot


def stripe_state(world: dict[str, Any], w: dict[str, Any]) -> dict[str, Any]:
    """What matters at Stripe: customers, subscriptions with quantities, payment methods, setup intents."""
    client = world["brain"].client
    customers = sorted(
        (c.id, c.name, (c.invoice_settings.default_payment_method if c.invoice_settings else None))
        for c in client.v1.customers.list({"limit": 100}).auto_paging_iter()
    )
    subs = sorted(
        (
            s.id,
            s.status,
            bool(s.cancel_at_period_end),
            tuple(sorted((i.price.lookup_key, i.quantity) for i in s["items"].data)),
        )
        for s in client.v1.subscriptions.list({"status": "all", "limit": 100}).auto_paging_iter()
    )
    methods = sorted(m.id for m in client.v1.payment_methods.list({"customer": w["a"], "limit": 100}).data)
    intents = len(client.v1.setup_intents.list({"customer": w["a"], "limit": 100}).data)
    return {"customers": customers, "subscriptions": subs, "payment_methods": methods, "setup_intents": intents}


def send(w: dict[str, Any], method: str, path: str, body: Any, key: str) -> Any:
    alice = w["alice"]
    headers = {**alice.headers, "Idempotency-Key": key}
    return alice.client.open(path, method=method, json=body, headers=headers)


@pytest.mark.parametrize("name,route", ROUTES, ids=[r[0] for r in ROUTES])
def test_faults_at_every_stripe_call(
    stripe_world: dict[str, Any],
    session_app: Flask,
    auth: Any,
    name: str,
    monkeypatch: Any,
    route: Callable[[dict[str, Any]], tuple[str, str, Any]],
) -> None:
    fake, app = stripe_world["fake"], stripe_world["app"]
    real_time, later = time.time, 0.0

    def fresh() -> dict[str, Any]:
        wipe(session_app)
        app.extensions["billing"].prices.clear()  # the same Stripe calls every run, caches cold
        fake.plan = Plan()
        return build(stripe_world, auth)

    # The fault-free run: how many Stripe requests the route makes, and what it leaves.
    w = fresh()
    method, path, body = route(w)
    fake.plan = Plan()
    clean = send(w, method, path, body, "clean")
    assert clean.status_code < 300, (name, clean.status_code, clean.get_json())
    calls = fake.plan.seen
    if method == "GET" or name == "archive workspace":  # answered from the service's copy of Stripe
        assert calls == 0, name
        return
    assert calls >= 1, name

    for k in range(1, calls + 1):
        kinds = ["500", "reset", "lost"] + (["429", "timeout", "malformed"] if k == 1 else [])
        for kind in kinds:
            w = fresh()
            method, path, body = route(w)
            before_db, before_stripe = service_state(app), stripe_state(stripe_world, w)
            fake.plan = Plan(fail_from=k, kind=kind)
            response = send(w, method, path, body, f"retry-{k}-{kind}")
            status, code = EXPECTED[kind]
            where = f"{name}: fault {kind} at Stripe call {k}/{calls}"
            assert response.status_code == status, (where, response.status_code, response.get_json())
            payload = response.get_json()
            assert payload["code"] == code and payload["type"] and payload["request_id"], where
            assert API_KEY not in response.get_data(as_text=True) and "Traceback" not in response.get_data(as_text=True)
            after_db = service_state(app)
            assert after_db["leases"] == [], where
            if name == "create account" and kind in ("500", "reset", "lost", "timeout", "malformed"):
                # The outcome at Stripe is unknown: the reservation is kept, as pending, for the retry.
                pending = [r for r in after_db["billing_accounts"] if r not in before_db["billing_accounts"]]
                assert all(r[5] == "pending" or r[2] for r in pending), where  # state, customer_id
                after_db["billing_accounts"] = before_db["billing_accounts"]
            # Nothing reached Stripe's state, unless the fault came after a change went through: a
            # quantity change is two Stripe updates (charged increase, then uncredited decrease), and
            # a lost answer means Stripe did act. The retry below completes it, exactly once.
            partial = kind == "lost" or (name == "change subscription" and k == calls)
            if name == "change subscription" and k == calls:
                # The increase that went through is on the audit trail (as in the copy), nothing else.
                new = [r for r in after_db["audit_events"] if r not in before_db["audit_events"]]
                assert new and {r[5] for r in new} <= {"subscription.product_changed", "invoice.paid"}, where
                after_db["audit_events"] = before_db["audit_events"]
            assert after_db == before_db, where
            if not partial:
                assert stripe_state(stripe_world, w) == before_stripe, where

            if kind == "lost":  # what Stripe did reaches the copy, as its webhooks would bring it
                for customer in (w["a"], w["b"], w["c"]):
                    world_view = stripe_world["brain"]
                    if world_view.retrieve_customer(customer) is not None:
                        world_view.list_subscriptions(customer)
                        world_view.list_payment_methods(customer)
            # The client retries with the same key once Stripe is back, a second or more later
            # (anything stamped with the time differs): it works, once.
            fake.plan = Plan()
            later += 1.5
            monkeypatch.setattr(time, "time", lambda shift=later: real_time() + shift)
            retry = send(w, method, path, body, f"retry-{k}-{kind}")
            assert retry.status_code < 300, (where, "retry", retry.status_code, retry.get_json())
            if method != "GET":
                again = send(w, method, path, body, f"retry-{k}-{kind}")
                assert again.headers.get("Idempotent-Replayed") == "true", where
                assert again.status_code == retry.status_code, where
            after_stripe = stripe_state(stripe_world, w)
            assert len(after_stripe["customers"]) == len(before_stripe["customers"]) + (name == "create account") - (
                name == "delete account"
            ), where
            assert len(after_stripe["subscriptions"]) == len(before_stripe["subscriptions"]) + (
                name in ("create subscription", "create trial subscription")
            ), where
            assert after_stripe["setup_intents"] == before_stripe["setup_intents"] + (name == "setup intent"), where
            if name == "change subscription":
                [sub] = [s for s in after_stripe["subscriptions"] if s[0] == w["sub"]]
                assert sub[3] == (("locations_usd_month", 2), ("users_usd_month", 1)), where
            if name == "detach":
                assert w["pm"] not in after_stripe["payment_methods"], where
