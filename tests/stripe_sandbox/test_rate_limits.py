"""Stripe's rate limits: 25 requests a second in test mode; 100 in all and 25 per endpoint in live mode."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import stripe

from stripe_sandbox import SandboxHTTPClient, SqlSessions, rate_limits

MESSAGE = "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests."
SECOND = 2_000_000_000  # a real-time second the tests pin requests to


class Clock:
    def __init__(self) -> None:
        self.at = SECOND + 0.25

    def next_second(self) -> None:
        self.at = int(self.at) + 1 + 0.25


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    pinned = Clock()
    monkeypatch.setattr(rate_limits, "now", lambda: pinned.at)
    return pinned


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every request that reaches the emulator (the library's retries included)."""
    seen: list[str] = []
    original = SandboxHTTPClient.request

    def counting(self: SandboxHTTPClient, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(f"{method.upper()} {url}")
        return original(self, method, url, *args, **kwargs)

    monkeypatch.setattr(SandboxHTTPClient, "request", counting)
    yield seen


def limited(database: SqlSessions, mode: str, api_key: str = "sk_test_sandbox") -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key, http_client=SandboxHTTPClient(database, rate_limits=mode), max_network_retries=2
    )


def assert_rate_limited(call: Callable[[], object]) -> stripe.RateLimitError:
    with pytest.raises(stripe.RateLimitError) as caught:
        call()
    error = caught.value
    assert error.http_status == 429
    assert error.user_message == MESSAGE
    assert error.json_body is not None
    body = error.json_body["error"]
    assert (body["type"], body["message"]) == ("rate_limit_error", MESSAGE) and "code" not in body
    assert error.headers is not None and "stripe-should-retry" not in error.headers
    return error


def test_test_mode_answers_the_26th_request_of_a_second_with_429(
    database: SqlSessions, clock: Clock, attempts: list[str]
) -> None:
    client = limited(database, "test")
    for n in range(25):  # any endpoints: test mode counts requests in all
        if n % 2:
            client.v1.customers.create({"name": f"n{n}"})
        else:
            client.v1.customers.list()
    del attempts[:]
    assert_rate_limited(lambda: client.v1.products.list())
    # As against Stripe, the library does not retry a rate limit: backing off is the caller's choice.
    assert len(attempts) == 1


def test_the_window_resets_the_next_second(database: SqlSessions, clock: Clock) -> None:
    client = limited(database, "test")
    for _ in range(25):
        client.v1.customers.list()
    assert_rate_limited(lambda: client.v1.customers.list())
    clock.next_second()
    for _ in range(25):
        client.v1.customers.list()
    assert_rate_limited(lambda: client.v1.customers.list())


def test_a_rejected_request_uses_up_nothing(database: SqlSessions, clock: Clock) -> None:
    client = limited(database, "live")
    for _ in range(25):
        client.v1.customers.list()
    for _ in range(100):  # the total would be spent if these counted
        assert_rate_limited(lambda: client.v1.customers.list())
    client.v1.products.list()


def test_live_mode_limits_each_endpoint_to_25(database: SqlSessions, clock: Clock, client: stripe.StripeClient) -> None:
    ids = [client.v1.customers.create({"name": f"n{n}"}).id for n in range(26)]  # unlimited client
    live = limited(database, "live")
    for customer_id in ids[:25]:  # one endpoint, whatever the id
        live.v1.customers.retrieve(customer_id)
    assert_rate_limited(lambda: live.v1.customers.retrieve(ids[25]))
    assert len(live.v1.customers.list().data) == 10  # another endpoint still answers
    live.v1.customers.update(ids[25], {"name": "still"})  # and so does another method on the same path


def test_live_mode_limits_all_requests_to_100(database: SqlSessions, clock: Clock) -> None:
    live = limited(database, "live")
    for _ in range(25):
        live.v1.customers.list()
        live.v1.products.list()
        live.v1.prices.list()
        live.v1.events.list()
    assert_rate_limited(lambda: live.v1.subscriptions.list())


def test_requests_of_unknown_urls_and_invalid_requests_count_too(database: SqlSessions, clock: Clock) -> None:
    client = limited(database, "test")
    for _ in range(12):
        with pytest.raises(stripe.InvalidRequestError):
            client.v1.customers.retrieve("cus_missing")
        with pytest.raises(stripe.InvalidRequestError):
            client.raw_request("get", "/v1/no_such_thing")
    client.v1.customers.list()
    assert_rate_limited(lambda: client.v1.customers.list())


def test_no_limit_when_unset(database: SqlSessions, clock: Clock) -> None:
    client = limited(database, "")
    for _ in range(101):
        client.v1.customers.list()


def test_clients_on_one_database_share_the_count(database: SqlSessions, clock: Clock) -> None:
    """As the service's processes do: each has its own client, all on one database."""
    first, second = limited(database, "test"), limited(database, "test")
    other_database = SqlSessions(database.url)  # another process's connections
    try:
        third = limited(other_database, "test")
        for _ in range(10):
            first.v1.customers.list()
            second.v1.customers.list()
        for _ in range(5):
            third.v1.customers.list()
        for each in (first, second, third):
            assert_rate_limited(each.v1.customers.list)
    finally:
        other_database.dispose()


def test_each_api_key_has_its_own_limits(database: SqlSessions, clock: Clock) -> None:
    mine, theirs = limited(database, "test"), limited(database, "test", api_key="sk_test_another_account")
    for _ in range(25):
        mine.v1.customers.list()
    assert_rate_limited(lambda: mine.v1.customers.list())
    theirs.v1.customers.list()


def test_an_unknown_mode_is_refused(database: SqlSessions) -> None:
    with pytest.raises(ValueError, match="'live', 'test'"):
        SandboxHTTPClient(database, rate_limits="fast")
