"""The service on a sandbox with Stripe's rate limits (SANDBOX_RATE_LIMITS): a write
Stripe refuses for the rate is the contract's 429, while reads, answered from the
service's copy of Stripe, go on answering."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from app import create_app
from billing import budget
from billing.config import Config, ConfigError
from billing.state import BillingState
from stripe_sandbox import rate_limits
from tests.helpers import TEST_ENV, Api, assert_error, budget_of, synchronous_webhooks, wipe


class Clock:
    """Real time as the sandbox's rate limiter sees it, pinned to one second at a time."""

    def __init__(self) -> None:
        self.second = 2_000_000_000

    def next_second(self) -> None:
        self.second += 1


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    pinned = Clock()
    monkeypatch.setattr(rate_limits, "now", lambda: pinned.second + 0.5)
    return pinned


@pytest.fixture
def limited_app(app: Flask, database_url: str, clock: Clock) -> Iterator[Flask]:
    """The service on the sandbox with test mode's limits (25 requests a second)."""
    holder: dict[str, Flask] = {}
    config = Config.from_env({**TEST_ENV, "DATABASE_URL": database_url, "SANDBOX_RATE_LIMITS": "test"})
    limited = create_app(config, webhook_transport=synchronous_webhooks(holder))
    holder["app"] = limited
    limited.config["TESTING"] = False  # errors go through the handlers, as in production
    clock.next_second()  # starting up used some of its second
    yield limited
    wipe(limited)


def test_a_write_past_the_limit_is_429_while_reads_answer(limited_app: Flask, clock: Clock, auth: Any) -> None:
    alice = Api(limited_app.test_client(), auth("alice"))
    workspace = alice.workspace()
    account = alice.account(workspace)
    path = f"/workspaces/{workspace}/billing-accounts/{account['id']}"

    clock.next_second()
    state: BillingState = limited_app.extensions["billing"]
    for _ in range(25):  # another part of the service spends this second's requests
        state.gateway.client.v1.customers.list()

    response = alice.patch(path, {"name": "Renamed"})
    body = assert_error(response, 429, "rate_limited")
    assert body["type"] == "rate_limit_error"
    assert response.headers["Retry-After"].isdigit()

    read = alice.get(path)
    assert read.status_code == 200 and read.json["name"] == account["name"]
    assert alice.get(f"/workspaces/{workspace}/billing-accounts").status_code == 200

    clock.next_second()  # backed off: the next second has room again
    renamed = alice.patch(path, {"name": "Renamed"})
    assert renamed.status_code == 200, renamed.json
    assert alice.get(path).json["name"] == "Renamed"


@pytest.mark.parametrize("value", ["live", "test", ""])
def test_sandbox_rate_limits_setting(value: str) -> None:
    config = Config.from_env({**TEST_ENV, "SANDBOX_RATE_LIMITS": value})
    assert config.sandbox_rate_limits == value


def test_sandbox_rate_limits_refuses_anything_else() -> None:
    with pytest.raises(ConfigError, match="SANDBOX_RATE_LIMITS"):
        Config.from_env({**TEST_ENV, "SANDBOX_RATE_LIMITS": "fast"})


def test_sandbox_rate_limits_mean_nothing_with_a_real_key() -> None:
    env = {**TEST_ENV, "STRIPE_API_KEY": "sk_test_real", "SANDBOX_RATE_LIMITS": "live"}
    assert Config.from_env(env).sandbox_rate_limits == ""
    assert budget_of(create_app(Config.from_env(env))).limits == budget.TEST  # the key's


def test_a_fake_at_stripe_api_base_has_the_limits_it_enforces() -> None:
    """`python -m stripe_sandbox --rate-limits live` takes only test keys: the budget is live's then."""
    env = {**TEST_ENV, "STRIPE_API_KEY": "sk_test_fake", "STRIPE_API_BASE": "http://127.0.0.1:12111"}
    assert budget_of(create_app(Config.from_env({**env, "SANDBOX_RATE_LIMITS": "live"}))).limits == budget.LIVE
    assert budget_of(create_app(Config.from_env(env))).limits == budget.TEST


def test_a_fresh_sandbox_loads_its_whole_catalog_under_the_rate_limit(
    tmp_path: Any, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each worker loads the catalog at start-up; the 25 requests a second of test
    mode refuse part of it, and the load waits them out instead of stopping half-way."""
    from billing import catalog
    from billing.cli import run_migrations

    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    run_migrations(url)
    waits: list[float] = []
    monkeypatch.setattr(catalog.time, "sleep", lambda seconds: (waits.append(seconds), clock.next_second()))  # type: ignore[attr-defined]
    fresh = create_app(Config.from_env({**TEST_ENV, "DATABASE_URL": url, "SANDBOX_RATE_LIMITS": "test"}))
    clock.next_second()
    state: BillingState = fresh.extensions["billing"]
    assert waits, "the load never met the rate limit: the test proves nothing"
    assert catalog.missing_prices(state.gateway) == []
    state.db.dispose()
