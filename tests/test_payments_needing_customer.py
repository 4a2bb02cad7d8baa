"""Payments that need the customer: 3-D Secure on a first payment, declines at attach,
and the sandbox's stand-in for Stripe.js (`/sandbox/.../authenticate`)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from billing.models import StripeCopy
from billing.stripe_ids import intent_id
from tests.helpers import assert_error, subscribe

PENDING_KEYS = {"invoice_id", "amount_due", "currency", "reason", "client_secret", "hosted_invoice_url"}


@pytest.fixture
def acct(as_user: Any) -> dict[str, Any]:
    """A pooled workspace (two accounts: no trial) and its first account's path."""
    return dict(as_user("alice").account_without_trial())


def card(acct: dict[str, Any], token: str) -> dict[str, Any]:
    response = acct["alice"].post(f"/sandbox{acct['acc']}/payment-methods", {"payment_method": token})
    assert response.status_code == 201, response.json
    return dict(response.json)


def hosted_page(state: Any, invoice_id: str) -> str:
    """The invoice's hosted page, which the sandbox serves on the service's origin."""
    url = str(state.gateway.client.v1.invoices.retrieve(invoice_id).hosted_invoice_url)
    assert url.startswith(f"{state.config.sandbox_public_url}/sandbox/invoices/{invoice_id}/")
    return url


def authenticate(acct: dict[str, Any], secret: str, outcome: str) -> Any:
    return acct["alice"].post(f"/sandbox{acct['acc']}/authenticate", {"client_secret": secret, "outcome": outcome})


def test_first_payment_needing_3ds_is_incomplete_then_active(acct: dict[str, Any], state: Any) -> None:
    alice, acc = acct["alice"], acct["acc"]
    card(acct, "pm_card_authenticationRequired")
    created = subscribe(alice, acc, {"users": 2})
    pending = created["pending_payment"]
    assert created["status"] == "incomplete" and set(pending) == PENDING_KEYS
    assert pending["reason"] == "authentication_required" and pending["currency"] == "usd"
    assert pending["amount_due"] > 0 and pending["hosted_invoice_url"] == hosted_page(state, pending["invoice_id"])
    invoice = state.gateway.client.v1.invoices.retrieve(pending["invoice_id"], {"expand": ["confirmation_secret"]})
    assert pending["client_secret"] == invoice.confirmation_secret.client_secret
    # Reads come from the copy (the autouse fixture fails any Stripe call during a GET).
    assert alice.get(f"{acc}/subscriptions/{created['id']}").json == created
    done = authenticate(acct, pending["client_secret"], "succeed")
    assert done.status_code == 200 and done.json == {"status": "succeeded"}
    after = alice.get(f"{acc}/subscriptions/{created['id']}").json
    assert (after["status"], after["pending_payment"]) == ("active", None)
    assert alice.get(f"{acc}/invoices").json["data"][0]["status"] == "paid"
    assert_error(authenticate(acct, pending["client_secret"], "succeed"), 409, "nothing_to_authenticate")


def test_failed_authentication_stays_incomplete_until_it_expires(acct: dict[str, Any], state: Any) -> None:
    alice, acc = acct["alice"], acct["acc"]
    card(acct, "pm_card_authenticationRequired")
    first = subscribe(alice, acc, {"users": 2})
    failed = authenticate(acct, first["pending_payment"]["client_secret"], "fail")
    assert failed.status_code == 200 and failed.json == {"status": "requires_payment_method"}
    after = alice.get(f"{acc}/subscriptions/{first['id']}").json
    assert after["status"] == "incomplete"
    assert after["pending_payment"] == first["pending_payment"]  # still authentication_required
    # Incomplete ones count toward the limit of three ...
    subscribe(alice, acc, {"users": 2}), subscribe(alice, acc, {"users": 2})
    assert_error(
        alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 1}}), 409, "subscription_limit_reached"
    )
    # ... until, unpaid 23 hours later, they are incomplete_expired.
    alice.advance_clock({"hours": 23, "minutes": 1})
    expired = alice.get(f"{acc}/subscriptions/{first['id']}").json
    assert (expired["status"], expired["pending_payment"]) == ("incomplete_expired", None)
    assert state.gateway.client.v1.invoices.retrieve(first["pending_payment"]["invoice_id"]).status == "void"
    assert subscribe(alice, acc, {"users": 2})["status"] == "incomplete"


def test_authenticating_someone_elses_payment_is_404(acct: dict[str, Any], as_user: Any) -> None:
    card(acct, "pm_card_authenticationRequired")
    secret = subscribe(acct["alice"], acct["acc"], {"users": 2})["pending_payment"]["client_secret"]
    bob = as_user("bob")
    ws = bob.workspace("pooled")
    other = bob.account(ws)
    path = f"/sandbox/workspaces/{ws}/billing-accounts/{other['id']}/authenticate"
    assert_error(bob.post(path, {"client_secret": secret, "outcome": "succeed"}), 404, "not_found")
    # Alice's own path with a made-up secret, or a viewer's hand, changes nothing either.
    assert_error(authenticate(acct, intent_id(secret) + "_secret_nope", "succeed"), 404, "not_found")
    acct["alice"].add_member(acct["ws"], "vera", "viewer")
    vera = as_user("vera")
    assert_error(
        vera.post(f"/sandbox{acct['acc']}/authenticate", {"client_secret": secret, "outcome": "succeed"}),
        403,
        "permission_denied",
    )
    assert_error(authenticate(acct, secret, "maybe"), 422, "validation_failed")
    assert acct["alice"].get(f"{acct['acc']}/subscriptions").json["data"][0]["status"] == "incomplete"


@pytest.mark.parametrize("token", ["pm_card_chargeDeclined", "pm_card_chargeDeclinedExpiredCard"])
def test_declining_cards_are_refused_when_saved(acct: dict[str, Any], token: str) -> None:
    alice, acc = acct["alice"], acct["acc"]
    assert_error(alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": token}), 402, "card_declined")
    secret = alice.post(f"{acc}/payment-methods").json["client_secret"]
    confirm = alice.post(f"/sandbox{acc}/setup-intents/{intent_id(secret)}/confirm", {"payment_method": token})
    assert_error(confirm, 402, "card_declined")
    assert alice.get(f"{acc}/payment-methods").json["data"] == []


def test_card_set_up_with_3ds_pays_later_without_it(acct: dict[str, Any]) -> None:
    alice, acc = acct["alice"], acct["acc"]
    secret = alice.post(f"{acc}/payment-methods").json["client_secret"]
    confirmed = alice.post(
        f"/sandbox{acc}/setup-intents/{intent_id(secret)}/confirm",
        {"payment_method": "pm_card_authenticationRequiredOnSetup"},
    )
    assert confirmed.json["status"] == "requires_action"
    assert alice.get(f"{acc}/payment-methods").json["data"] == []
    assert authenticate(acct, secret, "succeed").json == {"status": "succeeded"}
    [method] = alice.get(f"{acc}/payment-methods").json["data"]
    assert method["is_default"] and method["last4"] == "3155"
    created = subscribe(alice, acc, {"users": 2})
    assert (created["status"], created["pending_payment"]) == ("active", None)


# -- renewals -------------------------------------------------------------------------


def until_renewal_collected(acct: dict[str, Any], subscription: dict[str, Any], state: Any) -> None:
    """Past the period's end and the hour Stripe waits before collecting the renewal invoice."""
    end = state.gateway.client.v1.subscriptions.retrieve(subscription["id"])["items"].data[0].current_period_end
    seconds = end - state.sandbox_clock.now() + 3600 + 60
    acct["alice"].advance_clock({"seconds": seconds})


def make_default(acct: dict[str, Any], token: str) -> dict[str, Any]:
    method = card(acct, token)
    put = acct["alice"].client.put(f"{acct['acc']}/payment-methods/{method['id']}", headers=acct["alice"].headers)
    assert put.status_code == 200
    return method


def subscribed_then_default(acct: dict[str, Any], token: str) -> tuple[dict[str, Any], str]:
    """Subscribed on a Visa, then `token` made the default card: the subscription and its path."""
    card(acct, "pm_card_visa")
    sub = subscribe(acct["alice"], acct["acc"], {"users": 2})
    make_default(acct, token)
    return sub, f"{acct['acc']}/subscriptions/{sub['id']}"


def test_failed_renewal_recovers_with_a_new_default_card(acct: dict[str, Any], state: Any) -> None:
    alice, acc = acct["alice"], acct["acc"]
    sub, path = subscribed_then_default(acct, "pm_card_chargeCustomerFail")
    # The new period starts; its invoice is still a draft for an hour: nothing owed yet.
    end = state.gateway.client.v1.subscriptions.retrieve(sub["id"])["items"].data[0].current_period_end
    alice.advance_clock({"seconds": end - state.sandbox_clock.now() + 60})
    assert (alice.get(path).json["status"], alice.get(path).json["pending_payment"]) == ("active", None)
    alice.advance_clock({"hours": 1})
    failed = alice.get(path).json
    pending = failed["pending_payment"]
    assert failed["status"] == "past_due" and pending["reason"] == "payment_failed"
    assert pending["hosted_invoice_url"] == hosted_page(state, pending["invoice_id"]) and pending["amount_due"] > 0
    renewal = alice.get(f"{acc}/invoices").json["data"][0]
    assert (renewal["id"], renewal["status"]) == (pending["invoice_id"], "open")
    # The customer adds a good card and makes it the default; the first retry (Smart Retries, the
    # sandbox's default: 2 days later) uses it.
    make_default(acct, "pm_card_mastercard")
    alice.advance_clock({"days": 1})
    assert alice.get(path).json["status"] == "past_due"
    alice.advance_clock({"days": 1})
    recovered = alice.get(path).json
    assert (recovered["status"], recovered["pending_payment"]) == ("active", None)
    assert alice.get(f"{acc}/invoices").json["data"][0]["status"] == "paid"


def test_renewal_failing_every_retry_cancels(acct: dict[str, Any], state: Any) -> None:
    alice = acct["alice"]
    sub, path = subscribed_then_default(acct, "pm_card_chargeCustomerFail")
    until_renewal_collected(acct, sub, state)
    renewal_id = alice.get(path).json["pending_payment"]["invoice_id"]
    # Smart Retries, the sandbox's default: 8 tries within 2 weeks (retries every 2 days), then canceled.
    for _ in range(7):
        assert alice.get(path).json["status"] == "past_due"
        alice.advance_clock({"days": 2})
    ended = alice.get(path).json
    assert (ended["status"], ended["pending_payment"]) == ("canceled", None)
    invoice = state.gateway.client.v1.invoices.retrieve(renewal_id)
    assert (invoice.attempt_count, invoice.next_payment_attempt) == (8, None)


def test_renewal_needing_3ds_is_paid_by_the_customer(acct: dict[str, Any], state: Any) -> None:
    alice = acct["alice"]
    sub, path = subscribed_then_default(acct, "pm_card_authenticationRequired")
    until_renewal_collected(acct, sub, state)
    pending = alice.get(path).json["pending_payment"]
    assert alice.get(path).json["status"] == "past_due" and pending["reason"] == "authentication_required"
    assert authenticate(acct, pending["client_secret"], "succeed").json == {"status": "succeeded"}
    assert (alice.get(path).json["status"], alice.get(path).json["pending_payment"]) == ("active", None)


@pytest.mark.stripe_reads
def test_a_rebuilt_copy_still_knows_why_a_payment_waits(acct: dict[str, Any], state: Any, reconcile_now: Any) -> None:
    card(acct, "pm_card_authenticationRequired")
    created = subscribe(acct["alice"], acct["acc"], {"users": 2})
    with state.db.write() as session:  # the copy lost (an outage longer than Stripe keeps events)
        session.execute(StripeCopy.__table__.delete().where(StripeCopy.object_type != "product"))  # type: ignore[attr-defined]
    reconcile_now(full=True)
    after = acct["alice"].get(f"{acct['acc']}/subscriptions/{created['id']}").json
    assert after["pending_payment"] == created["pending_payment"]


# -- increases (Stripe's pending updates) ---------------------------------------------------


def test_an_increase_needing_3ds_applies_once_the_customer_authenticates(
    acct: dict[str, Any], state: Any, frozen_sandbox_time: None
) -> None:
    alice, acc = acct["alice"], acct["acc"]
    sub, path = subscribed_then_default(acct, "pm_card_authenticationRequired")
    preview = alice.post(
        f"{acc}/invoices/preview", {"subscription_id": sub["id"], "items": [{"product_type": "users", "quantity": 5}]}
    ).json
    changed = alice.patch(path, {"product_quantities": {"users": 5}, "metadata": {"seats": "five"}})
    assert changed.status_code == 200, changed.json
    # Unchanged, and what the customer must do to make the change: the previewed amount, with 3-D Secure.
    assert changed.json["product_quantities"]["users"]["quantity"] == 2 and changed.json["status"] == "active"
    assert "seats" not in changed.json["metadata"]
    pending = changed.json["pending_payment"]
    assert set(pending) == PENDING_KEYS and pending["reason"] == "authentication_required"
    assert (pending["amount_due"], pending["currency"]) == (preview["amount_due"], preview["currency"])
    invoice = state.gateway.client.v1.invoices.retrieve(pending["invoice_id"], {"expand": ["confirmation_secret"]})
    assert pending["client_secret"] == invoice.confirmation_secret.client_secret
    assert alice.get(path).json == changed.json  # the copy says the same, at once
    assert alice.get(f"{acc}/invoices").json["data"][0]["status"] == "open"
    assert authenticate(acct, pending["client_secret"], "succeed").json == {"status": "succeeded"}
    after = alice.get(path).json
    assert after["product_quantities"]["users"]["quantity"] == 5 and after["pending_payment"] is None
    assert after["metadata"]["seats"] == "five"
    assert alice.get(f"{acc}/invoices").json["data"][0]["status"] == "paid"


def test_an_increase_never_authenticated_never_applies(acct: dict[str, Any], state: Any) -> None:
    alice = acct["alice"]
    sub, path = subscribed_then_default(acct, "pm_card_authenticationRequired")
    pending = alice.patch(path, {"add_products": {"sso": 1}}).json["pending_payment"]
    assert authenticate(acct, pending["client_secret"], "fail").json == {"status": "requires_payment_method"}
    failed = alice.get(path).json
    assert failed["pending_payment"] == pending and set(failed["product_quantities"]) == {"users"}
    alice.advance_clock({"hours": 23, "minutes": 1})  # Stripe discards a pending update after 23 hours
    expired = alice.get(path).json
    assert (expired["status"], expired["pending_payment"]) == ("active", None)
    assert expired["product_quantities"] == sub["product_quantities"]
    assert state.gateway.client.v1.invoices.retrieve(pending["invoice_id"]).status == "void"
    assert_error(authenticate(acct, pending["client_secret"], "succeed"), 409, "nothing_to_authenticate")


def test_an_increase_on_a_declining_card_is_still_refused(acct: dict[str, Any]) -> None:
    alice = acct["alice"]
    sub, path = subscribed_then_default(acct, "pm_card_chargeCustomerFail")
    assert_error(alice.patch(path, {"product_quantities": {"users": 5}}), 402, "card_declined")
    after = alice.get(path).json
    assert (after["product_quantities"], after["pending_payment"]) == (sub["product_quantities"], None)


OWING = {"incomplete", "past_due", "unpaid"}


def _says_what_it_waits_for(subscription: dict[str, Any]) -> None:
    """Never `incomplete` with nothing pending, never a failure after a successful
    authentication, never a payment pending on an active subscription."""
    pending = subscription["pending_payment"]
    if subscription["status"] in OWING:
        assert pending is not None and pending["reason"] == "authentication_required", subscription
    else:
        assert subscription["status"] == "active" and pending is None, subscription


@pytest.mark.parametrize("first", ["invoice", "payment_intent", "subscription"])
def test_after_3ds_succeeds_the_subscription_never_contradicts_itself(
    acct: dict[str, Any], state: Any, app: Any, client: Any, webhooks_lost: None, apply_now: Any, first: str
) -> None:
    """Stripe's events about the authenticated payment (its PaymentIntent, the
    invoice it paid, the subscription made active) are applied one object at a
    time, in any order: after each, the subscription says what it waits for."""
    from billing.webhooks.service import apply_object
    from tests.helpers import deliver

    alice, acc = acct["alice"], acct["acc"]
    card(acct, "pm_card_authenticationRequired")
    created = subscribe(alice, acc, {"users": 2})
    path = f"{acc}/subscriptions/{created['id']}"
    secret = created["pending_payment"]["client_secret"]
    assert authenticate(acct, secret, "succeed").json == {"status": "succeeded"}
    # Stripe's events have not come yet: the subscription still waits, and says so.
    assert alice.get(path).json == created
    events = state.gateway.client.v1.events.list({"limit": 100}).data
    for event in reversed(events):
        assert deliver(client, json.dumps(event.to_dict(), default=str).encode()).status_code == 200
    keys = {
        "invoice": f"invoice:{created['pending_payment']['invoice_id']}",
        "payment_intent": f"payment_intent:{intent_id(secret)}",
        "subscription": f"subscription:{created['id']}",
    }
    for name in [first, *sorted(set(keys) - {first})]:
        with app.app_context():
            apply_object(state, keys[name])
        _says_what_it_waits_for(alice.get(path).json)
    apply_now()
    after = alice.get(path).json
    assert (after["status"], after["pending_payment"]) == ("active", None)
