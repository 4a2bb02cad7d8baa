"""What more than one test module uses, in one place: the test environment, the API
client, the error-envelope check, signed webhooks, the usual set-up calls through the
API, and the fake api.stripe.com. Fixtures stay in conftest.py; no test module imports
from another test module."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from billing.budget import StripeBudget
from billing.config import DEFAULT_ERRORS_DOC_URL
from billing.db import Base
from billing.gateway import StripeGateway
from billing.instrumentation import InstrumentedHTTPClient
from billing.models import BillingAccountIndex
from billing.state import BillingState
from stripe_sandbox import SANDBOX_TABLES, SandboxHTTPClient

TEST_ENV = {
    "JWT_SECRET": "test-secret-that-is-long-enough-for-hs256-0123456789",
    "JWT_ISSUER": "https://issuer.test/",
    "JWT_AUDIENCE": "billing-api",
    "STRIPE_WEBHOOK_SECRET": "whsec_test_secret",
    "LOG_LEVEL": "WARNING",
    "STRIPE_SANDBOX": "1",
}
WEBHOOK_SECRET = TEST_ENV["STRIPE_WEBHOOK_SECRET"]
LIVE_API_KEY = "sk_test_51SecretKeyThatMustNeverLeak"


# -- the database ---------------------------------------------------------------------

CATALOG_TABLES = {"sandbox_price_lookup_keys"}
CATALOG_OBJECTS = ("product", "price")


# A billing account's fields, as the seeds publish them.
BILLING_ACCOUNT_KEYS = {
    "id",
    "workspace_id",
    "name",
    "email",
    "phone",
    "description",
    "currency",
    "address",
    "created_at",
    "updated_at",
}


def wipe(app: Flask, *, keep_catalog: bool = True) -> None:
    """Empty every table (the service's and the sandbox's), but for the catalog
    the sandbox starts with, which every test would otherwise rebuild."""
    state: BillingState = app.extensions["billing"]
    with state.db.write() as session:
        for table in [*reversed(Base.metadata.sorted_tables), *SANDBOX_TABLES]:
            if keep_catalog and table.name in CATALOG_TABLES:
                continue
            if keep_catalog and table.name == "stripe_copies":  # the service's copy of the catalog
                session.execute(table.delete().where(table.c.object_type != "product"))
                continue
            if keep_catalog and table.name == "sandbox_objects":
                session.execute(table.delete().where(table.c.object_type.not_in(CATALOG_OBJECTS)))
                continue
            session.execute(table.delete())
    state.queue.huey.flush()


def index_rows(state: Any, workspace_id: str | None = None) -> list[BillingAccountIndex]:
    with state.db.read() as session:
        query = select(BillingAccountIndex)
        if workspace_id:
            query = query.where(BillingAccountIndex.workspace_id == workspace_id)
        return list(session.scalars(query))


# -- the API, as a front end calls it -------------------------------------------------


class Api:
    """A thin client for the contract's calls, as one user."""

    def __init__(self, client: FlaskClient, headers: dict[str, str]) -> None:
        self.client = client
        self.headers = headers

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, headers=self.headers, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.client.post(path, json=json, headers=self.headers, **kw)

    def patch(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.client.patch(path, json=json, headers=self.headers, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.client.delete(path, headers=self.headers, **kw)

    def workspace(self, mode: str = "pooled", name: str = "Acme") -> str:
        response = self.post("/workspaces", {"name": name, "billing_mode": mode})
        assert response.status_code == 201, response.json
        return str(response.json["id"])

    def account(self, workspace_id: str, **overrides: Any) -> dict[str, Any]:
        body = {
            "name": "ACME Corp Billing",
            "email": "billing@acme.com",
            "address": {"country": "US"},
            **overrides,
        }
        response = self.post(f"/workspaces/{workspace_id}/billing-accounts", body)
        assert response.status_code == 201, response.json
        return dict(response.json)

    def account_without_trial(self) -> dict[str, Any]:
        """A pooled workspace with two accounts (so no trial), and the first
        account with its path: {"alice", "ws", "account", "acc"}."""
        ws = self.workspace("pooled")
        account = self.account(ws)
        self.account(ws, name="Second")
        return {
            "alice": self,
            "ws": ws,
            "account": account,
            "acc": f"/workspaces/{ws}/billing-accounts/{account['id']}",
        }

    def advance_clock(self, amount: dict[str, int]) -> dict[str, Any]:
        """POST /sandbox/clock/advance, then poll GET /sandbox/clock until `ready`, as a
        client of Stripe's test clocks does; returns that last reading."""
        response = self.post("/sandbox/clock/advance", amount)
        assert response.status_code == 202, response.json
        deadline = time.monotonic() + 60
        while (clock := self.get("/sandbox/clock").json)["status"] == "advancing" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert clock["status"] == "ready", clock
        return dict(clock)

    def add_member(self, workspace_id: str, user_id: str, role: str) -> None:
        response = self.post(f"/workspaces/{workspace_id}/members", {"user_id": user_id, "role": role})
        assert response.status_code == 201, response.json


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The response is the contract's error envelope with this status and code."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    body = response.json
    assert body["code"] == code, body
    assert body["type"]
    assert body["message"]
    assert body["request_id"].startswith("req_")
    assert set(body) <= {"type", "code", "message", "errors", "request_id", "doc_url"}
    assert body["doc_url"] == DEFAULT_ERRORS_DOC_URL + code, body  # the published envelope's
    return dict(body)


FULL = {
    "name": "ACME Corp (EU)",
    "email": "billing-eu@acme.com",
    "phone": "+442071234567",
    "description": "For all European operations.",
    "currency": "eur",
    "address": {
        "country": "US",
        "line1": "123 Main Street",
        "line2": "Suite 456",
        "city": "San Francisco",
        "state": "CA",
        "postal_code": "94105",
    },
}
"""A billing account with every field of the contract."""


def account_path(ws: str, account: str) -> str:
    return f"/workspaces/{ws}/billing-accounts/{account}"


def subscribe(api: Any, acc: str, quantities: dict[str, int]) -> dict[str, Any]:
    """POST `acc`/subscriptions (`acc` an account's path): the subscription, created (201)."""
    response = api.post(f"{acc}/subscriptions", {"product_quantities": quantities})
    assert response.status_code == 201, response.json
    return dict(response.json)


def subscribe_with_card(api: Any, ws: str, account: str, quantities: dict[str, int]) -> dict[str, Any]:
    """A subscription paid by card (a trial when the workspace is eligible): a Visa
    attached first when the account has no card."""
    acc = account_path(ws, account)
    if not api.get(f"{acc}/payment-methods").json["data"]:
        assert api.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_visa"}).status_code == 201
    return subscribe(api, acc, quantities)


def subscribe_in_stripe(
    gateway: StripeGateway,
    prices: dict[str, Any],
    customer_id: str,
    quantities: dict[str, int],
    interval: str = "month",
    currency: str = "usd",
    **extra: Any,
) -> Any:
    """A Stripe subscription made through the gateway, not the API (for a state the API
    would not make); `prices` caches the prices found or made, by lookup key."""
    items = []
    for product, quantity in quantities.items():
        key = f"{product}_{currency}_{interval}"
        if key not in prices:
            found = gateway.prices_by_lookup_key([key])
            prices[key] = found.get(key) or gateway.create_price(
                {
                    "currency": currency,
                    "unit_amount": 1500,
                    "recurring": {"interval": interval},
                    "product_data": {"name": product},
                    "lookup_key": key,
                },
                idempotency_key=uuid.uuid4().hex,
            )
        items.append({"price": prices[key].id, "quantity": quantity})
    params = {
        "customer": customer_id,
        "items": items,
        "collection_method": "send_invoice",
        "days_until_due": 30,
        **extra,
    }
    if "trial_period_days" in extra:
        params.pop("collection_method")
        params.pop("days_until_due")
    return gateway.create_subscription(params, idempotency_key=uuid.uuid4().hex)  # type: ignore[arg-type]


def orgs(ws: str) -> str:
    return f"/workspaces/{ws}/organizations"


def make_root(api: Any, ws: str, **body: Any) -> dict[str, Any]:
    response = api.post(orgs(ws), {"name": "Root", **body})
    assert response.status_code == 201, response.json
    return dict(response.json)


def make_child(api: Any, ws: str, parent: str, **body: Any) -> dict[str, Any]:
    response = api.post(f"{orgs(ws)}/{parent}/children", {"name": "Child", **body})
    assert response.status_code == 201, response.json
    return dict(response.json)


# -- Stripe's webhooks, as Stripe signs them ---------------------------------------------


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    timestamp = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def event(type_: str, obj: dict[str, Any], event_id: str = "evt_test_1") -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": type_,
            "created": int(time.time()),
            "data": {"object": obj},
            "livemode": False,
        }
    ).encode()


def deliver(client: Any, payload: bytes, signature: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    headers["Stripe-Signature"] = signature if signature is not None else sign(payload)
    return client.post("/webhooks/stripe", data=payload, headers=headers)


def synchronous_webhooks(holder: dict[str, Flask]) -> Any:
    """The sandbox's events, posted to the app's webhook route as they happen."""

    def post(payload: bytes, headers: Any) -> int:
        app = holder.get("app")
        if app is None:  # still being created: Stripe would retry later, and so does the sandbox
            return 503
        # A fresh app context: a nested request would otherwise share the outer one's `g`.
        with app.app_context():
            return int(app.test_client().post("/webhooks/stripe", data=payload, headers=dict(headers)).status_code)

    return post


# -- Stripe over HTTP -----------------------------------------------------------------


def count_stripe_requests(monkeypatch: Any) -> list[str]:
    """Every Stripe request the service makes from here on, as "GET /v1/..." (no host, no query)."""
    from billing.instrumentation import InstrumentedHTTPClient

    seen: list[str] = []
    original = InstrumentedHTTPClient.request_with_retries

    def counting(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(f"{method.upper()} {url.split('api.stripe.com', 1)[-1].split('?', 1)[0]}")
        return original(self, method, url, *args, **kwargs)

    monkeypatch.setattr(InstrumentedHTTPClient, "request_with_retries", counting)
    return seen


CUSTOMERS = "https://api.stripe.com/v1/customers"


def customer_json(customer_id: str = "cus_Real123", **metadata: str) -> dict[str, Any]:
    """A customer as api.stripe.com answers it (for `responses` mocks)."""
    return {
        "id": customer_id,
        "object": "customer",
        "created": 1761698406,
        "livemode": False,
        "name": FULL["name"],
        "email": FULL["email"],
        "phone": None,
        "description": None,
        "address": {"country": "US", "line1": None, "line2": None, "city": None, "state": None, "postal_code": None},
        "metadata": metadata,
        "currency": None,
        "invoice_settings": {"default_payment_method": None},
    }


FAULTS_API_KEY = "sk_test_faults_0123456789"
STRIPE_URL = re.compile(r"https://api\.stripe\.com/.*")


@dataclass
class Plan:
    fail_from: int | None = None  # 1-based number of the first HTTP request that fails
    kind: str = "500"
    seen: int = 0


class FakeStripe:
    """api.stripe.com, answered by the sandbox, with faults injected on plan."""

    def __init__(self, brain: SandboxHTTPClient) -> None:
        self.brain = brain
        self.plan = Plan()

    def __call__(self, request: Any) -> Any:
        self.plan.seen += 1
        failing = self.plan.fail_from is not None and self.plan.seen >= self.plan.fail_from
        kind = self.plan.kind
        if failing and kind == "timeout":
            raise requests.exceptions.ReadTimeout("read timed out")
        if failing and kind == "reset":
            raise requests.exceptions.ConnectionError("connection reset by peer")
        if failing and kind == "500":
            return 500, {"Request-Id": "req_fault"}, json.dumps({"error": {"type": "api_error", "message": "boom"}})
        if failing and kind == "429":
            return (
                429,
                {"Request-Id": "req_fault"},
                json.dumps({"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "slow down"}}),
            )
        if failing and kind == "malformed":
            return 200, {"Request-Id": "req_fault"}, "<html>upstream proxy error</html>"
        body = request.body.decode() if isinstance(request.body, bytes) else request.body
        text, status, headers = self.brain.request(request.method, request.url, dict(request.headers), body)
        if failing and kind == "lost":  # Stripe did it; the answer never arrived
            raise requests.exceptions.ConnectionError("connection reset after the request was sent")
        return status, dict(headers), text


def budget_of(app: Flask) -> StripeBudget:
    """The app's shared Stripe request budget (one per Stripe account)."""
    http_client = app.extensions["billing"].gateway.client._requestor._client
    assert isinstance(http_client, InstrumentedHTTPClient) and http_client.budget is not None
    return http_client.budget
