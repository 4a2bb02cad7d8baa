"""The real HTTP path (the library's requests client) against a mocked Stripe:
error mapping, retries, the idempotency key and API version that reach Stripe."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests
import responses
import stripe
from flask import Flask
from sqlalchemy import delete, update

from billing.gateway import STRIPE_API_VERSION
from billing.models import BillingAccountIndex, StripeCopy
from tests.helpers import (
    CUSTOMERS,
    FULL,
    TEST_ENV,
    Api,
    assert_error,
    customer_json,
    index_rows,
)
from tests.helpers import (
    LIVE_API_KEY as API_KEY,
)


def _no_secret(response: Any) -> None:
    assert API_KEY not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)


def test_create_retries_5xx_with_one_idempotency_key(live_alice: Api, live_app: Flask, mocked: Any) -> None:
    ws = live_alice.workspace("single")
    mocked.post(CUSTOMERS, status=500, json={"error": {"type": "api_error", "message": "boom"}})
    mocked.post(CUSTOMERS, status=500, json={"error": {"type": "api_error", "message": "boom"}})
    mocked.post(CUSTOMERS, status=200, json=customer_json(workspace_id=ws, currency="usd"))
    response = live_alice.post(f"/workspaces/{ws}/billing-accounts", FULL)
    assert response.status_code == 201, response.json
    calls = [c for c in mocked.calls if c.request.url == CUSTOMERS]
    assert len(calls) == 3
    keys = {c.request.headers["Idempotency-Key"] for c in calls}
    assert len(keys) == 1 and next(iter(keys)).startswith("billing-account:")
    assert {c.request.headers["Stripe-Version"] for c in calls} == {STRIPE_API_VERSION}
    sent = dict(parse_qsl(calls[0].request.body))
    assert sent["metadata[workspace_id]"] == ws and sent["email"] == FULL["email"]
    [row] = index_rows(live_app.extensions["billing"], ws)
    assert row.customer_id == "cus_Real123" and row.state == "active"


def test_stripe_down_is_503_and_keeps_the_reservation(live_alice: Api, live_app: Flask, mocked: Any) -> None:
    ws = live_alice.workspace("single")
    mocked.post(CUSTOMERS, body=requests.exceptions.ConnectionError("connection reset"))
    response = live_alice.post(f"/workspaces/{ws}/billing-accounts", FULL)
    body = assert_error(response, 503, "stripe_unavailable")
    assert body["type"] == "api_error"
    _no_secret(response)
    assert len([c for c in mocked.calls if c.request.url == CUSTOMERS]) == 3  # 1 + 2 retries
    # Stripe may have created it: the slot stays reserved for reconcile to settle.
    [row] = index_rows(live_app.extensions["billing"], ws)
    assert row.state == "pending"


def test_stripe_500_after_retries_is_502(live_alice: Api, mocked: Any) -> None:
    ws = live_alice.workspace()
    mocked.post(CUSTOMERS, status=500, json={"error": {"type": "api_error", "message": "internal " + API_KEY}})
    response = live_alice.post(f"/workspaces/{ws}/billing-accounts", FULL)
    assert_error(response, 502, "stripe_unavailable")
    _no_secret(response)


def test_stripe_rate_limit_is_429_with_retry_after(live_alice: Api, live_app: Flask, mocked: Any) -> None:
    ws = live_alice.workspace()
    mocked.post(
        CUSTOMERS,
        status=429,
        json={"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many requests"}},
    )
    response = live_alice.post(f"/workspaces/{ws}/billing-accounts", FULL)
    body = assert_error(response, 429, "rate_limited")
    assert body["type"] == "rate_limit_error"
    assert response.headers["Retry-After"].isdigit()
    assert index_rows(live_app.extensions["billing"], ws) == []  # definitely not created: slot released


def test_stripe_invalid_request_is_not_echoed(live_alice: Api, live_app: Flask, mocked: Any) -> None:
    ws = live_alice.workspace()
    secret_text = "Invalid email for sk_test_51SecretKeyThatMustNeverLeak"
    mocked.post(
        CUSTOMERS,
        status=400,
        json={
            "error": {
                "type": "invalid_request_error",
                "code": "email_invalid",
                "param": "email",
                "message": secret_text,
            }
        },
    )
    response = live_alice.post(f"/workspaces/{ws}/billing-accounts", FULL)
    assert_error(response, 502, "stripe_request_failed")
    assert secret_text not in response.get_data(as_text=True)
    assert index_rows(live_app.extensions["billing"], ws) == []


def test_bad_api_key_is_502_without_the_key(live_alice: Api, mocked: Any) -> None:
    ws = live_alice.workspace()
    mocked.post(
        CUSTOMERS,
        status=401,
        json={"error": {"type": "invalid_request_error", "message": f"Invalid API Key provided: {API_KEY}"}},
    )
    response = live_alice.post(f"/workspaces/{ws}/billing-accounts", FULL)
    assert_error(response, 502, "stripe_unavailable")
    _no_secret(response)


def test_card_error_is_402_with_the_cardholder_message(live_app: Flask) -> None:
    from billing.errors import from_stripe_error

    error = stripe.CardError("Your card was declined.", "payment_method", "card_declined", http_status=402)
    mapped = from_stripe_error(error)
    assert (mapped.status, mapped.code, mapped.message) == (402, "card_declined", "Your card was declined.")


@pytest.mark.stripe_reads
def test_account_older_than_the_copy_is_copied_once_and_a_missing_customer_is_404(
    live_alice: Api, live_app: Flask, mocked: Any
) -> None:
    """An account indexed before the service kept its copy of Stripe is copied on
    its first read; a customer Stripe no longer has is 404 and its index row goes."""
    state = live_app.extensions["billing"]
    ws = live_alice.workspace()
    mocked.post(CUSTOMERS, status=200, json=customer_json(workspace_id=ws, currency="usd"))
    created = live_alice.post(f"/workspaces/{ws}/billing-accounts", FULL).json
    with state.db.write() as session:  # as it was before the copy existed
        session.execute(update(BillingAccountIndex).values(copied_at=None))
        session.execute(delete(StripeCopy))
    mocked.get(
        f"{CUSTOMERS}/{created['id']}",
        status=404,
        json={
            "error": {
                "type": "invalid_request_error",
                "code": "resource_missing",
                "param": "id",
                "message": "No such customer: 'cus_Real123'",
            }
        },
    )
    mocked.calls.reset()
    assert_error(live_alice.get(f"/workspaces/{ws}/billing-accounts/{created['id']}"), 404, "not_found")
    assert [c.request.url for c in mocked.calls] == [f"{CUSTOMERS}/{created['id']}"]
    assert index_rows(state, ws) == []


def test_reads_make_no_stripe_request(live_alice: Api, mocked: Any) -> None:
    ws = live_alice.workspace()
    ids = []
    for i in range(3):
        mocked.post(CUSTOMERS, status=200, json=customer_json(f"cus_R{i}", workspace_id=ws, currency="usd"))
        ids.append(live_alice.post(f"/workspaces/{ws}/billing-accounts", FULL).json["id"])
    mocked.calls.reset()
    listed = live_alice.get(f"/workspaces/{ws}/billing-accounts").json["data"]
    assert [a["id"] for a in listed] == ids
    one = live_alice.get(f"/workspaces/{ws}/billing-accounts/{ids[1]}")
    assert one.status_code == 200 and one.json == listed[1]
    assert [c.request.url for c in mocked.calls] == []
    assert all(json.loads(json.dumps(a))["workspace_id"] == ws for a in listed)


def test_sandbox_routes_do_not_exist_with_a_real_key(live_alice: Api, mocked: Any) -> None:
    ws = live_alice.workspace()
    for path in ("/sandbox/clock/advance", f"/sandbox/workspaces/{ws}/billing-accounts/cus_x/payment-methods"):
        assert_error(live_alice.post(path, {"days": 1, "payment_method": "pm_card_visa"}), 404, "not_found")
    assert not any("/sandbox" in rule.rule for rule in live_alice.client.application.url_map.iter_rules())
    assert [c.request.url for c in mocked.calls] == []


def test_no_key_or_secret_in_logs_on_the_live_path(live_alice: Api, mocked: Any, caplog: Any) -> None:
    import logging

    ws = live_alice.workspace()
    mocked.post(
        CUSTOMERS,
        status=401,
        json={"error": {"type": "invalid_request_error", "message": f"Invalid API Key provided: {API_KEY}"}},
    )
    with caplog.at_level(logging.DEBUG):
        live_alice.post(f"/workspaces/{ws}/billing-accounts", FULL)
        mocked.replace(responses.POST, CUSTOMERS, status=500, json={"error": {"message": API_KEY}})
        live_alice.post(f"/workspaces/{ws}/billing-accounts", FULL)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert API_KEY not in text and TEST_ENV["JWT_SECRET"] not in text
    assert TEST_ENV["STRIPE_WEBHOOK_SECRET"] not in text
    assert live_alice.headers["Authorization"].split()[1] not in text
