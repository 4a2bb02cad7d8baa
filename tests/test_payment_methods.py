"""Payment methods: list, SetupIntent, default, detach guards; the default learned from webhooks."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import assert_error


@pytest.fixture
def acct(as_user: Any) -> dict[str, Any]:
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    account = alice.account(ws)
    return {"alice": alice, "ws": ws, "account": account, "acc": f"/workspaces/{ws}/billing-accounts/{account['id']}"}


def attach(acct: dict[str, Any], token: str) -> dict[str, Any]:
    response = acct["alice"].post(f"/sandbox{acct['acc']}/payment-methods", {"payment_method": token})
    assert response.status_code == 201, response.json
    return dict(response.json)


def default_of(state: Any, customer_id: str) -> Any:
    return state.gateway.client.v1.customers.retrieve(customer_id).invoice_settings.default_payment_method


def test_list_all_types_with_default(acct: dict[str, Any]) -> None:
    alice, acc = acct["alice"], acct["acc"]
    assert alice.get(f"{acc}/payment-methods").json == {"data": [], "has_more": False}
    card = attach(acct, "pm_card_visa")
    bank = attach(acct, "pm_usBankAccount")
    listed = {m["id"]: m for m in alice.get(f"{acc}/payment-methods").json["data"]}
    assert listed[card["id"]] == {
        "id": card["id"],
        "type": "card",
        "is_default": True,
        "brand": "visa",
        "last4": "4242",
        "exp_month": listed[card["id"]]["exp_month"],
        "exp_year": listed[card["id"]]["exp_year"],
        "name": listed[card["id"]]["name"],
        "bank_name": None,
    }
    assert listed[card["id"]]["exp_year"] > 2000
    assert listed[bank["id"]]["type"] == "us_bank_account" and listed[bank["id"]]["is_default"] is False
    assert listed[bank["id"]]["bank_name"] == "STRIPE TEST BANK" and listed[bank["id"]]["brand"] is None


def test_setup_intent_and_first_method_becomes_default(acct: dict[str, Any], state: Any) -> None:
    alice, acc = acct["alice"], acct["acc"]
    response = alice.post(f"{acc}/payment-methods")
    assert response.status_code == 201
    assert set(response.json) == {"id", "client_secret", "publishable_key"}
    secret, intent_id = response.json["client_secret"], response.json["id"]
    assert secret.startswith(f"{intent_id}_secret_") and response.json["publishable_key"].startswith("pk_")
    assert default_of(state, acct["account"]["id"]) is None
    confirmed = alice.post(f"/sandbox{acc}/setup-intents/{intent_id}/confirm", {"payment_method": "pm_card_mastercard"})
    assert confirmed.status_code == 200 and confirmed.json["status"] == "succeeded"
    # The service learned of it from Stripe's webhook and made it the default.
    assert default_of(state, acct["account"]["id"]) == confirmed.json["payment_method"]
    second = attach(acct, "pm_card_visa")
    assert default_of(state, acct["account"]["id"]) == confirmed.json["payment_method"] != second["id"]


def test_at_most_five_payment_methods(acct: dict[str, Any], state: Any) -> None:
    for _ in range(5):
        attach(acct, "pm_card_visa")
    intents_before = len(list(state.gateway.client.v1.setup_intents.list({"customer": acct["account"]["id"]})))
    assert_error(acct["alice"].post(f"{acct['acc']}/payment-methods"), 409, "payment_method_limit_reached")
    assert len(list(state.gateway.client.v1.setup_intents.list({"customer": acct["account"]["id"]}))) == intents_before


def test_set_default(acct: dict[str, Any], state: Any) -> None:
    alice, acc = acct["alice"], acct["acc"]
    first, second = attach(acct, "pm_card_visa"), attach(acct, "pm_card_amex")
    response = alice.client.put(f"{acc}/payment-methods/{second['id']}", headers=alice.headers)
    assert response.status_code == 200 and response.json == {"message": "Default payment method updated"}
    assert default_of(state, acct["account"]["id"]) == second["id"]
    listed = {m["id"]: m["is_default"] for m in alice.get(f"{acc}/payment-methods").json["data"]}
    assert listed == {first["id"]: False, second["id"]: True}
    assert_error(alice.client.put(f"{acc}/payment-methods/pm_nope", headers=alice.headers), 404, "not_found")


def test_detach_guards(acct: dict[str, Any], state: Any) -> None:
    alice, acc = acct["alice"], acct["acc"]
    only = attach(acct, "pm_card_visa")
    assert_error(alice.delete(f"{acc}/payment-methods/{only['id']}"), 422, "cannot_detach_only_payment_method")
    other = attach(acct, "pm_card_amex")
    alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 1}})  # trial: an active subscription
    assert_error(alice.delete(f"{acc}/payment-methods/{only['id']}"), 422, "cannot_detach_default_with_subscriptions")
    assert len(alice.get(f"{acc}/payment-methods").json["data"]) == 2
    assert alice.delete(f"{acc}/payment-methods/{other['id']}").status_code == 204
    assert [m["id"] for m in alice.get(f"{acc}/payment-methods").json["data"]] == [only["id"]]


def test_detach_default_without_subscriptions(acct: dict[str, Any], state: Any) -> None:
    alice, acc = acct["alice"], acct["acc"]
    first, second = attach(acct, "pm_card_visa"), attach(acct, "pm_card_amex")
    assert alice.delete(f"{acc}/payment-methods/{first['id']}").status_code == 204
    assert [m["id"] for m in alice.get(f"{acc}/payment-methods").json["data"]] == [second["id"]]


def test_other_customers_payment_method_is_404(acct: dict[str, Any], as_user: Any, state: Any) -> None:
    alice, ws = acct["alice"], acct["ws"]
    other_account = alice.account(ws)
    theirs = attach({"alice": alice, "acc": f"/workspaces/{ws}/billing-accounts/{other_account['id']}"}, "pm_card_visa")
    attach(acct, "pm_card_visa")
    acc = acct["acc"]
    assert_error(alice.client.put(f"{acc}/payment-methods/{theirs['id']}", headers=alice.headers), 404, "not_found")
    assert_error(alice.delete(f"{acc}/payment-methods/{theirs['id']}"), 404, "not_found")
    assert default_of(state, acct["account"]["id"]) != theirs["id"]


def attached_in_stripe(state: Any, acct: dict[str, Any], token: str) -> dict[str, Any]:
    """Attached behind the service's back (Stripe.js, the Dashboard): it learns of it from the webhook."""
    return dict(state.gateway.client.v1.payment_methods.attach(token, {"customer": acct["account"]["id"]}).to_dict())


def test_the_first_card_the_service_attaches_is_the_default_at_once(
    acct: dict[str, Any], state: Any, webhooks_lost: None
) -> None:
    """Whatever the attach's own answer tells the service shows at once, before
    any webhook: the 201, the list, trial eligibility and a create agree."""
    alice, acc = acct["alice"], acct["acc"]
    acct["alice"].account(acct["ws"], name="Second")  # no trial: a subscription needs the card
    card = attach(acct, "pm_card_visa")
    assert card["is_default"] is True
    assert default_of(state, acct["account"]["id"]) == card["id"]
    assert [(m["id"], m["is_default"]) for m in alice.get(f"{acc}/payment-methods").json["data"]] == [
        (card["id"], True)
    ]
    eligibility = alice.get(f"{acc}/trial-eligibility").json
    assert (eligibility["has_payment_method"], eligibility["can_create_subscription"]) == (True, True)
    assert alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 1}}).status_code == 201
    second = attach(acct, "pm_card_amex")
    assert second["is_default"] is False


def test_reconcile_sets_a_missing_default(
    reconcile_now: Any, acct: dict[str, Any], state: Any, webhooks_lost: None
) -> None:
    card = attached_in_stripe(state, acct, "pm_card_visa")
    assert default_of(state, acct["account"]["id"]) is None  # the webhook never came
    report = reconcile_now()
    assert report.events_replayed >= 1  # the missed payment_method.attached, handled as its webhook
    assert default_of(state, acct["account"]["id"]) == card["id"]
    listed = acct["alice"].get(f"{acct['acc']}/payment-methods").json["data"]
    assert [(m["id"], m["is_default"]) for m in listed] == [(card["id"], True)]


def test_detached_method_of_someone_else_is_404(acct: dict[str, Any], state: Any) -> None:
    alice, ws = acct["alice"], acct["ws"]
    other = alice.account(ws)
    theirs = attach({"alice": alice, "acc": f"/workspaces/{ws}/billing-accounts/{other['id']}"}, "pm_card_visa")
    state.gateway.client.v1.payment_methods.detach(theirs["id"])
    attach(acct, "pm_card_visa")
    attach(acct, "pm_card_amex")
    response = alice.client.delete(
        f"{acct['acc']}/payment-methods/{theirs['id']}", headers={**alice.headers, "Idempotency-Key": "guess"}
    )
    assert_error(response, 404, "not_found")


def test_reconcile_restores_a_default_lost_twice(
    reconcile_now: Any, acct: dict[str, Any], state: Any, webhooks_lost: None
) -> None:
    """Each repair is a new Stripe call: a key reused from the last repair would
    make Stripe replay that call instead of setting the default again."""
    card = attached_in_stripe(state, acct, "pm_card_visa")
    customer = acct["account"]["id"]
    for _ in range(2):
        reconcile_now()
        assert default_of(state, customer) == card["id"]
        state.gateway.client.v1.customers.update(customer, {"invoice_settings": {"default_payment_method": ""}})
        assert default_of(state, customer) is None  # lost again (in the Dashboard, say)
    reconcile_now(full=True)
    assert default_of(state, customer) == card["id"]
