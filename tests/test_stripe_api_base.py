"""STRIPE_API_BASE: every process and command talks to the Stripe it names (here the emulator's
own HTTP server, `python -m stripe_sandbox`), says which and in what mode, and refuses a base
that would send the key somewhere it should not go."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app import create_app
from billing.catalog import all_lookup_keys
from billing.cli import run_migrations
from billing.config import Config, ConfigError
from billing.gateway import build_client
from stripe_sandbox import SqlSessions
from stripe_sandbox.server import SandboxServer, bind
from tests.db_proxy import bind_local
from tests.helpers import TEST_ENV

ROOT = Path(__file__).resolve().parent.parent
TEST_KEY = "sk_test_51ApiBaseTestKey"


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[SandboxServer]:
    """The emulator's HTTP server on a loopback port, on its own database."""
    database = SqlSessions(f"sqlite:///{tmp_path}/stripe.sqlite3")
    server = SandboxServer(database, bind_local())
    server.start()
    yield server
    server.shutdown()
    database.dispose()


def service_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A service process's environment, with a key and nothing of the test run's own settings.
    Every proxied request (anything not on loopback, so api.stripe.com) goes to a dead proxy: a
    command that forgot STRIPE_API_BASE fails instead of reaching the real Stripe."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "SANDBOX_", "DATABASE_", "JWT_"))}
    env.update(
        {
            **TEST_ENV,
            "STRIPE_SANDBOX": "",
            "STRIPE_API_KEY": TEST_KEY,
            "STRIPE_TIMEOUT": "5",
            "DATABASE_URL": f"sqlite:///{tmp_path}/billing.sqlite3",
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost",
            **extra,
        }
    )
    return env


def flask(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_sync_catalog_command_talks_to_the_stripe_api_base(tmp_path: Path, emulator: SandboxServer) -> None:
    """`flask sync-catalog` as the README runs it: the catalog lands in the Stripe STRIPE_API_BASE names."""
    env = service_env(tmp_path, STRIPE_API_BASE=emulator.url, LOG_LEVEL="INFO")
    run_migrations(env["DATABASE_URL"])
    result = flask(env, "sync-catalog")
    assert result.returncode == 0, result.stderr
    there = build_client(TEST_KEY, api_base=emulator.url)
    keys = {price.lookup_key for price in there.v1.prices.list({"limit": 100}).auto_paging_iter()}
    assert keys == set(all_lookup_keys())
    # The start-up log says where it went, and in which mode.
    assert f"test mode at {emulator.url}" in result.stderr


def test_readiness_and_start_up_log_name_the_endpoint_and_mode(
    database_url: str, session_app: Any, emulator: SandboxServer, caplog: Any
) -> None:
    env = {**TEST_ENV, "DATABASE_URL": database_url, "STRIPE_API_KEY": TEST_KEY, "STRIPE_API_BASE": emulator.url + "/"}
    with caplog.at_level(logging.INFO, logger="billing"):
        app = create_app(Config.from_env(env))
    started = [r for r in caplog.records if getattr(r, "stripe_endpoint", None)]
    assert [(r.stripe_mode, r.stripe_endpoint) for r in started] == [("test", emulator.url)]
    assert "test mode" in started[0].getMessage() and emulator.url in started[0].getMessage()
    body = app.test_client().get("/readyz").json
    # It reached the emulator (whose catalog is empty: nothing synced there yet).
    assert body["stripe"] == "ok" and body["catalog"].startswith("missing")
    assert (body["stripe_mode"], body["stripe_endpoint"]) == ("test", emulator.url)


def test_readiness_names_stripe_itself_and_the_sandbox(client: Any, live_app: Any, mocked: Any) -> None:
    assert client.get("/readyz").json["stripe_endpoint"] == "in-process"
    assert live_app.test_client().get("/readyz").json["stripe_endpoint"] == "https://api.stripe.com"


@pytest.mark.parametrize(
    "base",
    [
        "api.stripe.com",
        "ftp://127.0.0.1",
        "https://",
        "http://stripe.internal.example:8080",
        "http://10.0.0.7",
        "https://user:secret@proxy.example",
        "https://proxy.example/?x=1",
        "https://proxy.example:99999",
        "https://proxy.example:port",
    ],
)
def test_a_malformed_or_insecure_base_is_refused(base: str) -> None:
    with pytest.raises(ConfigError, match="STRIPE_API_BASE"):
        Config.from_env({**TEST_ENV, "DATABASE_URL": "sqlite://", "STRIPE_API_KEY": TEST_KEY, "STRIPE_API_BASE": base})


@pytest.mark.parametrize(
    "base, kept",
    [
        ("http://127.0.0.1:12111", "http://127.0.0.1:12111"),
        ("http://localhost:12111/", "http://localhost:12111"),
        ("http://[::1]:12111", "http://[::1]:12111"),
        ("https://egress.example/stripe", "https://egress.example/stripe"),
    ],
)
def test_https_or_a_loopback_fake_is_taken(base: str, kept: str) -> None:
    config = Config.from_env(
        {**TEST_ENV, "DATABASE_URL": "sqlite://", "STRIPE_API_KEY": TEST_KEY, "STRIPE_API_BASE": base}
    )
    assert (config.stripe_api_base, config.stripe_endpoint, config.stripe_mode) == (kept, kept, "test")


def test_the_sandbox_refuses_a_base_it_would_ignore() -> None:
    with pytest.raises(ConfigError, match="STRIPE_API_BASE needs STRIPE_API_KEY"):
        Config.from_env({**TEST_ENV, "DATABASE_URL": "sqlite://", "STRIPE_API_BASE": "http://127.0.0.1:12111"})


def test_every_process_refuses_an_insecure_base_in_one_line(tmp_path: Path) -> None:
    result = flask(service_env(tmp_path, STRIPE_API_BASE="http://stripe.example.com"), "sync-catalog")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "billing: cannot start: STRIPE_API_BASE: http:// is only for a loopback host (a fake on this machine); "
        "use https:// for stripe.example.com"
    ]


def test_the_server_takes_port_0_from_the_local_range(monkeypatch: Any) -> None:
    listener = bind("127.0.0.1", 0, os.environ.get("LOCAL_PORT_RANGE", ""))
    try:
        low, _, high = (os.environ.get("LOCAL_PORT_RANGE") or "1-65535").partition("-")
        assert int(low) <= listener.getsockname()[1] <= int(high)
    finally:
        listener.close()
