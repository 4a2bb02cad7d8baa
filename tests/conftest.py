"""Fixtures: one app on a throwaway database (SQLite, or TEST_DATABASE_URL),
with Stripe served by the built-in sandbox through the real `stripe` library.

With SANDBOX_OVER_HTTP=1 the emulator runs as its own server instead (`python -m stripe_sandbox`
on a loopback port, on the same database) and the app reaches it as it would Stripe: an
`sk_test_` key, STRIPE_API_BASE, the library's own HTTP transport. The server posts its webhooks
to the app, served on a loopback port too, before it answers the write that made them; the
sandbox-only parts (its clock, `/sandbox` routes) are absent: `.ci/run` runs the end-to-end tests
that need neither that way."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, make_url, text

from app import create_app
from billing.tokens import mint_token
from billing.catalog import ensure_catalog
from billing.cli import run_migrations
from billing.config import DEFAULT_ERRORS_DOC_URL, Config
from billing.db import Base, normalize_database_url
from billing.state import BillingState
from stripe_sandbox import SANDBOX_TABLES

TEST_ENV = {
    "JWT_SECRET": "test-secret-that-is-long-enough-for-hs256-0123456789",
    "JWT_ISSUER": "https://issuer.test/",
    "JWT_AUDIENCE": "billing-api",
    "STRIPE_WEBHOOK_SECRET": "whsec_test_secret",
    "LOG_LEVEL": "WARNING",
    "STRIPE_SANDBOX": "1",
}


def _fresh_database_url(tmp_dir: str) -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        return f"sqlite:///{tmp_dir}/test.sqlite3"
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:  # one database per xdist worker: each owns its schema while it runs
        base = make_url(normalize_database_url(url))
        name = f"{base.database}_{worker}"
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        url = base.set(database=name).render_as_string(hide_password=False)
    engine = create_engine(normalize_database_url(url))
    with engine.begin() as conn:  # start from nothing, migrations included
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp_dir:
        url = _fresh_database_url(tmp_dir)
        run_migrations(url)
        yield url


OVER_HTTP = os.environ.get("SANDBOX_OVER_HTTP") == "1"
OVER_HTTP_KEY = "sk_test_51OverHttpEmulatorKey"


@pytest.fixture(scope="session")
def app_listener() -> Iterator[socket.socket]:
    """Where the app answers over HTTP (SANDBOX_OVER_HTTP): the emulator's server posts its webhooks there."""
    from tests.db_proxy import bind_local

    listener = bind_local()
    yield listener
    listener.close()


@pytest.fixture(scope="session")
def emulator_url(database_url: str, app_listener: socket.socket) -> Iterator[str]:
    """`python -m stripe_sandbox` on a free loopback port (in LOCAL_PORT_RANGE), on the tests' database."""
    webhook_url = f"http://127.0.0.1:{app_listener.getsockname()[1]}/webhooks/stripe"
    process = subprocess.Popen([sys.executable, "-m", "stripe_sandbox", "--port", "0", "--database", database_url,
                                "--webhook-url", webhook_url, "--webhook-secret", TEST_ENV["STRIPE_WEBHOOK_SECRET"],
                                "--webhooks-before-answer"], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()  # printed once it listens
    assert "serving on " in line, f"python -m stripe_sandbox did not start: {line!r}"
    try:
        yield line.split("serving on ", 1)[1].strip()
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def config(database_url: str, request: Any) -> Config:
    if OVER_HTTP:
        return Config.from_env({**TEST_ENV, "DATABASE_URL": database_url, "STRIPE_API_KEY": OVER_HTTP_KEY,
                                "STRIPE_API_BASE": request.getfixturevalue("emulator_url")})
    return Config.from_env({**TEST_ENV, "DATABASE_URL": database_url})


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


def apply_after_delivery(app: Flask) -> None:
    """After each synchronous delivery run of the sandbox, the queue's work is
    done too, here (the sender's `after_run`): the tasks queued through Huey,
    then whatever else may run now (tasks put off to coalesce). Until nothing
    more is delivered or applied, as applying may make Stripe send more."""
    from billing.jobs import apply_due

    state: BillingState = app.extensions["billing"]
    sender: Any = state.webhooks

    def apply_all() -> None:
        while True:
            with app.app_context():
                worked = state.queue.run_queued() + apply_due()
            if not worked and not sender.deliver_pending():
                return

    sender.after_run = apply_all


class WebhookFront:
    """The app's webhook route over HTTP, for the emulator's server (SANDBOX_OVER_HTTP): each
    delivery is then applied, as a worker would, before it is answered (what
    `synchronous_webhooks` and `apply_after_delivery` do in process). `lost`: answered 503
    (they stay pending in the emulator); `ignored`: 200 unread."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.lost = self.ignored = False

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self.lost or self.ignored:
            start_response("503 Service Unavailable" if self.lost else "200 OK", [("Content-Length", "0")])
            return [b""]
        answer = list(self.app(environ, start_response))
        from billing.jobs import apply_due

        state: BillingState = self.app.extensions["billing"]
        while True:
            with self.app.app_context():
                if not state.queue.run_queued() + apply_due():
                    return answer


def serve_over_http(app: Flask, listener: socket.socket) -> WebhookFront:
    from werkzeug.serving import make_server

    front = WebhookFront(app)
    server = make_server("127.0.0.1", listener.getsockname()[1], front, threaded=True, fd=listener.fileno())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return front


@pytest.fixture(scope="session")
def session_app(config: Config, request: Any) -> Flask:
    if OVER_HTTP:
        app = create_app(config)
        app.config["TESTING"] = False
        app.extensions["webhook_front"] = serve_over_http(app, request.getfixturevalue("app_listener"))
        wipe(app)
        return app
    holder: dict[str, Flask] = {}
    # Webhooks as Stripe sends them: 32 at once, unordered, failures retried later in sandbox time.
    config = dataclasses.replace(config, sandbox_webhook_concurrency=32, sandbox_webhook_ordered=False)
    app = create_app(config, webhook_transport=synchronous_webhooks(holder))
    holder["app"] = app
    apply_after_delivery(app)
    app.config["TESTING"] = False  # errors go through the handlers, as in production
    # The catalog's events, refused while the app was being made, would wait for
    # their retry (Stripe's schedule, in sandbox time): each test starts from none.
    wipe(app)
    return app


CATALOG_TABLES = {"sandbox_price_lookup_keys"}
CATALOG_OBJECTS = ("product", "price")


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


@pytest.fixture
def app(session_app: Flask) -> Iterator[Flask]:
    state: BillingState = session_app.extensions["billing"]
    ensure_catalog(state.gateway)  # what the sandbox starts with
    state.prices.clear()
    yield session_app
    wipe(session_app)


@pytest.fixture
def state(app: Flask) -> BillingState:
    return app.extensions["billing"]  # type: ignore[no-any-return]


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


@pytest.fixture
def apply_now(app: Flask) -> Any:
    """apply_now() -> what a worker would do now: run the queued tasks, then
    apply every event that may run (events delivered by hand in a test)."""
    from billing.jobs import apply_due

    def run() -> int:
        state: BillingState = app.extensions["billing"]
        with app.app_context():
            return int(state.queue.run_queued() + apply_due())

    return run


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def auth(config: Config) -> Any:
    """auth("alice") -> headers with a valid bearer token for user alice."""

    def headers(user_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(config, user_id)}"}

    return headers


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
        return {"alice": self, "ws": ws, "account": account, "acc": f"/workspaces/{ws}/billing-accounts/{account['id']}"}

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


@pytest.fixture
def as_user(client: FlaskClient, auth: Any) -> Any:
    """as_user("alice") -> an Api acting as alice."""
    return lambda user_id: Api(client, auth(user_id))


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


@pytest.fixture
def subscribe(state: BillingState) -> Any:
    """subscribe(customer_id, {"users": 3}) -> a Stripe subscription made through
    the gateway (creating subscriptions through the API is the next issue)."""
    import uuid

    prices: dict[str, Any] = {}

    def make(customer_id: str, quantities: dict[str, int], interval: str = "month",
             currency: str = "usd", **extra: Any) -> Any:
        items = []
        for product, quantity in quantities.items():
            key = f"{product}_{currency}_{interval}"
            if key not in prices:
                found = state.gateway.prices_by_lookup_key([key])
                prices[key] = found.get(key) or state.gateway.create_price(
                    {"currency": currency, "unit_amount": 1500, "recurring": {"interval": interval},
                     "product_data": {"name": product}, "lookup_key": key},
                    idempotency_key=uuid.uuid4().hex,
                )
            items.append({"price": prices[key].id, "quantity": quantity})
        params = {"customer": customer_id, "items": items, "collection_method": "send_invoice",
                  "days_until_due": 30, **extra}
        if "trial_period_days" in extra:
            params.pop("collection_method")
            params.pop("days_until_due")
        return state.gateway.create_subscription(params, idempotency_key=uuid.uuid4().hex)

    return make


@pytest.fixture
def webhooks_lost(app: Flask, state: BillingState, monkeypatch: Any) -> None:
    """Stripe's webhooks don't reach us (they stay pending in the sandbox)."""
    if OVER_HTTP:
        monkeypatch.setattr(app.extensions["webhook_front"], "lost", True)
        return
    monkeypatch.setattr(state.webhooks, "_transport", lambda payload, headers: 503)


@pytest.fixture
def webhooks_ignored(app: Flask, state: BillingState, monkeypatch: Any) -> None:
    """Stripe's webhooks are acknowledged unread (for bulk set-up that doesn't need them)."""
    if OVER_HTTP:
        monkeypatch.setattr(app.extensions["webhook_front"], "ignored", True)
        return
    monkeypatch.setattr(state.webhooks, "_transport", lambda payload, headers: 200)


LIVE_API_KEY = "sk_test_51SecretKeyThatMustNeverLeak"


@pytest.fixture
def live_app(database_url: str, session_app: Flask, monkeypatch: Any) -> Iterator[Flask]:
    """The service with a (fake) live key: Stripe calls go through the library's requests client."""
    import stripe

    monkeypatch.setattr(stripe.HTTPClient, "_sleep_time_seconds", lambda self, n: 0)
    app = create_app(Config.from_env({**TEST_ENV, "DATABASE_URL": database_url, "STRIPE_API_KEY": LIVE_API_KEY}))
    yield app
    wipe(app)


@pytest.fixture
def live_alice(live_app: Flask, auth: Any) -> Api:
    return Api(live_app.test_client(), auth("alice"))


@pytest.fixture
def mocked() -> Iterator[Any]:
    """api.stripe.com, mocked at the requests level."""
    import responses

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps



@pytest.fixture
def reconcile_now(app: Flask) -> Any:
    """reconcile_now() -> `flask reconcile`'s report, run as the CLI runs it (in an app context)."""
    from billing.reconcile import reconcile

    def run(full: bool = False) -> Any:
        with app.app_context():
            return reconcile(full=full)

    return run


@pytest.fixture(autouse=True)
def reads_cost_stripe_nothing(request: Any, monkeypatch: Any) -> Iterator[list[str]]:
    """Every GET of the API is answered from the service's copy of Stripe: a
    Stripe request made while one is handled fails, and fails the test. (Tests
    of the one expected exception, an account older than the copy, opt out with
    `@pytest.mark.stripe_reads`.)"""
    import stripe
    from flask import has_request_context
    from flask import request as flask_request

    from billing.instrumentation import InstrumentedHTTPClient

    violations: list[str] = []
    if request.node.get_closest_marker("stripe_reads"):
        yield violations
        return
    original = InstrumentedHTTPClient.request_with_retries

    def guarded(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if has_request_context() and flask_request.method == "GET" and flask_request.path != "/readyz":
            violations.append(f"{flask_request.path} -> {method.upper()} {url}")
            raise stripe.APIConnectionError("a GET of the API must not call Stripe")
        return original(self, method, url, *args, **kwargs)

    monkeypatch.setattr(InstrumentedHTTPClient, "request_with_retries", guarded)
    yield violations
    assert violations == [], f"GETs that called Stripe: {violations}"
