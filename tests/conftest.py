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
import functools
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
import responses
import stripe
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, make_url, text

from app import create_app
from billing.catalog import ensure_catalog
from billing.cli import run_migrations
from billing.config import Config
from billing.db import normalize_database_url
from billing.gateway import StripeGateway, build_client
from billing.replica import Keeper
from billing.state import BillingState
from billing.tokens import mint_token
from stripe_sandbox import SandboxHTTPClient
from tests import helpers
from tests.helpers import (
    FAULTS_API_KEY,
    LIVE_API_KEY,
    STRIPE_URL,
    TEST_ENV,
    Api,
    FakeStripe,
    synchronous_webhooks,
    wipe,
)


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
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stripe_sandbox",
            "--port",
            "0",
            "--database",
            database_url,
            "--webhook-url",
            webhook_url,
            "--webhook-secret",
            TEST_ENV["STRIPE_WEBHOOK_SECRET"],
            "--webhooks-before-answer",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
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
        return Config.from_env(
            {
                **TEST_ENV,
                "DATABASE_URL": database_url,
                "STRIPE_API_KEY": OVER_HTTP_KEY,
                "STRIPE_API_BASE": request.getfixturevalue("emulator_url"),
            }
        )
    return Config.from_env({**TEST_ENV, "DATABASE_URL": database_url})


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


@pytest.fixture
def as_user(client: FlaskClient, auth: Any) -> Any:
    """as_user("alice") -> an Api acting as alice."""
    return lambda user_id: Api(client, auth(user_id))


@pytest.fixture
def subscribe_in_stripe(state: BillingState) -> Any:
    """subscribe_in_stripe(customer_id, {"users": 3}) -> a Stripe subscription made
    through the gateway, not the API (see helpers.subscribe_in_stripe)."""
    return functools.partial(helpers.subscribe_in_stripe, state.gateway, {})


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
            return reconcile(app.extensions["billing"], full=full)

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


@pytest.fixture
def frozen_sandbox_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sandbox's clock stands still (at a whole second) while the test runs."""

    import stripe_sandbox.clock

    now = float(int(time.time()))

    class Frozen:
        @staticmethod
        def time() -> float:
            return now

    monkeypatch.setattr(stripe_sandbox.clock, "time", Frozen)


@pytest.fixture
def stripe_world(session_app: Flask, database_url: str, monkeypatch: Any) -> Iterator[dict[str, Any]]:
    """The service with a (fake) live key against a fake api.stripe.com answered by the
    sandbox, faults injected on `fake.plan`: {"app", "fake", "brain" (a gateway on the sandbox)}."""
    monkeypatch.setattr(stripe.HTTPClient, "_sleep_time_seconds", lambda self, n: 0)
    state = session_app.extensions["billing"]
    brain = SandboxHTTPClient(state.db)
    fake = FakeStripe(brain)
    app = create_app(Config.from_env({**TEST_ENV, "DATABASE_URL": database_url, "STRIPE_API_KEY": FAULTS_API_KEY}))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for method in ("GET", "POST", "DELETE"):
            mock.add_callback(method, STRIPE_URL, callback=fake)
        ensure_catalog(app.extensions["billing"].gateway)
        # Changes made behind the service's back reach its copy as webhooks would bring them.
        brain_gateway = StripeGateway(build_client("sk_test_sandbox", http_client=brain), keep=Keeper(state.db))
        yield {"app": app, "fake": fake, "brain": brain_gateway}
    wipe(session_app)
