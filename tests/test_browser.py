"""A front end in a real browser: headless Chromium (Debian's `chromium`, driven
by selenium through Debian's `chromedriver`) loads a page from another origin on
loopback and calls the service, under gunicorn on the sandbox, with `fetch`.

The page on an origin in CORS_ORIGINS sends `Authorization` and
`Idempotency-Key` (so every write is preflighted) and reads the bodies and the
exposed headers: `X-Request-Id`, `Idempotent-Replayed` on a replay, `Retry-After`
on a 429. A page on any other origin cannot read an answer: its fetch rejects,
and a preflighted write never reaches the service.

Without Chromium the module is skipped, unless REQUIRE_BROWSER=1 (CI), where
that is a failure.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, delete, insert

from app import create_app
from bench.run import JWT_SECRET, Server, free_port, serve
from billing.cli import run_migrations
from billing.config import Config
from billing.tokens import mint_token
from stripe_sandbox.idempotency import api_key_hash
from stripe_sandbox.models import SandboxRateWindow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
    "--metrics-recording-only",
]


def browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    driver = shutil.which("chromedriver") or (CHROMEDRIVER if os.path.exists(CHROMEDRIVER) else None)
    missing = [name for name, path in (("chromium", chromium), ("chromium-driver", driver)) if path is None]
    if missing:
        reason = f"the browser test needs Debian's {' and '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    assert chromium and driver
    return chromium, driver


PAGE = b"<!doctype html><meta charset=utf-8><title>front end</title><p>a front end</p>"


class PageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Page:
    origin: str
    server: ThreadingHTTPServer


def page_server() -> Page:
    """A front end's page on its own origin: `localhost`, another host than the API's 127.0.0.1."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), PageHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return Page(f"http://localhost:{server.server_address[1]}", server)


@dataclass
class Stack:
    api: Server
    allowed: Page
    other: Page
    database_url: str

    def token(self, user_id: str) -> str:
        return mint_token(Config.from_env(self.api.env), user_id)


def load_catalog(database_url: str) -> None:
    """The sandbox's catalog, loaded before the workers start: two workers loading it at
    once under Stripe's rate limits would be refused, and /readyz would wait for it."""
    env = {"DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET, "STRIPE_SANDBOX": "1", "LOG_LEVEL": "WARNING"}
    app = create_app(Config.from_env(env), webhook_transport=lambda payload, headers: 200)
    app.extensions["billing"].db.dispose()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    browser_paths()
    allowed, other = page_server(), page_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            database_url = f"sqlite:///{tmp}/browser.sqlite3"
            run_migrations(database_url)
            load_catalog(database_url)
            # Stripe's live-mode limits, so one endpoint's quota can be spent without stopping the rest.
            extra = {"CORS_ORIGINS": allowed.origin, "SANDBOX_RATE_LIMITS": "live"}
            with serve(database_url, workers=2, threads=4, extra=extra) as api:
                yield Stack(api, allowed, other, database_url)
    finally:
        for page in (allowed, other):
            page.server.shutdown()
            page.server.server_close()


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = browser_paths()
    options = Options()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    # An explicit driver path: selenium would otherwise try to download one.
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


# Runs in the page: one fetch, and what the page can read of its answer (or why it rejected).
FETCH = """
const [url, method, headers, body, done] = arguments;
fetch(url, {method, headers, body: body === null ? undefined : JSON.stringify(body), mode: "cors"})
  .then(async (response) => {
    const read = (name) => response.headers.get(name);
    done({status: response.status, body: await response.json(),
          headers: {"x-request-id": read("X-Request-Id"), "idempotent-replayed": read("Idempotent-Replayed"),
                    "retry-after": read("Retry-After")}});
  })
  .catch((error) => done({rejected: String(error)}));
"""


class FrontEnd:
    """A page on `origin` in the browser, calling the API as one user."""

    def __init__(self, browser: Any, stack: Stack, origin: str, user_id: str) -> None:
        self.browser, self.stack, self.user_id = browser, stack, user_id
        self.bearer = f"Bearer {stack.token(user_id)}"
        browser.get(origin + "/")
        assert browser.execute_script("return location.origin") == origin

    def fetch(self, method: str, path: str, body: Any = None, **headers: str) -> dict[str, Any]:
        sent = {
            "Authorization": self.bearer,
            **({"Content-Type": "application/json"} if body is not None else {}),
            **{name.replace("_", "-"): value for name, value in headers.items()},
        }
        result: dict[str, Any] = self.browser.execute_async_script(
            FETCH, self.stack.api.base + path, method, sent, body
        )
        return result


def workspaces_of(stack: Stack, user_id: str) -> list[dict[str, Any]]:
    """What the service holds, asked outside the browser."""
    response = requests.get(
        f"{stack.api.base}/workspaces", timeout=10, headers={"Authorization": f"Bearer {stack.token(user_id)}"}
    )
    assert response.status_code == 200
    return list(response.json()["data"])


def test_a_front_end_on_an_allowed_origin_reads_answers_and_exposed_headers(browser: Any, stack: Stack) -> None:
    page = FrontEnd(browser, stack, stack.allowed.origin, "browser-user")
    key = secrets.token_hex(8)

    created = page.fetch(
        "POST", "/workspaces", {"name": "From a browser", "billing_mode": "single"}, Idempotency_Key=key
    )
    assert created.get("status") == 201, created
    workspace = created["body"]
    assert workspace["name"] == "From a browser" and workspace["id"]
    assert created["headers"]["x-request-id"].startswith("req_")
    assert created["headers"]["idempotent-replayed"] is None

    replayed = page.fetch(
        "POST", "/workspaces", {"name": "From a browser", "billing_mode": "single"}, Idempotency_Key=key
    )
    assert replayed.get("status") == 201, replayed
    assert replayed["body"] == workspace and replayed["headers"]["idempotent-replayed"] == "true"
    assert [w["id"] for w in workspaces_of(stack, "browser-user")] == [workspace["id"]]  # made once

    # The page's own request id (an allowed request header) comes back readable.
    read = page.fetch("GET", f"/workspaces/{workspace['id']}", X_Request_Id="page-req-1")
    assert read.get("status") == 200 and read["body"]["id"] == workspace["id"]
    assert read["headers"]["x-request-id"] == "page-req-1"

    accounts = f"/workspaces/{workspace['id']}/billing-accounts"
    account = page.fetch(
        "POST",
        accounts,
        {"name": "Browser billing", "email": "b@browser.test", "address": {"country": "US"}},
        Idempotency_Key=secrets.token_hex(8),
    )
    assert account.get("status") == 201, account
    account_path = f"{accounts}/{account['body']['id']}"

    with customer_updates_spent(stack):
        limited = page.fetch("PATCH", account_path, {"name": "Renamed"}, Idempotency_Key=secrets.token_hex(8))
    assert limited.get("status") == 429, limited
    assert limited["body"]["code"] == "rate_limited"
    assert limited["headers"]["retry-after"].isdigit()
    renamed = page.fetch("PATCH", account_path, {"name": "Renamed"}, Idempotency_Key=secrets.token_hex(8))
    assert renamed.get("status") == 200 and renamed["body"]["name"] == "Renamed"


class customer_updates_spent:
    """Stripe's per-endpoint quota for customer updates, spent for the next minute:
    the sandbox counts requests per second in its database (stripe_sandbox.rate_limits)."""

    ENDPOINT = "POST /v1/customers/{customer}"

    def __init__(self, stack: Stack) -> None:
        self.engine = create_engine(stack.database_url)
        self.bucket = f"{api_key_hash('sk_test_sandbox')} {self.ENDPOINT}"

    def __enter__(self) -> None:
        now = int(time.time())
        with self.engine.begin() as conn:
            conn.execute(
                insert(SandboxRateWindow),
                [
                    {"bucket": self.bucket, "window_start_second": second, "count": 25}
                    for second in range(now - 1, now + 60)
                ],
            )

    def __exit__(self, *exc: object) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(SandboxRateWindow).where(SandboxRateWindow.bucket == self.bucket))
        self.engine.dispose()


def test_a_page_from_another_origin_cannot_read_the_api(browser: Any, stack: Stack) -> None:
    page = FrontEnd(browser, stack, stack.other.origin, "stranger")

    write = page.fetch(
        "POST", "/workspaces", {"name": "Cross-site", "billing_mode": "single"}, Idempotency_Key=secrets.token_hex(8)
    )
    assert write == {"rejected": "TypeError: Failed to fetch"}
    assert workspaces_of(stack, "stranger") == []  # refused at the preflight: the POST was never sent

    # Even a request without a preflight (no custom header) is answered, but the page cannot read it.
    simple = browser.execute_async_script(
        "const [url, done] = arguments; fetch(url).then(r => done({status: r.status}))"
        ".catch(e => done({rejected: String(e)}));",
        stack.api.base + "/healthz",
    )
    assert simple == {"rejected": "TypeError: Failed to fetch"}
    assert requests.get(stack.api.base + "/healthz", timeout=10).status_code == 200
