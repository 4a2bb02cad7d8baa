"""The clock advanced in the background, as Stripe's test clocks advance: `advancing`, then
`ready` (or `internal_failure`), read from the database by any process."""

from __future__ import annotations

import time

import pytest
import stripe
from sqlalchemy import func, select

from stripe_sandbox import ClockAdvancing, SandboxClock, SqlSessions
from stripe_sandbox.api import build_router
from tests.clock_runs import hold_runs

DAY = 86400


def _trialing(client: stripe.StripeClient, customer: stripe.Customer, price: stripe.Price) -> stripe.Subscription:
    return client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}], "trial_period_days": 7}
    )


def test_advance_answers_advancing_before_the_transitions_run(
    client: stripe.StripeClient,
    paying_customer: stripe.Customer,
    monthly: stripe.Price,
    clock: SandboxClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    subscription = _trialing(client, paying_customer, monthly)
    release = hold_runs(monkeypatch, clock)
    before = clock.now()
    reading = clock.advance_in_background(days=8)
    assert reading.status == "advancing" and reading.now >= before + 8 * DAY
    # Any process reads the same: the status lives in the clock's row.
    other = SandboxClock(clock._database)
    assert other.reading().status == "advancing"
    assert client.v1.subscriptions.retrieve(subscription.id).status == "trialing"  # not run yet
    release.set()
    clock.wait_for_runs(10)
    assert other.reading().status == "ready"
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"


def test_a_second_advance_while_advancing_is_refused(clock: SandboxClock, monkeypatch: pytest.MonkeyPatch) -> None:
    release = hold_runs(monkeypatch, clock)
    clock.advance_in_background(days=1)
    offset = clock.offset()
    with pytest.raises(ClockAdvancing):
        clock.advance_in_background(days=1)
    assert clock.offset() == offset  # the refused advance moved nothing
    release.set()
    clock.wait_for_runs(10)
    assert clock.advance_in_background(days=1).status == "advancing"  # once ready, it advances again
    clock.wait_for_runs(10)


def test_a_failing_transition_is_internal_failure(
    client: stripe.StripeClient,
    paying_customer: stripe.Customer,
    monthly: stripe.Price,
    clock: SandboxClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    subscription = _trialing(client, paying_customer, monthly)

    def broken(*args: object) -> bool:
        raise RuntimeError("a transition failed")

    monkeypatch.setattr(clock, "_process_next", broken)
    clock.advance_in_background(days=8)
    clock.wait_for_runs(10)
    assert clock.reading().status == "internal_failure"
    # Stripe's way on is a new clock; the sandbox has one, so a new advance runs what was left.
    monkeypatch.undo()
    clock.advance_in_background(seconds=1)
    clock.wait_for_runs(10)
    assert clock.reading().status == "ready"
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"


def test_a_dead_runs_lease_expires(database: SqlSessions, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = SandboxClock(database, lease_seconds=0.3)
    monkeypatch.setattr(dead, "_run", lambda run_id: None)  # its process died before running anything
    dead.advance_in_background(days=1)
    assert dead.reading().status == "advancing"
    time.sleep(0.4)
    survivor = SandboxClock(database)
    assert survivor.reading().status == "internal_failure"
    assert survivor.advance_in_background(days=1).status == "advancing"  # not stuck
    survivor.wait_for_runs(10)
    assert survivor.reading().status == "ready"


def test_a_long_run_keeps_its_lease(
    clock: SandboxClock, database: SqlSessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = SandboxClock(database, lease_seconds=0.3, workers=1)  # one thread: the run outlasts its lease
    steps = iter(range(12))

    def slow_transition(*args: object) -> bool:  # twelve transitions of 0.05 s: twice the lease
        time.sleep(0.05)
        return next(steps, None) is not None

    monkeypatch.setattr(slow, "_process_next", slow_transition)
    slow.advance_in_background(days=1)
    seen: list[str] = []
    while (status := clock.reading().status) == "advancing" or not seen:
        seen.append(status)
        time.sleep(0.02)
    slow.wait_for_runs(10)
    assert status == "ready", seen


def test_a_late_end_of_an_expired_run_does_not_end_the_next(
    database: SqlSessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    hung = SandboxClock(database, lease_seconds=0.3)
    release_hung = hold_runs(monkeypatch, hung)
    hung.advance_in_background(days=1)
    time.sleep(0.4)
    assert hung.reading().status == "internal_failure"
    later = SandboxClock(database)
    release_later = hold_runs(monkeypatch, later)
    later.advance_in_background(days=1)
    release_hung.set()  # the hung run wakes up and finishes while the later one runs
    hung.wait_for_runs(10)
    assert later.reading().status == "advancing"
    release_later.set()
    later.wait_for_runs(10)
    assert later.reading().status == "ready"


def test_each_worker_thread_takes_only_its_customers(
    client: stripe.StripeClient,
    paying_customer: stripe.Customer,
    monthly: stripe.Price,
    clock: SandboxClock,
    database: SqlSessions,
) -> None:
    """On PostgreSQL the transitions of one customer stay with one thread, so they keep their time order."""
    if database.is_sqlite:
        pytest.skip("one writer at a time: SQLite runs the transitions on one thread")
    client.v1.subscriptions.create(params={"customer": paying_customer.id, "items": [{"price": monthly.id}]})
    clock.advance(days=32)
    with database.read() as session:
        mine = session.scalar(select(func.abs(func.mod(func.hashtext(paying_customer.id), 4))))
    assert mine is not None
    router = build_router()
    assert not clock._process_next(router, ((mine + 1) % 4, 4))  # another thread's customer
    assert clock._process_next(router, (mine, 4))
