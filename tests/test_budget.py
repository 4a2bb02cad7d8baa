"""The Stripe request budget (billing.budget): one count per Stripe account in the
database, shared by every process; user requests first, background work within
what is left, a 429 pausing background work everywhere.

The service runs on the sandbox with Stripe's limits (SANDBOX_RATE_LIMITS), so
every request the budget lets through meets the emulator's own limiter: a
mistake in the budget is a 429 the emulator answers, as Stripe would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import stripe
from flask import Flask
from sqlalchemy import event, select

from app import create_app
from billing import budget
from billing.budget import BudgetExhausted, background, endpoint
from billing.config import Config, ConfigError
from billing.models import StripeBudgetWindow
from billing.state import BillingState
from stripe_sandbox import rate_limits
from stripe_sandbox.api import build_router
from tests.helpers import TEST_ENV, Api, budget_of, synchronous_webhooks, wipe

SECOND = 2_000_000_000


class Clock:
    """Real time as both the budget and the emulator's limiter see it, pinned to one
    second at a time; the budget's sleeps are noted and move it to the next second."""

    def __init__(self) -> None:
        self.second = SECOND
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[], None] | None = None

    def now(self) -> float:
        return self.second + 0.5

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.second += 1
        if self.on_sleep is not None:
            self.on_sleep()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    pinned = Clock()
    monkeypatch.setattr(rate_limits, "now", pinned.now)
    monkeypatch.setattr(budget, "now", pinned.now)
    monkeypatch.setattr(budget, "sleep", pinned.sleep)
    return pinned


@pytest.fixture
def limited(database_url: str, session_app: Flask) -> Iterator[Callable[[str], Flask]]:
    """limited("live"|"test") -> another instance of the service (as another process
    would be) on the test database, on a sandbox with Stripe's limits of that mode."""
    made: list[Flask] = []

    def make(mode: str) -> Flask:
        holder: dict[str, Flask] = {}
        config = Config.from_env({**TEST_ENV, "DATABASE_URL": database_url, "SANDBOX_RATE_LIMITS": mode})
        app = create_app(config, webhook_transport=synchronous_webhooks(holder))
        holder["app"] = app
        app.config["TESTING"] = False
        made.append(app)
        return app

    yield make
    wipe(session_app)
    for app in made:
        app.extensions["billing"].db.dispose()


def state_of(app: Flask) -> BillingState:
    state: BillingState = app.extensions["billing"]
    return state


def counted(app: Flask, bucket_suffix: str = "") -> int:
    """What the budget counted in the clock's second (all requests, or one endpoint's)."""
    b = budget_of(app)
    bucket = f"{b.scope} {bucket_suffix}" if bucket_suffix else b.scope
    with state_of(app).db.read() as session:
        count = session.scalar(
            select(StripeBudgetWindow.count).where(
                StripeBudgetWindow.bucket == bucket, StripeBudgetWindow.window_start_second == int(budget.now())
            )
        )
    return int(count or 0)


def list_customers(app: Flask) -> None:
    state_of(app).gateway.client.v1.customers.list({"limit": 1})


# -- endpoints ------------------------------------------------------------------


def test_an_endpoint_is_the_emulators_path_template_whatever_the_ids() -> None:
    """Every route the emulator (Stripe) counts apart is one endpoint here, and ids fold."""
    import re

    for route in build_router()._routes:
        placeholder = re.compile(r"\{\w+\}")
        url = "https://api.stripe.com" + placeholder.sub("xyz_1AbC2dEf", route.template)
        template = placeholder.sub("{id}", route.template)
        assert endpoint(route.method, url) == f"{route.method.upper()} {template}"
    assert endpoint("get", "https://api.stripe.com/v1/customers/cus_A1?expand[]=x") == "GET /v1/customers/{id}"
    assert endpoint("post", "https://api.stripe.com/v1/customers/search") == "POST /v1/customers/search"


# -- shared by every process ------------------------------------------------------


def test_two_instances_count_in_one_window(limited: Callable[[str], Flask], clock: Clock) -> None:
    """Test mode: 25 a second, planned at 23. Two processes' user requests add up, and
    the request past 23 waits for the next second instead of earning Stripe's 429."""
    one, two = limited("test"), limited("test")
    clock.second += 10  # starting up used some of its second
    for _ in range(12):
        list_customers(one)
    for _ in range(11):
        list_customers(two)
    assert counted(one) == 23 and clock.sleeps == []

    list_customers(one)  # the 24th of the second, sent in the next
    assert len(clock.sleeps) == 1
    assert counted(one) == 1  # counted in the second it was sent in


# -- background work gives way ------------------------------------------------------


def test_background_waits_at_its_share_while_users_go_on(limited: Callable[[str], Flask], clock: Clock) -> None:
    """Test mode: background may fill 18 of the 23 planned; users have the rest, in the same second."""
    app = limited("test")
    clock.second += 10
    with background("webhook", deadline_seconds=None):
        for _ in range(18):
            list_customers(app)
    assert clock.sleeps == []

    with background("webhook", deadline_seconds=0.2), pytest.raises(BudgetExhausted, match="webhook"):
        list_customers(app)
    assert clock.sleeps == [] and counted(app) == 18  # refused: nothing sent, nothing counted

    for _ in range(5):  # a user's requests in the same second go through
        list_customers(app)
    assert clock.sleeps == [] and counted(app) == 23

    with background("webhook", deadline_seconds=None):  # without a deadline: waits for the next second
        list_customers(app)
    assert len(clock.sleeps) == 1 and counted(app) == 1


def test_per_endpoint_share_in_live_mode(limited: Callable[[str], Flask], clock: Clock) -> None:
    """Live mode: 25 a second per endpoint (planned 23, background 18), 100 in all."""
    app = limited("live")
    clock.second += 10
    gateway = state_of(app).gateway
    with background("reconcile", deadline_seconds=0.2):
        for n in range(18):
            assert gateway.retrieve_payment_intent(f"pi_missing{n}") is None
        with pytest.raises(BudgetExhausted):
            gateway.retrieve_payment_intent("pi_missing18")
        list_customers(app)  # another endpoint still has room
    assert counted(app, "GET /v1/payment_intents/{id}") == 18 and counted(app) == 19
    for n in range(5):  # users: up to the endpoint's 23
        assert gateway.retrieve_payment_intent(f"pi_user{n}") is None
    assert clock.sleeps == []
    assert gateway.retrieve_payment_intent("pi_user5") is None  # the 24th waits for the next second
    assert len(clock.sleeps) == 1


# -- Stripe's 429 --------------------------------------------------------------------


def test_a_429_pauses_background_work_everywhere_but_not_users(
    limited: Callable[[str], Flask], clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone else on the account (the Dashboard, another integration) spent the second:
    Stripe answers the budget's request 429. Background work in every process waits out
    the cool-down (1 s: Stripe sends no Retry-After), then sends again; users don't wait."""
    one, two = limited("test"), limited("test")
    clock.second += 10
    sandbox = budget_of(one)  # the same account: one budget in the database
    answers: list[int] = []
    inner = state_of(one).gateway.client._requestor._client.inner
    original = inner.request

    def noted(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        answers.append(result[1])
        assert len(answers) < 10, "sent again and again without pausing"
        return result

    elsewhere = stripe.StripeClient("sk_test_sandbox", http_client=inner)  # not counted by the budget
    for _ in range(25):
        elsewhere.v1.customers.list()
    monkeypatch.setattr(inner, "request", noted)

    users: list[list[float]] = []

    def while_paused() -> None:
        if len(clock.sleeps) != 1:
            return
        # The next second, still cooling down: another process's background work is held,
        # while a user's request (another thread: no background context) goes through.
        with background("webhook", deadline_seconds=0.2), pytest.raises(BudgetExhausted):
            list_customers(two)
        before = len(clock.sleeps)
        thread = threading.Thread(target=lambda: (list_customers(two), users.append(clock.sleeps[before:])))
        thread.start()
        thread.join()

    clock.on_sleep = while_paused
    with background("webhook", deadline_seconds=None):
        list_customers(one)
    assert answers == [429, 200]  # refused, then sent again once the cool-down was over
    assert users == [[]]  # the user's request was answered during the pause, without waiting
    assert len(clock.sleeps) == 2  # paused for the rest of the 429's second and the next one
    assert sandbox.cool_down_bucket == budget_of(two).cool_down_bucket


def test_a_user_request_answered_429_is_not_sent_again(limited: Callable[[str], Flask], clock: Clock) -> None:
    app = limited("test")
    clock.second += 10
    inner = state_of(app).gateway.client._requestor._client.inner
    elsewhere = stripe.StripeClient("sk_test_sandbox", http_client=inner)
    for _ in range(25):
        elsewhere.v1.customers.list()
    with pytest.raises(stripe.RateLimitError):
        list_customers(app)
    assert clock.sleeps == []


# -- priority under load ----------------------------------------------------------------


BACKGROUND_ENDPOINTS = ("customers", "products", "prices", "subscriptions", "invoices", "events")
# Live mode's shape (a limit per endpoint below the total), scaled down so that a few
# threads fill a second on a slow machine too: the emulator and the budget both use it.
SCALED_LIVE = budget.Limits(total=40, per_endpoint=10)


def test_user_writes_never_meet_a_429_while_background_work_saturates(
    limited: Callable[[str], Flask], auth: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live limits, real time: background threads send as fast as the budget lets them
    (each endpoint below its limit, and the total); a user's writes meanwhile (a
    billing account, a subscription, its quantity changed) are all answered."""
    monkeypatch.setitem(
        rate_limits.MODES, "live", rate_limits.Limits(total=SCALED_LIVE.total, per_endpoint=SCALED_LIVE.per_endpoint)
    )
    monkeypatch.setattr(budget, "LIVE", SCALED_LIVE)
    app = limited("live")
    assert budget_of(app).limits == SCALED_LIVE
    gateway = state_of(app).gateway
    alice = Api(app.test_client(), auth("alice"))
    workspace = alice.workspace()
    stop = threading.Event()
    background_answers: dict[str, int] = {"sent": 0, "429": 0}
    lock = threading.Lock()

    def storm(resource: str) -> None:
        with background("storm", deadline_seconds=None):
            while not stop.is_set():
                try:
                    getattr(gateway.client.v1, resource).list({"limit": 1})
                    outcome = "sent"
                except stripe.RateLimitError:
                    outcome = "429"
                with lock:
                    background_answers[outcome] += 1

    threads = [threading.Thread(target=storm, args=(r,)) for r in BACKGROUND_ENDPOINTS]
    for thread in threads:
        thread.start()
    statuses: list[int] = []
    try:
        time.sleep(0.3)
        account = alice.post(
            f"/workspaces/{workspace}/billing-accounts",
            {"name": "Storm", "email": "a@example.com", "address": {"country": "US"}},
        )
        statuses.append(account.status_code)
        path = f"/workspaces/{workspace}/billing-accounts/{account.json['id']}/subscriptions"
        sub = alice.post(path, {"product_quantities": {"users": 2}})
        statuses.append(sub.status_code)
        deadline, users = time.monotonic() + 3, 2
        while time.monotonic() < deadline and set(statuses) <= {200, 201}:
            users += 1
            patched = alice.patch(f"{path}/{sub.json['id']}", {"product_quantities": {"users": users}})
            statuses.append(patched.status_code)
            another = alice.post(
                f"/workspaces/{alice.workspace()}/billing-accounts",
                {"name": f"Storm {users}", "email": "a@example.com", "address": {"country": "US"}},
            )
            statuses.append(another.status_code)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert statuses and set(statuses) <= {200, 201}, statuses
    b = budget_of(app)
    with state_of(app).db.read() as session:
        busiest = session.scalar(
            select(StripeBudgetWindow.count)
            .where(StripeBudgetWindow.bucket == b.scope)
            .order_by(StripeBudgetWindow.count.desc())
            .limit(1)
        )
    # Background work really took its whole share of a second (or the test proves nothing).
    assert busiest is not None and busiest >= b.background_total, (busiest, background_answers)


# -- without limits, no budget ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["", "test"])
def test_no_budget_without_sandbox_rate_limits(mode: str, limited: Callable[[str], Flask]) -> None:
    """The sandbox without SANDBOX_RATE_LIMITS has no limits to keep: no statement per request."""
    app = limited(mode)
    statements: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "stripe_budget_windows" in statement:
            statements.append(statement)

    engine = state_of(app).db.engine
    event.listen(engine, "before_cursor_execute", note)
    try:
        for _ in range(3):
            list_customers(app)
    finally:
        event.remove(engine, "before_cursor_execute", note)
    http_client = state_of(app).gateway.client._requestor._client
    if mode:
        assert http_client.budget is not None and len(statements) >= 3
    else:
        assert http_client.budget is None and statements == []


# -- old windows go ---------------------------------------------------------------------------


def test_old_windows_are_deleted_as_requests_go(limited: Callable[[str], Flask], clock: Clock) -> None:
    app = limited("test")
    clock.second += 10
    list_customers(app)
    first = clock.second
    clock.second += budget.KEEP_SECONDS + 2
    list_customers(app)
    with state_of(app).db.read() as session:
        windows = set(session.scalars(select(StripeBudgetWindow.window_start_second)))
    assert first not in windows and clock.second in windows


# -- configuration ------------------------------------------------------------------------------


def test_the_budget_follows_the_keys_mode() -> None:
    assert budget.limits_for_key("sk_live_abc") == budget.LIVE == budget.limits_for_key("rk_live_abc")
    assert budget.limits_for_key("sk_test_abc") == budget.TEST == budget.limits_for_key("rk_test_abc")


def test_user_reserve_setting() -> None:
    assert Config.from_env(TEST_ENV).stripe_budget_user_reserve == 0.2
    assert Config.from_env({**TEST_ENV, "STRIPE_BUDGET_USER_RESERVE": "0.5"}).stripe_budget_user_reserve == 0.5
    for bad in ("1", "-0.1", "lots"):
        with pytest.raises(ConfigError, match="STRIPE_BUDGET_USER_RESERVE"):
            Config.from_env({**TEST_ENV, "STRIPE_BUDGET_USER_RESERVE": bad})


def test_the_key_is_never_stored(limited: Callable[[str], Flask], clock: Clock) -> None:
    app = limited("test")
    list_customers(app)
    with state_of(app).db.read() as session:
        buckets = list(session.scalars(select(StripeBudgetWindow.bucket)))
    assert buckets and not any("sk_test" in bucket for bucket in buckets)


def test_reconcile_and_the_catalog_sync_are_background_work(
    app: Flask, state: BillingState, reconcile_now: Any, monkeypatch: pytest.MonkeyPatch, as_user: Any
) -> None:
    """Their Stripe requests (reconcile --full's copying threads too) give way to users'."""
    from billing import replica
    from billing.catalog import sync_catalog

    alice = as_user("alice")
    alice.account(alice.workspace())
    seen: dict[str, str | None] = {}

    def noting(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            work = budget.current_background()
            seen[name] = work.kind if work else None
            return original(*args, **kwargs)

        return call

    monkeypatch.setattr(state.gateway, "iter_customers", noting("customers", state.gateway.iter_customers))
    monkeypatch.setattr(state.gateway, "iter_products", noting("products", state.gateway.iter_products))
    monkeypatch.setattr(replica, "copy_customer", noting("copy", replica.copy_customer))
    reconcile_now(full=True)
    assert seen == {"customers": "reconcile", "copy": "reconcile", "products": "reconcile"}
    seen.clear()
    sync_catalog(state.gateway)
    assert seen == {"products": "catalog"}
    assert budget.current_background() is None
