"""Webhook delivery as Stripe does it: concurrent, unordered, each event retried on its own."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping

import pytest
import stripe
from sqlalchemy import update

from stripe_sandbox import SandboxClock, SandboxHTTPClient, SqlSessions
from stripe_sandbox.clock import sandbox_time
from stripe_sandbox.models import SandboxObject, SandboxWebhookDelivery
from stripe_sandbox.webhook_retries import TEST_MODE_RETRY_DELAYS
from stripe_sandbox.webhooks import WebhookSender

SECRET = "whsec_sandbox_test"


class Endpoint:
    """A webhook endpoint called from several threads: verifies, records, answers with `answer(name)`."""

    def __init__(self, answer: Callable[[str], int] = lambda name: 200) -> None:
        self.answer = answer
        self.lock = threading.Lock()
        self.names: list[str] = []  # every call, in the order received
        self.delivered: list[str] = []  # event ids answered 2xx
        self.in_flight = 0
        self.max_in_flight = 0

    def __call__(self, payload: bytes, headers: Mapping[str, str]) -> int:
        event = stripe.Webhook.construct_event(payload.decode(), headers["Stripe-Signature"], SECRET)
        name = str(event.data.object["name"])
        with self.lock:
            self.names.append(name)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            status = self.answer(name)
        finally:
            with self.lock:
                self.in_flight -= 1
        if 200 <= status < 300:
            with self.lock:
                self.delivered.append(event.id)
        return status


def _customers(client: stripe.StripeClient, *names: str) -> list[str]:
    return [client.v1.customers.create(params={"name": name}).id for name in names]


def _row(database: SqlSessions, name: str) -> SandboxWebhookDelivery:
    """The delivery row of the customer.created event of the customer named `name`."""
    with database.read() as session:
        for event in session.query(SandboxObject).filter(SandboxObject.object_type == "event"):
            if event.data["data"]["object"].get("name") == name:
                row = session.get(SandboxWebhookDelivery, event.id)
                assert row is not None
                return row
    raise AssertionError(f"no event for {name}")


def _sandbox_now(database: SqlSessions) -> float:
    with database.read() as session:
        return sandbox_time(session)


def test_deliveries_run_concurrently(client: stripe.StripeClient, database: SqlSessions) -> None:
    names = [f"c{i}" for i in range(8)]
    _customers(client, *names)
    # Each receiver waits for all eight to be in flight: one at a time, the first would time out.
    everyone = threading.Barrier(8, timeout=10)

    def answer(name: str) -> int:
        everyone.wait()
        return 200

    endpoint = Endpoint(answer)
    assert WebhookSender(database, SECRET, endpoint, concurrency=8).deliver_pending() == 8
    assert endpoint.max_in_flight == 8


def test_no_more_than_concurrency_in_flight(client: stripe.StripeClient, database: SqlSessions) -> None:
    _customers(client, *(f"c{i}" for i in range(9)))

    def answer(name: str) -> int:
        time.sleep(0.05)
        return 200

    endpoint = Endpoint(answer)
    assert WebhookSender(database, SECRET, endpoint, concurrency=3).deliver_pending() == 9
    assert 1 < endpoint.max_in_flight <= 3


def test_order_is_shuffled_reproducibly_with_a_seed(client: stripe.StripeClient, database: SqlSessions) -> None:
    names = [f"c{i:02}" for i in range(12)]
    _customers(client, *names)

    def run(seed: int) -> list[str]:
        endpoint = Endpoint()
        # One at a time, so the order of arrival is the order sent.
        assert WebhookSender(database, SECRET, endpoint, concurrency=1, rng=random.Random(seed)).deliver_pending() == 12
        with database.write() as session:  # as if never sent
            session.execute(update(SandboxWebhookDelivery).values(pending=True, delivered_at=None, attempts=0))
        return endpoint.names

    first = run(7)
    assert sorted(first) == names and first != names  # not creation order
    assert run(7) == first  # the seed reproduces it
    assert run(8) != first


def test_a_failing_event_holds_back_no_other(client: stripe.StripeClient, database: SqlSessions) -> None:
    _customers(client, "a", "b", "c")
    endpoint = Endpoint(lambda name: 500 if name == "b" else 200)
    sender = WebhookSender(database, SECRET, endpoint, rng=1)
    assert sender.deliver_pending() == 2
    assert Counter(endpoint.names) == {"a": 1, "b": 1, "c": 1}
    assert sender.deliver_pending() == 0  # b's retry is not due yet: not sent again
    assert Counter(endpoint.names) == {"a": 1, "b": 1, "c": 1}
    b = _row(database, "b")
    assert (b.pending, b.attempts, b.last_status) == (True, 1, 500)


def test_retries_come_due_in_sandbox_time_on_stripes_test_mode_schedule(
    client: stripe.StripeClient, database: SqlSessions, clock: SandboxClock
) -> None:
    _customers(client, "ok", "down")
    endpoint = Endpoint(lambda name: 503 if name == "down" else 200)
    sender = WebhookSender(database, SECRET, endpoint)
    assert TEST_MODE_RETRY_DELAYS == (1800, 3600, 7200)  # three retries over a few hours
    assert sender.deliver_pending() == 1
    for retry, delay in enumerate(TEST_MODE_RETRY_DELAYS, start=1):
        row = _row(database, "down")
        assert row.pending and row.attempts == retry
        assert row.next_attempt_at == pytest.approx(_sandbox_now(database) + delay, abs=5)
        clock.advance(delay - 60)  # a minute early: not yet
        assert sender.deliver_pending() == 0
        assert endpoint.names.count("down") == retry
        clock.advance(60)
        assert sender.deliver_pending() == 0
        assert endpoint.names.count("down") == retry + 1
    # The last retry failed: given up. No longer pending, and never sent again.
    row = _row(database, "down")
    assert (row.pending, row.next_attempt_at, row.delivered_at, row.attempts) == (False, None, None, 4)
    clock.advance(86400 * 3)
    assert sender.deliver_pending() == 0
    assert endpoint.names.count("down") == 4
    # Stripe: failed events still count in pending_webhooks and are listed by delivery_success=false.
    events = {e.data.object["name"]: e for e in client.v1.events.list(params={"limit": 10}).data}
    assert (events["down"].pending_webhooks, events["ok"].pending_webhooks) == (1, 0)
    failed = client.v1.events.list(params={"delivery_success": False}).data
    succeeded = client.v1.events.list(params={"delivery_success": True}).data
    assert [e.data.object["name"] for e in failed] == ["down"]
    assert [e.data.object["name"] for e in succeeded] == ["ok"]


def test_advancing_the_clock_delivers_the_retries_it_brings_due(
    client: stripe.StripeClient, database: SqlSessions
) -> None:
    _customers(client, "flaky")
    answers = [500, 200]
    endpoint = Endpoint(lambda name: answers.pop(0))
    sender = WebhookSender(database, SECRET, endpoint)
    sender.deliver_pending()
    SandboxClock(database, webhooks=sender).advance_and_process(minutes=31)  # nothing else falls due
    assert endpoint.names == ["flaky", "flaky"] and len(endpoint.delivered) == 1
    assert _row(database, "flaky").delivered_at is not None


def test_a_receiver_slower_than_the_timeout_has_failed(
    client: stripe.StripeClient, database: SqlSessions, clock: SandboxClock
) -> None:
    _customers(client, "slow")
    delays = [0.3, 0.0]

    def answer(name: str) -> int:
        time.sleep(delays.pop(0))
        return 200  # too late the first time: Stripe has hung up

    endpoint = Endpoint(answer)
    sender = WebhookSender(database, SECRET, endpoint, timeout_seconds=0.1)
    assert sender.deliver_pending() == 0
    row = _row(database, "slow")
    assert (row.pending, row.attempts, row.last_status, row.delivered_at) == (True, 1, None, None)
    clock.advance(minutes=30)
    assert sender.deliver_pending() == 1  # sent again: the receiver sees it twice, as from Stripe
    assert endpoint.names == ["slow", "slow"]


def test_ordered_mode_never_gives_up_nor_waits(client: stripe.StripeClient, database: SqlSessions) -> None:
    _customers(client, "a", "b")
    endpoint = Endpoint(lambda name: 500 if name == "a" else 200)
    sender = WebhookSender(database, SECRET, endpoint, ordered=True)
    for attempt in range(1, 7):
        assert sender.deliver_pending() == 0  # a fails and b waits behind it
        row = _row(database, "a")
        assert (row.pending, row.attempts, row.next_attempt_at) == (True, attempt, None)
    assert endpoint.names == ["a"] * 6


@pytest.mark.parametrize("ordered", [False, True])
def test_receivers_calling_stripe_neither_deadlock_nor_get_an_event_twice(database: SqlSessions, ordered: bool) -> None:
    runs: list[str] = []
    calls: list[SandboxHTTPClient] = []

    def answer(name: str) -> int:
        if name.startswith("parent"):  # the receiver writes to Stripe: notify() from within the run
            stripe.StripeClient("sk_test_sandbox", http_client=calls[0]).v1.customers.create(
                params={"name": name.replace("parent", "child")}
            )
        return 200

    endpoint = Endpoint(answer)
    sender = WebhookSender(
        database,
        SECRET,
        endpoint,
        concurrency=4,
        ordered=ordered,
        after_run=lambda: runs.append(threading.current_thread().name),
    )
    calls.append(SandboxHTTPClient(database, webhooks=sender))
    client = stripe.StripeClient("sk_test_sandbox", http_client=SandboxHTTPClient(database))  # records only
    _customers(client, *(f"parent{i}" for i in range(6)))
    delivered: list[int] = []
    run = threading.Thread(target=lambda: delivered.append(sender.deliver_pending()), daemon=True)
    run.start()
    run.join(30)
    assert not run.is_alive(), "deadlock"
    # The children's events, recorded during the run, went out in the same run, once each.
    assert delivered == [12]
    assert sorted(endpoint.names) == sorted([f"parent{i}" for i in range(6)] + [f"child{i}" for i in range(6)])
    assert len(set(endpoint.delivered)) == 12
    assert runs == [run.name]  # once for the run; not for the nested ones


def test_concurrent_runs_never_send_one_event_twice(client: stripe.StripeClient, database: SqlSessions) -> None:
    _customers(client, *(f"c{i}" for i in range(20)))

    def answer(name: str) -> int:
        time.sleep(0.02)
        return 200

    endpoint = Endpoint(answer)
    senders = [WebhookSender(database, SECRET, endpoint, concurrency=4) for _ in range(3)]  # three processes
    totals: list[int] = []
    threads = [threading.Thread(target=lambda s=s: totals.append(s.deliver_pending())) for s in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(totals) == 20
    assert sorted(Counter(endpoint.names).values()) == [1] * 20


def test_after_run_is_called_after_each_synchronous_run(database: SqlSessions) -> None:
    runs: list[int] = []
    sender = WebhookSender(database, SECRET, Endpoint(), after_run=lambda: runs.append(1))
    client = stripe.StripeClient("sk_test_sandbox", http_client=SandboxHTTPClient(database, webhooks=sender))
    _customers(client, "a", "b")  # two writes, two runs
    assert sender.deliver_pending() == 0
    assert len(runs) == 3


def test_background_delivery_retries_what_the_clock_brings_due(
    client: stripe.StripeClient, database: SqlSessions, clock: SandboxClock
) -> None:
    _customers(client, "flaky", "fine")
    flaky = [500, 200]
    endpoint = Endpoint(lambda name: flaky.pop(0) if name == "flaky" else 200)
    sender = WebhookSender(database, SECRET, endpoint, background=True, poll_seconds=0.05)
    try:
        sender.notify()

        def wait_for(count: int) -> None:
            deadline = time.time() + 10
            while len(endpoint.names) < count and time.time() < deadline:
                time.sleep(0.02)

        wait_for(2)
        time.sleep(0.2)
        assert sorted(endpoint.names) == ["fine", "flaky"]  # flaky failed, and waits for its retry
        clock.advance(minutes=30)  # another process's clock: the thread finds the retry by polling
        wait_for(3)
    finally:
        sender.stop()
    assert sorted(endpoint.names) == ["fine", "flaky", "flaky"]
    assert _row(database, "flaky").delivered_at is not None


def test_after_run_is_not_reentered_by_the_stripe_writes_it_makes(database: SqlSessions) -> None:
    """after_run (say, running the jobs the deliveries queued) may write to Stripe: those
    events are delivered at once, and after_run is not called again from within itself."""
    jobs = ["job"]
    runs: list[int] = []
    endpoint = Endpoint()
    sender = WebhookSender(database, SECRET, endpoint)
    client = stripe.StripeClient("sk_test_sandbox", http_client=SandboxHTTPClient(database, webhooks=sender))

    def run_jobs() -> None:
        runs.append(1)
        while jobs:
            _customers(client, jobs.pop())

    sender.after_run = run_jobs
    _customers(client, "request")
    assert runs == [1]
    assert sorted(endpoint.names) == ["job", "request"]
