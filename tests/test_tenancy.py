"""Cross-tenant matrix: every route, every way of reaching another tenant."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

import jwt
import pytest
from flask import Flask

from billing.stripe_ids import intent_id
from tests.builders import Builder
from tests.helpers import TEST_ENV, assert_error

VALID_BODIES = {
    ("POST", "subscriptions"): {"product_quantities": {"users": 1}},
    ("PATCH", "subscription"): {"action": "pause"},
    ("POST", "preview"): {"items": [{"product_type": "users", "quantity": 1}]},
    ("POST", "test-pm"): {"payment_method": "pm_card_visa"},
    ("POST", "tax-ids"): {"type": "eu_vat", "value": "DE123456789"},
    ("POST", "confirm"): {"payment_method": "pm_card_visa"},
    ("PATCH", "workspace"): {"name": "Hijacked"},
    ("POST", "members"): {"user_id": "mallory2", "role": "owner"},
    ("PATCH", "member"): {"role": "viewer"},
    ("POST", "accounts"): {"name": "Evil", "email": "evil@example.com", "address": {"country": "US"}},
    ("PATCH", "account"): {"name": "Hijacked"},
    ("POST", "orgs"): {"name": "Evil"},
    ("PATCH", "org"): {"name": "Hijacked"},
    ("POST", "children"): {"name": "Evil"},
    ("POST", "usage"): {"product": "users", "delta": 1},
    ("POST", "authenticate"): {"client_secret": "pi_unknown_secret_unknown", "outcome": "succeed"},
}

ROUTES = [
    ("GET", "workspace", "/workspaces/{ws}"),
    ("PATCH", "workspace", "/workspaces/{ws}"),
    ("DELETE", "workspace", "/workspaces/{ws}"),
    ("GET", "members", "/workspaces/{ws}/members"),
    ("POST", "members", "/workspaces/{ws}/members"),
    ("PATCH", "member", "/workspaces/{ws}/members/{user}"),
    ("DELETE", "member", "/workspaces/{ws}/members/{user}"),
    ("GET", "accounts", "/workspaces/{ws}/billing-accounts"),
    ("POST", "accounts", "/workspaces/{ws}/billing-accounts"),
    ("GET", "account", "/workspaces/{ws}/billing-accounts/{acc}"),
    ("PATCH", "account", "/workspaces/{ws}/billing-accounts/{acc}"),
    ("DELETE", "account", "/workspaces/{ws}/billing-accounts/{acc}"),
    ("GET", "subscriptions", "/workspaces/{ws}/billing-accounts/{acc}/subscriptions"),
    ("POST", "subscriptions", "/workspaces/{ws}/billing-accounts/{acc}/subscriptions"),
    ("GET", "subscription", "/workspaces/{ws}/billing-accounts/{acc}/subscriptions/{sub}"),
    ("PATCH", "subscription", "/workspaces/{ws}/billing-accounts/{acc}/subscriptions/{sub}"),
    ("DELETE", "subscription", "/workspaces/{ws}/billing-accounts/{acc}/subscriptions/{sub}"),
    ("GET", "trial", "/workspaces/{ws}/billing-accounts/{acc}/trial-eligibility"),
    ("GET", "pms", "/workspaces/{ws}/billing-accounts/{acc}/payment-methods"),
    ("POST", "pms", "/workspaces/{ws}/billing-accounts/{acc}/payment-methods"),
    ("PUT", "pm", "/workspaces/{ws}/billing-accounts/{acc}/payment-methods/{pm}"),
    ("DELETE", "pm", "/workspaces/{ws}/billing-accounts/{acc}/payment-methods/{pm}"),
    ("GET", "tax-ids", "/workspaces/{ws}/billing-accounts/{acc}/tax-ids"),
    ("POST", "tax-ids", "/workspaces/{ws}/billing-accounts/{acc}/tax-ids"),
    ("DELETE", "tax-id", "/workspaces/{ws}/billing-accounts/{acc}/tax-ids/{txi}"),
    ("GET", "tax-status", "/workspaces/{ws}/billing-accounts/{acc}/tax-status"),
    ("GET", "invoices", "/workspaces/{ws}/billing-accounts/{acc}/invoices"),
    ("POST", "preview", "/workspaces/{ws}/billing-accounts/{acc}/invoices/preview"),
    ("POST", "test-pm", "/sandbox/workspaces/{ws}/billing-accounts/{acc}/payment-methods"),
    ("POST", "confirm", "/sandbox/workspaces/{ws}/billing-accounts/{acc}/setup-intents/{seti}/confirm"),
    ("POST", "authenticate", "/sandbox/workspaces/{ws}/billing-accounts/{acc}/authenticate"),
    ("GET", "orgs", "/workspaces/{ws}/organizations"),
    ("POST", "orgs", "/workspaces/{ws}/organizations"),
    ("GET", "org", "/workspaces/{ws}/organizations/{org}"),
    ("PATCH", "org", "/workspaces/{ws}/organizations/{org}"),
    ("DELETE", "org", "/workspaces/{ws}/organizations/{org}"),
    ("POST", "children", "/workspaces/{ws}/organizations/{org}/children"),
    ("GET", "parent", "/workspaces/{ws}/organizations/{org}/parent"),
    ("GET", "descendants", "/workspaces/{ws}/organizations/{org}/descendants"),
    ("GET", "limits", "/workspaces/{ws}/organizations/{org}/limits"),
    ("POST", "usage", "/workspaces/{ws}/organizations/{org}/usage"),
    ("GET", "capacity", "/workspaces/{ws}/capacity"),
    ("GET", "audit", "/workspaces/{ws}/audit-events"),
]
# Reads for viewers: every GET, and the invoice preview (it changes nothing).
READS = {("POST", "preview")}
ACCOUNT_ROUTES = [r for r in ROUTES if "{acc}" in r[2] or "{org}" in r[2]]
WRITES = [r for r in ROUTES if r[0] != "GET" and (r[0], r[1]) not in READS]
# Reads for owners and admins only: the audit trail.
ADMIN_READS = {("GET", "audit")}
REFUSED_TO_VIEWERS = WRITES + [r for r in ROUTES if (r[0], r[1]) in ADMIN_READS]


def call(api: Any, method: str, kind: str, path: str) -> Any:
    body = VALID_BODIES.get((method, kind))
    if method == "GET":
        return api.get(path)
    if method == "DELETE":
        return api.delete(path)
    if method == "PUT":
        return api.client.put(path, headers=api.headers)
    return getattr(api, method.lower())(path, body)


@pytest.fixture
def tenants(as_user: Any, app: Flask) -> dict[str, Any]:
    """Alice's workspace and account; Bob's workspace with everything the routes name (a
    subscription, a card, a SetupIntent, organizations with usage), made through the
    services (the tests are about the routes, not their set-up)."""
    alice, bob = as_user("alice"), as_user("bob")
    build_a, build_b = Builder(app, "alice"), Builder(app, "bob")
    with build_b.webhooks_at_the_end():
        ws_a = build_a.workspace(name="A")
        ws_b = build_b.workspace("single", name="B")
        build_b.add_member(ws_b, "victor", "viewer")
        acc_a = build_a.account(ws_a, name="A's account")
        acc_b = build_b.account(ws_b, name="B's account")
        sub_b = build_b.subscription(ws_b, acc_b["id"], {"users": 1})
        pm_b = build_b.card(ws_b, acc_b["id"], "pm_card_visa")
        txi_b = build_b.tax_id(ws_b, acc_b["id"], "eu_vat", "DE123456789")
        seti_b = intent_id(build_b.setup_intent(ws_b, acc_b["id"])["client_secret"])
        root_b = build_b.organization(ws_b, name="B root", billing_account_id=acc_b["id"])
        org_b = build_b.organization(ws_b, root_b["id"], name="B team")
        build_b.usage(ws_b, org_b["id"], "users", 1)
    b = f"/workspaces/{ws_b}/billing-accounts/{acc_b['id']}"
    return {
        "alice": alice,
        "bob": bob,
        "ws_a": ws_a,
        "ws_b": ws_b,
        "acc_a": acc_a,
        "acc_b": acc_b,
        "sub_b": sub_b,
        "pm_b": pm_b,
        "txi_b": txi_b,
        "seti_b": seti_b,
        "b": b,
        "org_b": org_b,
    }


def fill(template: str, t: dict[str, Any], ws: str, user: str) -> str:
    return template.format(
        ws=ws,
        acc=t["acc_b"]["id"],
        user=user,
        sub=t["sub_b"]["id"],
        pm=t["pm_b"]["id"],
        txi=t["txi_b"]["id"],
        seti=t["seti_b"],
        org=t["org_b"]["id"],
    )


def _b_unchanged(t: dict[str, Any], state: Any) -> None:
    bob, b = t["bob"], t["b"]
    assert bob.get(f"/workspaces/{t['ws_b']}").json["name"] == "B"
    assert bob.get(f"/workspaces/{t['ws_b']}").json["archived"] is False
    members = {m["user_id"]: m["role"] for m in bob.get(f"/workspaces/{t['ws_b']}/members").json["data"]}
    assert members == {"bob": "owner", "victor": "viewer"}
    accounts = bob.get(f"/workspaces/{t['ws_b']}/billing-accounts").json["data"]
    assert [a["name"] for a in accounts] == ["B's account"]
    customer = state.gateway.client.v1.customers.retrieve(t["acc_b"]["id"])
    assert customer.name == "B's account" and not getattr(customer, "deleted", None)
    assert customer.invoice_settings.default_payment_method == t["pm_b"]["id"]
    subs = bob.get(f"{b}/subscriptions").json["data"]
    assert [(s["id"], s["status"], s["cancel_at_period_end"]) for s in subs] == [(t["sub_b"]["id"], "trialing", False)]
    assert [m["id"] for m in bob.get(f"{b}/payment-methods").json["data"]] == [t["pm_b"]["id"]]
    assert [x["id"] for x in bob.get(f"{b}/tax-ids").json["data"]] == [t["txi_b"]["id"]]
    assert [x.id for x in state.gateway.client.v1.customers.tax_ids.list(t["acc_b"]["id"]).data] == [t["txi_b"]["id"]]
    assert state.gateway.client.v1.setup_intents.retrieve(t["seti_b"]).status == "requires_payment_method"
    organizations = bob.get(f"/workspaces/{t['ws_b']}/organizations").json["data"]
    assert [(o["name"], o["usage"]["subtree_usage"]["users"]) for o in organizations] == [("B root", 1), ("B team", 1)]


@pytest.mark.parametrize("method,kind,template", ROUTES, ids=[f"{m} {p}" for m, _, p in ROUTES])
def test_non_member_gets_404_on_other_workspace(
    tenants: dict[str, Any], state: Any, method: str, kind: str, template: str
) -> None:
    t = tenants
    path = fill(template, t, t["ws_b"], "victor")
    assert_error(call(t["alice"], method, kind, path), 404, "not_found")
    _b_unchanged(t, state)


@pytest.mark.parametrize("method,kind,template", ACCOUNT_ROUTES, ids=[f"{m} {p}" for m, _, p in ACCOUNT_ROUTES])
def test_other_workspaces_account_under_own_workspace_is_404(
    tenants: dict[str, Any], state: Any, method: str, kind: str, template: str
) -> None:
    t = tenants
    path = fill(template, t, t["ws_a"], "alice")
    assert_error(call(t["alice"], method, kind, path), 404, "not_found")
    _b_unchanged(t, state)


@pytest.mark.parametrize("method,kind,template", REFUSED_TO_VIEWERS, ids=[f"{m} {p}" for m, _, p in REFUSED_TO_VIEWERS])
def test_viewer_gets_403_on_writes(
    tenants: dict[str, Any], as_user: Any, state: Any, method: str, kind: str, template: str
) -> None:
    t = tenants
    victor = as_user("victor")
    path = fill(template, t, t["ws_b"], "bob")
    assert_error(call(victor, method, kind, path), 403, "permission_denied")
    _b_unchanged(t, state)


# The path parameters of the routes (their rules) as this matrix's templates name them.
TEMPLATE_NAMES = {
    "workspaceId": "ws",
    "billingAccountId": "acc",
    "memberId": "user",
    "subscriptionId": "sub",
    "paymentMethodId": "pm",
    "taxId": "txi",
    "setupIntentId": "seti",
    "organizationId": "org",
}


def test_the_matrix_checks_the_role_every_route_declares(session_app: Any) -> None:
    """The role a route declares (@route_facts, which the document's 403 says) is
    the one enforced: every workspace route is in this matrix, those a viewer
    may not use among the writes a viewer gets 403 on, the others among the reads."""
    from billing.openapi import view_facts

    declared: dict[tuple[str, str], str | None] = {}
    for rule in session_app.url_map.iter_rules():
        if "<workspaceId>" not in rule.rule:
            continue
        template = re.sub(r"<(\w+)>", lambda m: "{" + TEMPLATE_NAMES[m.group(1)] + "}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            facts = view_facts(session_app.view_functions[rule.endpoint], method)
            assert facts is not None and facts.role is not None, (method, rule.rule)
            declared[(method, template)] = facts.refusal
    assert {route for route, refusal in declared.items() if refusal} == {(m, p) for m, _, p in REFUSED_TO_VIEWERS}
    assert set(declared) == {(m, p) for m, _, p in ROUTES}


def _tokens() -> dict[str, dict[str, str]]:
    now = int(time.time())
    base = {"sub": "bob", "iss": TEST_ENV["JWT_ISSUER"], "aud": TEST_ENV["JWT_AUDIENCE"]}
    expired = jwt.encode({**base, "exp": now - 300}, TEST_ENV["JWT_SECRET"], algorithm="HS256")
    forged = jwt.encode({**base, "exp": now + 300}, "not-the-secret-but-long-enough-0123456789", algorithm="HS256")
    return {
        "none": {},
        "expired": {"Authorization": f"Bearer {expired}"},
        "forged": {"Authorization": f"Bearer {forged}"},
    }


@pytest.mark.parametrize("method,kind,template", ROUTES, ids=[f"{m} {p}" for m, _, p in ROUTES])
def test_bad_tokens_get_401_everywhere(
    tenants: dict[str, Any], client: Any, state: Any, method: str, kind: str, template: str
) -> None:
    t = tenants
    path = fill(template, t, t["ws_b"], "victor")
    for headers in _tokens().values():
        response = client.open(path, method=method, json=VALID_BODIES.get((method, kind)), headers=headers)
        assert_error(response, 401, "authentication_required")
    _b_unchanged(t, state)


@pytest.mark.parametrize(
    "method,kind,template",
    [r for r in ROUTES if (r[0] == "GET" or (r[0], r[1]) in READS) and (r[0], r[1]) not in ADMIN_READS],
    ids=lambda v: str(v),
)
def test_viewer_reads_everything(tenants: dict[str, Any], as_user: Any, method: str, kind: str, template: str) -> None:
    response = call(as_user("victor"), method, kind, fill(template, tenants, tenants["ws_b"], "bob"))
    assert response.status_code == 200, response.json


def test_sandbox_clock_needs_a_token(client: Any) -> None:
    assert_error(client.post("/sandbox/clock/advance", json={"days": 1}), 401, "authentication_required")
    assert_error(client.get("/sandbox/clock"), 401, "authentication_required")


def stripe_count(response: Any) -> str:
    """The Stripe call count that Server-Timing shows (`stripe;dur=...;desc="N"`)."""
    match = re.search(r'stripe;dur=[\d.]+;desc="(\d+)"', response.headers["Server-Timing"])
    assert match, response.headers["Server-Timing"]
    return match.group(1)


# (method, path, body): {ws}, {acc} and {id} are filled with alice's own workspace and account
# (or a foreign/random one where the template says so) and the object aimed at.
PROBES = [
    ("GET", "/workspaces/{id}", None),
    ("PATCH", "/workspaces/{id}", {"name": "Hijacked"}),
    ("DELETE", "/workspaces/{id}", None),
    ("GET", "/workspaces/{ws}/billing-accounts/{id}", None),
    ("PATCH", "/workspaces/{ws}/billing-accounts/{id}", {"name": "Hijacked"}),
    ("DELETE", "/workspaces/{ws}/billing-accounts/{id}", None),
    ("GET", "/workspaces/{ws}/billing-accounts/{acc}/subscriptions/{id}", None),
    ("PATCH", "/workspaces/{ws}/billing-accounts/{acc}/subscriptions/{id}", {"action": "pause"}),
    ("PATCH", "/workspaces/{ws}/billing-accounts/{acc}/subscriptions/{id}", {"product_quantities": {"users": 2}}),
    ("DELETE", "/workspaces/{ws}/billing-accounts/{acc}/subscriptions/{id}", None),
    ("POST", "/workspaces/{ws}/billing-accounts/{acc}/invoices/preview", "subscription"),
    ("PUT", "/workspaces/{ws}/billing-accounts/{acc}/payment-methods/{id}", None),
    ("DELETE", "/workspaces/{ws}/billing-accounts/{acc}/payment-methods/{id}", None),
    ("DELETE", "/workspaces/{ws}/billing-accounts/{acc}/tax-ids/{id}", None),
]


def targets_of(template: str, t: dict[str, Any]) -> dict[str, str]:
    """Another tenant's existing object, and an id of the same kind that exists nowhere."""
    if template == "/workspaces/{id}":
        return {"foreign": t["ws_b"], "random": "ws_" + secrets.token_hex(12)}
    if template.endswith("billing-accounts/{id}"):
        return {"foreign": t["acc_b"]["id"], "random": "cus_" + secrets.token_hex(7)}
    if "payment-methods" in template:
        return {"foreign": t["pm_b"]["id"], "random": "pm_" + secrets.token_hex(12)}
    if "tax-ids" in template:
        return {"foreign": t["txi_b"]["id"], "random": "txi_" + secrets.token_hex(12)}
    return {"foreign": t["sub_b"]["id"], "random": "sub_" + secrets.token_hex(12)}


def stripe_counts_of_404s(
    t: dict[str, Any], method: str, template: str, body: Any, targets: dict[str, str]
) -> dict[str, str]:
    alice = t["alice"]
    counts = {}
    for name, target in targets.items():
        path = template.format(ws=t["ws_a"], acc=t["acc_a"]["id"], id=target)
        json = {"subscription_id": target, "cancel_subscription": True} if body == "subscription" else body
        response = alice.client.open(path, method=method, json=json, headers=alice.headers)
        assert_error(response, 404, "not_found")
        counts[name] = stripe_count(response)
    return counts


@pytest.mark.parametrize("method,template,body", PROBES, ids=[f"{m} {p} {b}" for m, p, b in PROBES])
def test_a_404_costs_the_same_stripe_calls_whether_the_object_exists(
    tenants: dict[str, Any], state: Any, method: str, template: str, body: Any
) -> None:
    """Server-Timing counts Stripe calls: another tenant's object and an id that exists
    nowhere must cost the same, or the count would tell which ids exist. Both cost
    none: tenancy is checked before Stripe is asked anything."""
    counts = stripe_counts_of_404s(tenants, method, template, body, targets_of(template, tenants))
    assert set(counts.values()) == {"0"}, counts
    _b_unchanged(tenants, state)


def test_a_detached_cards_404_costs_what_an_unknown_ids_does(tenants: dict[str, Any]) -> None:
    t = tenants
    bob, b = t["bob"], t["b"]
    bob.post(f"/sandbox{b}/payment-methods", {"payment_method": "pm_card_mastercard"})
    detached = next(m["id"] for m in bob.get(f"{b}/payment-methods").json["data"] if m["id"] != t["pm_b"]["id"])
    assert bob.delete(f"{b}/payment-methods/{detached}").status_code == 204
    template = "/workspaces/{ws}/billing-accounts/{acc}/payment-methods/{id}"
    counts = stripe_counts_of_404s(
        t, "DELETE", template, None, {"detached": detached, "random": "pm_" + secrets.token_hex(12)}
    )
    assert counts["detached"] == counts["random"], counts
