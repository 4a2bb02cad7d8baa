"""Taxes (API.md, "Taxes"): Stripe Tax on every bill, tax IDs on billing accounts.

Amounts are computed here by hand from the catalog's prices (billing/catalog.toml) and the
countries' standard rates: South Africa 15 %, Australia 10 %, Germany 19 %.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask

from billing.tax_ids.service import MAX_TAX_IDS
from tests.helpers import assert_error, count_stripe_requests

INVOICE_FIELDS = ("currency", "subtotal", "tax", "total", "amount_due", "discount_amount")
LINE_FIELDS = ("description", "amount", "currency", "quantity", "price_id", "unit_amount", "product_name")


@pytest.fixture
def taxed(state: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """STRIPE_TAX=1, on a platform registered in GB, DE, ZA and AU (the sandbox's setting)."""
    monkeypatch.setattr(state, "config", dataclasses.replace(state.config, stripe_tax=True))
    monkeypatch.setenv("SANDBOX_TAX_REGISTRATIONS", "GB,DE,ZA,AU")


def paying_account(as_user: Any, country: str, currency: str, **address: str) -> dict[str, Any]:
    """A card-paying account of a pooled workspace with two accounts (no trial): {alice, ws, id, acc}."""
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    account = alice.account(ws, currency=currency, address={"country": country, **address})
    alice.account(ws, name="Second", currency=currency, address={"country": country, **address})
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    response = alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_visa"})
    assert response.status_code == 201, response.json
    return {"alice": alice, "ws": ws, "id": account["id"], "acc": acc}


def shown(invoice: dict[str, Any]) -> tuple[Any, ...]:
    return (
        tuple(invoice[f] for f in INVOICE_FIELDS),
        [tuple(line[f] for f in LINE_FIELDS) for line in invoice["lines"]],
    )


def preview_then_subscribe(
    account: dict[str, Any], quantities: dict[str, int]
) -> tuple[dict[str, Any], dict[str, Any]]:
    alice, acc = account["alice"], account["acc"]
    items = [{"product_type": p, "quantity": q} for p, q in quantities.items()]
    preview = alice.post(f"{acc}/invoices/preview", {"items": items})
    assert preview.status_code == 200, preview.json
    created = alice.post(f"{acc}/subscriptions", {"product_quantities": quantities})
    assert created.status_code == 201, created.json
    invoices = alice.get(f"{acc}/invoices").json["data"]
    assert len(invoices) == 1
    return preview.json, invoices[0]


@pytest.mark.parametrize(
    "country,currency,quantities,subtotal,tax",
    [
        # South Africa, 15 %: 3 users at R145.00 = R435.00; VAT R65.25.
        ("ZA", "zar", {"users": 3}, 3 * 14500, 6525),
        # Australia, 10 %: 2 users at A$12.00 and 1 location at A$23.00 = A$47.00; GST A$4.70.
        ("AU", "aud", {"users": 2, "locations": 1}, 2 * 1200 + 2300, 470),
    ],
)
def test_vat_and_gst_at_the_countrys_standard_rate_and_the_preview_is_the_invoice(
    taxed: None, as_user: Any, country: str, currency: str, quantities: dict[str, int], subtotal: int, tax: int
) -> None:
    account = paying_account(as_user, country, currency)
    assert account["alice"].get(f"{account['acc']}/tax-status").json["taxability_reason"] is None  # nothing billed yet
    preview, invoice = preview_then_subscribe(account, quantities)
    assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == (subtotal, tax, subtotal + tax)
    assert (invoice["status"], invoice["amount_paid"]) == ("paid", subtotal + tax)
    assert sum(line["amount"] for line in invoice["lines"]) == subtotal  # lines are before tax
    assert shown(preview) == shown(invoice)
    status = account["alice"].get(f"{account['acc']}/tax-status").json
    assert (status["taxability_reason"], status["reverse_charge"]) == ("standard_rated", False)


def test_a_german_customer_of_a_platform_registered_only_in_gb_pays_no_tax(
    taxed: None, as_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stripe Tax collects only where the platform is registered: `not_collecting`, tax 0."""
    monkeypatch.setenv("SANDBOX_TAX_REGISTRATIONS", "GB")
    preview, invoice = preview_then_subscribe(paying_account(as_user, "DE", "eur"), {"users": 2})
    assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == (1500, 0, 1500)
    assert shown(preview) == shown(invoice)


def test_a_german_business_with_a_verified_vat_number_is_reverse_charged(
    taxed: None, as_user: Any, state: Any, client: Any
) -> None:
    """GB platform registered in DE: VAT 19 % while the number is pending, reverse charge once verified."""
    account = paying_account(as_user, "DE", "eur")
    alice, acc = account["alice"], account["acc"]
    preview = alice.post(f"{acc}/invoices/preview", {"items": [{"product_type": "users", "quantity": 2}]}).json
    assert (preview["subtotal"], preview["tax"], preview["total"]) == (1500, 285, 1785)  # 19 % of 15.00 EUR
    added = alice.post(f"{acc}/tax-ids", {"type": "eu_vat", "value": "DE000000000"})
    assert added.status_code == 201, added.json
    assert added.json["verification"] == {"status": "pending"}
    alice.advance_clock({"seconds": 30})  # VIES answers; customer.tax_id.updated is applied
    assert [t["verification"]["status"] for t in alice.get(f"{acc}/tax-ids").json["data"]] == ["verified"]
    preview, invoice = preview_then_subscribe(account, {"users": 2})
    assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == (1500, 0, 1500)
    assert shown(preview) == shown(invoice)
    stripe_invoice = state.gateway.client.v1.invoices.retrieve(invoice["id"])
    assert [t.taxability_reason for t in stripe_invoice.total_taxes] == ["reverse_charge"]
    assert alice.get(f"{acc}/tax-status").json == {
        "automatic_tax": True,
        "tax_exempt": "none",
        "taxability_reason": "reverse_charge",
        "reverse_charge": True,
        "invoice_id": invoice["id"],
    }
    page = client.get(urlsplit(invoice["hosted_invoice_url"]).path)  # what the customer reads
    assert "reverse charge" in page.get_data(as_text=True)


def test_a_tax_id_moves_from_pending_to_verified_by_webhook(taxed: None, as_user: Any, app: Flask) -> None:
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    account = alice.account(ws, address={"country": "GB"}, currency="gbp")
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    added = alice.post(f"{acc}/tax-ids", {"type": "gb_vat", "value": "GB000000000"})
    assert added.status_code == 201
    body = added.json
    assert set(body) == {"id", "type", "value", "country", "verification", "created_at"}
    assert (body["type"], body["value"], body["country"], body["verification"]) == (
        "gb_vat",
        "GB000000000",
        "GB",
        {"status": "pending"},
    )
    assert body["id"].startswith("txi_") and body["created_at"].endswith("Z")
    assert alice.get(f"{acc}/tax-ids").json == {"data": [body], "has_more": False}
    alice.advance_clock({"seconds": 30})
    assert alice.get(f"{acc}/tax-ids").json["data"] == [{**body, "verification": {"status": "verified"}}]


def test_stripes_failing_test_number_reads_unverified(taxed: None, as_user: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    acc = f"/workspaces/{ws}/billing-accounts/{alice.account(ws, address={'country': 'FR'})['id']}"
    alice.post(f"{acc}/tax-ids", {"type": "eu_vat", "value": "FR11111111111"})
    alice.advance_clock({"seconds": 30})
    assert [t["verification"]["status"] for t in alice.get(f"{acc}/tax-ids").json["data"]] == ["unverified"]


def test_a_value_stripe_refuses_is_422_and_nothing_is_added(as_user: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    acc = f"/workspaces/{ws}/billing-accounts/{alice.account(ws)['id']}"
    body = assert_error(alice.post(f"{acc}/tax-ids", {"type": "eu_vat", "value": "DE12"}), 422, "tax_id_invalid")
    assert body["errors"] == {"value": ["Invalid value for eu_vat."]}
    assert_error(alice.post(f"{acc}/tax-ids", {"type": "xx_vat", "value": "1"}), 422, "validation_failed")
    assert alice.get(f"{acc}/tax-ids").json["data"] == []


def test_at_most_five_tax_ids_the_sixth_never_reaches_stripe(as_user: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    acc = f"/workspaces/{ws}/billing-accounts/{alice.account(ws)['id']}"
    for i in range(MAX_TAX_IDS):
        assert alice.post(f"{acc}/tax-ids", {"type": "au_abn", "value": f"1234567890{i}"}).status_code == 201
    calls = count_stripe_requests(monkeypatch)
    assert_error(alice.post(f"{acc}/tax-ids", {"type": "au_abn", "value": "12345678999"}), 409, "tax_id_limit_reached")
    assert calls == []
    assert len(alice.get(f"{acc}/tax-ids").json["data"]) == MAX_TAX_IDS


def test_delete_and_another_accounts_tax_id_is_404(as_user: Any, state: Any) -> None:
    alice, bob = as_user("alice"), as_user("bob")
    ws_a, ws_b = alice.workspace("pooled"), bob.workspace("pooled")
    acc_a = f"/workspaces/{ws_a}/billing-accounts/{alice.account(ws_a)['id']}"
    account_b = bob.account(ws_b)
    acc_b = f"/workspaces/{ws_b}/billing-accounts/{account_b['id']}"
    theirs = bob.post(f"{acc_b}/tax-ids", {"type": "za_vat", "value": "4123456789"}).json
    assert_error(alice.delete(f"{acc_a}/tax-ids/{theirs['id']}"), 404, "not_found")
    assert [t["id"] for t in bob.get(f"{acc_b}/tax-ids").json["data"]] == [theirs["id"]]
    assert bob.delete(f"{acc_b}/tax-ids/{theirs['id']}").status_code == 204
    assert bob.get(f"{acc_b}/tax-ids").json["data"] == []
    assert state.gateway.client.v1.customers.tax_ids.list(account_b["id"]).data == []


def test_an_address_stripe_tax_cant_place_is_422_before_anything_is_made(
    taxed: None, as_user: Any, state: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    customers_before = len(state.gateway.client.v1.customers.list({"limit": 100}).data)
    body = {"name": "No ZIP", "email": "a@example.com", "address": {"country": "US"}}
    refused = assert_error(alice.post(f"/workspaces/{ws}/billing-accounts", body), 422, "tax_location_invalid")
    assert refused["errors"] == {"address": {"postal_code": ["Stripe Tax can't compute tax from this address."]}}
    assert alice.get(f"/workspaces/{ws}/billing-accounts").json["data"] == []
    assert len(state.gateway.client.v1.customers.list({"limit": 100}).data) == customers_before
    fine = alice.account(ws, address={"country": "US", "postal_code": "94107"})
    acc = f"/workspaces/{ws}/billing-accounts/{fine['id']}"
    refused = assert_error(alice.patch(acc, {"address": {"country": "US"}}), 422, "tax_location_invalid")
    assert refused["errors"] == {"address": {"postal_code": ["Stripe Tax can't compute tax from this address."]}}
    assert alice.get(acc).json["address"]["postal_code"] == "94107"


def test_a_subscription_for_an_address_stripe_tax_cant_place_is_422_and_makes_nothing(
    as_user: Any, state: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An account made before STRIPE_TAX was set, whose address Stripe Tax can't use."""
    account = paying_account(as_user, "US", "usd")
    monkeypatch.setattr(state, "config", dataclasses.replace(state.config, stripe_tax=True))
    alice, acc = account["alice"], account["acc"]
    refused = assert_error(
        alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 1}}), 422, "tax_location_invalid"
    )
    assert refused["errors"] == {"address": {"postal_code": ["Stripe Tax can't compute tax from this address."]}}
    assert state.gateway.client.v1.subscriptions.list({"customer": account["id"]}).data == []
    assert_error(
        alice.post(f"{acc}/invoices/preview", {"items": [{"product_type": "users", "quantity": 1}]}),
        422,
        "tax_location_invalid",
    )


def test_without_stripe_tax_invoices_carry_no_tax(as_user: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_TAX_REGISTRATIONS", "GB,DE,ZA,AU")
    preview, invoice = preview_then_subscribe(paying_account(as_user, "ZA", "zar"), {"users": 1})
    assert (invoice["tax"], invoice["total"]) == (None, 14500)
    assert shown(preview) == shown(invoice)


def test_a_tax_id_deleted_in_stripe_leaves_the_account_by_webhook(as_user: Any, state: Any, apply_now: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    account = alice.account(ws)
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    made = alice.post(f"{acc}/tax-ids", {"type": "za_vat", "value": "4123456789"}).json
    state.gateway.client.v1.customers.tax_ids.delete(account["id"], made["id"])  # the Dashboard, say
    apply_now()
    assert alice.get(f"{acc}/tax-ids").json["data"] == []


def test_a_tax_id_added_verified_and_removed_is_on_the_audit_trail(taxed: None, as_user: Any) -> None:
    """A tax ID is part of a workspace's billing: each change has its entry (issue 24), the
    caller's for what the request did, Stripe's for the verification that settled later."""
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    account = alice.account(ws, address={"country": "GB"}, currency="gbp")
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    tax_id = alice.post(f"{acc}/tax-ids", {"type": "gb_vat", "value": "GB000000000"}).json["id"]
    alice.advance_clock({"seconds": 30})
    assert alice.delete(f"{acc}/tax-ids/{tax_id}").status_code == 204
    entries = alice.get(f"/workspaces/{ws}/audit-events", query_string={"target_id": tax_id}).json["data"]
    assert [(e["action"], e["actor"]["type"], e["changes"]) for e in reversed(entries)] == [
        (
            "tax_id.added",
            "user",
            {
                "type": {"before": None, "after": "gb_vat"},
                "value": {"before": None, "after": "GB000000000"},
                "country": {"before": None, "after": "GB"},
                "verification": {"before": None, "after": "pending"},
            },
        ),
        ("tax_id.verification_changed", "stripe", {"verification": {"before": "pending", "after": "verified"}}),
        (
            "tax_id.removed",
            "user",
            {
                "type": {"before": "gb_vat", "after": None},
                "value": {"before": "GB000000000", "after": None},
                "country": {"before": "GB", "after": None},
            },
        ),
    ]
    assert entries[1]["stripe_event_id"].startswith("evt_")
