"""Renewal storms: events acknowledged at once into the inbox, applied on
workers (coalesced per object), retried with backoff, parked, swept, cleaned up."""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
import stripe
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from billing import jobs
from billing.models import IdempotencyRecord, Lease, StripeEvent, utcnow
from billing.webhooks import inbox
from billing.webhooks import service as webhook_service
from tests.helpers import assert_error, count_stripe_requests, deliver, event


@pytest.fixture
def stripe_requests(monkeypatch: Any) -> list[str]:
    return count_stripe_requests(monkeypatch)


@pytest.fixture
def paying(as_user: Any, subscribe_in_stripe: Any, state: Any) -> dict[str, Any]:
    alice = as_user("alice")
    ws = alice.workspace()
    account = alice.account(ws)
    sub = subscribe_in_stripe(account["id"], {"users": 2})
    return {
        "alice": alice,
        "ws": ws,
        "customer": account["id"],
        "sub": sub.id,
        "acc": f"/workspaces/{ws}/billing-accounts/{account['id']}",
    }


def rows(state: Any) -> dict[str, StripeEvent]:
    with state.db.read() as session:
        return {row.id: row for row in session.scalars(select(StripeEvent))}


def subscription_event(state: Any, paying: dict[str, Any], event_id: str, created: int | None = None) -> bytes:
    obj = {"id": paying["sub"], "object": "subscription", "customer": paying["customer"]}
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": "customer.subscription.updated",
            "created": int(state.gateway.clock()) if created is None else created,
            "data": {"object": obj},
            "livemode": False,
        }
    ).encode()


def later(monkeypatch: Any, seconds: float) -> None:
    """The service's clock moved on (retries, claims and the sweep run on it)."""
    moved = utcnow() + timedelta(seconds=seconds)
    monkeypatch.setattr(inbox, "utcnow", lambda: moved)


# -- acknowledging ---------------------------------------------------------------


def test_the_ack_stores_and_calls_no_stripe(
    paying: dict[str, Any], state: Any, client: Any, webhooks_lost: None, stripe_requests: list[str], apply_now: Any
) -> None:
    response = deliver(client, subscription_event(state, paying, "evt_ack"))
    assert response.status_code == 200 and response.json == {"received": True, "duplicate": False}
    assert stripe_requests == []
    stored = rows(state)["evt_ack"]
    assert (stored.state, stored.object_key, stored.attempts) == ("pending", f"subscription:{paying['sub']}", 0)
    apply_now()
    assert stripe_requests == [f"GET /v1/subscriptions/{paying['sub']}"]
    assert rows(state)["evt_ack"].state == "applied"


def test_concurrent_duplicates_are_stored_once_and_applied_once(
    paying: dict[str, Any], state: Any, app: Any, webhooks_lost: None, stripe_requests: list[str], apply_now: Any
) -> None:
    payload = subscription_event(state, paying, "evt_dup")

    def post(_: int) -> Any:
        with app.test_client() as c:
            return deliver(c, payload)

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(post, range(6)))
    assert [r.status_code for r in results] == [200] * 6
    assert sorted(r.json["duplicate"] for r in results) == [False] + [True] * 5
    assert rows(state)["evt_dup"].state == "pending"
    apply_now()
    assert stripe_requests == [f"GET /v1/subscriptions/{paying['sub']}"]


def test_an_event_about_nothing_copied_is_stored_as_applied(client: Any, state: Any) -> None:
    payload = event("charge.succeeded", {"id": "ch_1", "object": "charge"}, "evt_charge")
    assert deliver(client, payload).json == {"received": True, "duplicate": False}
    assert rows(state)["evt_charge"].state == "applied"
    assert deliver(client, payload).json == {"received": True, "duplicate": True}


def test_database_down_is_503_and_stripe_retries(client: Any, state: Any, monkeypatch: Any) -> None:
    def down(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("INSERT", {}, Exception("connection refused"))

    monkeypatch.setattr(inbox, "store", down)
    response = deliver(client, event("customer.updated", {"id": "cus_x", "object": "customer"}))
    assert_error(response, 503, "database_unavailable")
    assert response.headers["Retry-After"] == "5"


def test_a_failed_enqueue_still_acknowledges_and_the_sweep_queues_it(
    paying: dict[str, Any], state: Any, client: Any, webhooks_lost: None, monkeypatch: Any
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("queue unreachable")

    monkeypatch.setattr(state.queue, "apply_later", broken)
    assert deliver(client, subscription_event(state, paying, "evt_lost_task")).status_code == 200
    monkeypatch.undo()
    key = f"subscription:{paying['sub']}"
    with client.application.app_context():
        assert jobs.sweep() == []  # not stranded yet: its task may still be on its way
        later(monkeypatch, 61)
        assert jobs.sweep() == [key]


# -- coalescing ------------------------------------------------------------------


def test_events_about_one_object_that_wait_together_cost_one_read(
    paying: dict[str, Any],
    state: Any,
    client: Any,
    webhooks_lost: None,
    stripe_requests: list[str],
    apply_now: Any,
    monkeypatch: Any,
) -> None:
    for n in range(5):
        assert deliver(client, subscription_event(state, paying, f"evt_c{n}")).status_code == 200
    assert apply_now() >= 1
    assert stripe_requests == [f"GET /v1/subscriptions/{paying['sub']}"]
    assert {row.state for row in rows(state).values()} == {"applied"}


def test_the_apply_task_is_put_off_so_that_one_change_costs_one_read(
    paying: dict[str, Any], state: Any, client: Any, webhooks_lost: None, monkeypatch: Any
) -> None:
    asked: list[tuple[str, float]] = []
    monkeypatch.setattr(state.queue, "apply_later", lambda key, delay=0.0: asked.append((key, delay)))
    deliver(client, subscription_event(state, paying, "evt_later"))
    assert asked == [(f"subscription:{paying['sub']}", webhook_service.COALESCE_SECONDS)]


def test_an_event_whose_object_already_waits_for_its_task_queues_none(
    paying: dict[str, Any], state: Any, client: Any, webhooks_lost: None, monkeypatch: Any, apply_now: Any
) -> None:
    """In a storm each ack costs one insert: the first untried event's task takes the rest."""
    asked: list[str] = []
    queueing = state.queue.apply_later
    monkeypatch.setattr(state.queue, "apply_later", lambda key, delay=0.0: asked.append(key))
    for n in range(4):
        assert deliver(client, subscription_event(state, paying, f"evt_w{n}")).status_code == 200
    assert asked == [f"subscription:{paying['sub']}"]
    assert deliver(client, subscription_event(state, paying, "evt_w0")).json["duplicate"] is True
    assert len(asked) == 1
    monkeypatch.setattr(state.queue, "apply_later", queueing)
    apply_now()
    assert {row.state for row in rows(state).values()} == {"applied"}


def test_an_event_stored_while_its_task_was_claiming_gets_a_task(
    paying: dict[str, Any], state: Any, client: Any, webhooks_lost: None, monkeypatch: Any
) -> None:
    """The race the ack's shortcut opens: an event that saw an untried sibling (so queued no
    task) just as the sibling's task claimed without it. The task, once done, queues it."""
    key = f"subscription:{paying['sub']}"
    deliver(client, subscription_event(state, paying, "evt_first"))
    applying = webhook_service.apply_events
    asked: list[tuple[str, float]] = []

    def apply_while_a_sibling_lands(billing_state: Any, object_key: str, events: Any) -> None:
        applying(billing_state, object_key, events)
        # Stored as the ack stores it when its sibling looked untried: no task of its own.
        inbox.store(state.db, json.loads(subscription_event(state, paying, "evt_raced")), key)

    monkeypatch.setattr(webhook_service, "apply_events", apply_while_a_sibling_lands)
    monkeypatch.setattr(state.queue, "apply_later", lambda k, delay=0.0: asked.append((k, delay)))
    state.queue._apply_task(key)
    assert rows(state)["evt_first"].state == "applied"
    assert rows(state)["evt_raced"].state == "pending"
    assert asked == [(key, webhook_service.COALESCE_SECONDS)]
    asked.clear()
    monkeypatch.setattr(webhook_service, "apply_events", applying)
    state.queue._apply_task(key)  # nothing came in meanwhile this time: no task after it
    assert rows(state)["evt_raced"].state == "applied"
    assert asked == []


def test_lifecycle_steps_of_an_invoice_already_paid_cost_no_read(
    as_user: Any, state: Any, client: Any, stripe_requests: list[str], apply_now: Any, monkeypatch: Any
) -> None:
    """Delivered late and out of order (a storm shuffles them): the step events
    of an invoice whose stored view is paid have nothing newer to say; any other
    event about it is read again."""
    alice = as_user("alice")
    found = alice.account_without_trial()
    acc, customer = found["acc"], found["account"]["id"]
    assert alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_visa"}).status_code == 201
    assert alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 2}}).status_code == 201
    [invoice] = alice.get(f"{acc}/invoices").json["data"]
    assert invoice["status"] == "paid"
    monkeypatch.setattr(state.webhooks, "_transport", lambda payload, headers: 503)
    draft = {"id": invoice["id"], "object": "invoice", "customer": customer, "status": "draft"}
    for n, type_ in enumerate(("invoice.created", "invoice.finalized")):
        deliver(client, event(type_, {**draft, "status": "draft" if n == 0 else "open"}, f"evt_step{n}"))
    stripe_requests.clear()
    apply_now()
    assert stripe_requests == []
    deliver(client, event("invoice.updated", {**draft, "status": "paid"}, "evt_other_change"))
    apply_now()
    assert [r for r in stripe_requests if r.startswith("GET")] == [f"GET /v1/invoices/{invoice['id']}"]


def state_app(state: Any) -> Any:
    return state.queue.app.app_context()


def test_a_renewal_costs_at_most_two_stripe_reads(
    as_user: Any, state: Any, monkeypatch: Any, stripe_requests: list[str]
) -> None:
    """Subscription renewed and paid by card at the period's end: the copy is
    brought up to date with a read of the subscription and one of its invoice."""
    alice = as_user("alice")
    data = alice.account_without_trial()
    acc = data["acc"]
    assert alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_visa"}).status_code == 201
    created = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 3}})
    assert created.status_code == 201, created.json
    sub = created.json["id"]
    before = alice.get(f"{acc}/subscriptions/{sub}").json
    stripe_requests.clear()
    state.sandbox_clock.advance_and_process(days=32)  # deliveries and their application follow (conftest)
    reads = [r for r in stripe_requests if r.startswith("GET ")]
    renewed = alice.get(f"{acc}/subscriptions/{sub}").json
    assert renewed["current_period_start"] != before["current_period_start"]
    assert 1 <= len(reads) <= 2, reads
    assert {r.split("/")[2] for r in reads} <= {"subscriptions", "invoices"}


# -- failures: retries with backoff, parking, replay ---------------------------


def test_a_failing_object_is_retried_with_backoff_then_parked(
    paying: dict[str, Any], state: Any, client: Any, webhooks_lost: None, monkeypatch: Any, apply_now: Any
) -> None:
    def unreachable(billing_state: Any, object_type: str, object_id: str, *stored: Any) -> Any:
        raise stripe.APIConnectionError("Stripe could not be reached")

    monkeypatch.setattr(webhook_service, "_refetch", unreachable)
    assert deliver(client, subscription_event(state, paying, "evt_retry")).status_code == 200
    apply_now()
    row = rows(state)["evt_retry"]
    assert (row.state, row.attempts) == ("pending", 1)
    assert (row.next_attempt_at - utcnow()).total_seconds() == pytest.approx(5, abs=2)
    assert "APIConnectionError" in (row.last_error or "")
    apply_now()  # not due yet: nothing happens
    assert rows(state)["evt_retry"].attempts == 1
    waited = 0.0
    for attempt in range(2, inbox.MAX_ATTEMPTS + 1):
        waited += inbox.backoff(attempt - 1) + 1
        later(monkeypatch, waited)
        apply_now()
        assert rows(state)["evt_retry"].attempts == attempt
    assert rows(state)["evt_retry"].state == "parked"
    assert inbox.backoff(1) == 5 and inbox.backoff(3) == 20 and inbox.backoff(20) == 3600


def test_an_object_gone_from_stripe_is_parked_at_once_and_blocks_nothing(
    paying: dict[str, Any], state: Any, client: Any, webhooks_lost: None, apply_now: Any
) -> None:
    gone = {"id": "pm_gone", "object": "payment_method", "customer": paying["customer"]}
    assert deliver(client, event("payment_method.updated", gone, "evt_gone")).status_code == 200
    assert deliver(client, subscription_event(state, paying, "evt_other")).status_code == 200
    apply_now()
    stored = rows(state)
    assert (stored["evt_gone"].state, stored["evt_gone"].attempts) == ("parked", 1)
    assert "no longer exists" in (stored["evt_gone"].last_error or "")
    assert stored["evt_other"].state == "applied"
    with state_app(state):
        assert state.queue.backlog(max_age=0).parked == 1


def test_parked_events_are_listed_and_replayed_from_the_cli(
    paying: dict[str, Any], state: Any, client: Any, app: Any, webhooks_lost: None, apply_now: Any
) -> None:
    gone = {"id": "pm_gone", "object": "payment_method", "customer": paying["customer"]}
    deliver(client, event("payment_method.updated", gone, "evt_gone"))
    apply_now()
    runner = app.test_cli_runner()
    listed = runner.invoke(args=["events", "parked"])
    assert listed.exit_code == 0
    [line] = listed.output.strip().splitlines()
    assert json.loads(line)["id"] == "evt_gone" and json.loads(line)["object"] == "payment_method:pm_gone"
    status = json.loads(runner.invoke(args=["events", "status"]).output)
    assert status["parked"] == 1 and status["pending"] == 0
    assert runner.invoke(args=["events", "replay"]).exit_code != 0  # ids or --all
    replayed = runner.invoke(args=["events", "replay", "evt_gone"])
    assert json.loads(replayed.output) == {"queued_objects": 1}
    row = rows(state)["evt_gone"]
    assert (row.state, row.attempts) == ("pending", 0)
    burst = runner.invoke(args=["worker", "--burst"])
    assert burst.exit_code == 0, burst.output
    assert rows(state)["evt_gone"].state == "parked"  # still gone: parked again


def test_a_killed_workers_claim_lapses_and_the_sweep_recovers_it(
    paying: dict[str, Any], state: Any, client: Any, webhooks_lost: None, monkeypatch: Any, apply_now: Any
) -> None:
    key = f"subscription:{paying['sub']}"
    deliver(client, subscription_event(state, paying, "evt_killed"))
    assert [c.id for c in inbox.claim(state.db, key)] == ["evt_killed"]  # ... and the worker dies here
    assert inbox.claim(state.db, key) == []  # nobody else takes it while the claim holds
    with state_app(state):
        assert jobs.sweep() == []
    later(monkeypatch, inbox.CLAIM_SECONDS + 1)
    with state_app(state):
        assert jobs.sweep() == [key]
    apply_now()
    assert rows(state)["evt_killed"].state == "applied"


# -- the queue itself ------------------------------------------------------------


def test_a_huey_consumer_applies_delivered_events(
    paying: dict[str, Any], state: Any, client: Any, webhooks_lost: None
) -> None:
    """Through the real queue: the route queues a task, a consumer thread runs it."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    consumer = state.queue.consumer(workers=2)
    consumer.start()
    try:
        # Created a minute ago: no reason to wait, so the task is queued at once.
        payload = subscription_event(state, paying, "evt_consumer", created=int(state.gateway.clock()) - 60)
        assert deliver(client, payload).status_code == 200
        deadline = time.monotonic() + 20
        while rows(state)["evt_consumer"].state != "applied" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert rows(state)["evt_consumer"].state == "applied"
    finally:
        consumer.stop(graceful=True)
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_the_sweep_cleans_up_what_outlived_its_guarantee(state: Any, client: Any, monkeypatch: Any) -> None:
    for n, type_ in enumerate(("charge.succeeded", "charge.refunded")):
        deliver(client, event(type_, {"id": f"ch_{n}", "object": "charge"}, f"evt_old{n}"))
    deliver(client, event("charge.succeeded", {"id": "ch_new", "object": "charge"}, "evt_new"))
    now = utcnow()
    with state.db.write() as session:
        session.execute(
            update(StripeEvent)
            .where(StripeEvent.id.like("evt_old%"))
            .values(received_at=now - timedelta(days=3, minutes=1))
        )
        session.add(
            IdempotencyRecord(
                scope="user:a",
                key="old",
                fingerprint="f",
                state="done",
                created_at=now - timedelta(hours=25),
                locked_until=now,
            )
        )
        session.add(
            IdempotencyRecord(
                scope="user:a",
                key="new",
                fingerprint="f",
                state="done",
                created_at=now - timedelta(hours=23),
                locked_until=now,
            )
        )
        session.add(Lease(name="dead", token="t", expires_at=now - timedelta(seconds=1)))
        session.add(Lease(name="live", token="t", expires_at=now + timedelta(seconds=60)))
    with state_app(state):
        jobs.sweep()
    assert sorted(rows(state)) == ["evt_new"]
    with state.db.read() as session:
        assert list(session.scalars(select(IdempotencyRecord.key))) == ["new"]
        assert list(session.scalars(select(Lease.name))) == ["live"]


def test_readiness_says_how_stale_the_copy_may_be(
    paying: dict[str, Any], state: Any, client: Any, webhooks_lost: None, monkeypatch: Any
) -> None:
    deliver(client, subscription_event(state, paying, "evt_waiting"))
    later(monkeypatch, 42)
    events = client.get("/readyz").json["events"]
    assert events["pending"] == 1 and events["parked"] == 0
    assert events["oldest_pending_seconds"] == pytest.approx(42, abs=5)


def test_a_database_blip_while_applying_is_retried_not_parked(
    paying: dict[str, Any], state: Any, client: Any, webhooks_lost: None, monkeypatch: Any, apply_now: Any
) -> None:
    def blip(billing_state: Any, object_type: str, object_id: str, *stored: Any) -> Any:
        raise OperationalError("SELECT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(webhook_service, "_refetch", blip)
    deliver(client, subscription_event(state, paying, "evt_blip"))
    apply_now()
    row = rows(state)["evt_blip"]
    assert (row.state, row.attempts) == ("pending", 1)
    monkeypatch.undo()
    later(monkeypatch, inbox.backoff(1) + 1)
    apply_now()
    assert rows(state)["evt_blip"].state == "applied"


def test_applying_is_background_work_and_waits_for_the_budget(
    paying: dict[str, Any], state: Any, client: Any, webhooks_lost: None, monkeypatch: Any, apply_now: Any
) -> None:
    """Re-reads use only what users leave of Stripe's rate limit; when there is
    no room, the events are put off without using up a try."""
    from billing import budget

    kinds: list[str | None] = []

    def no_room(billing_state: Any, object_type: str, object_id: str, *stored: Any) -> Any:
        current = budget.current_background()
        kinds.append(current.kind if current else None)
        raise budget.BudgetExhausted("webhook", 20.0)

    monkeypatch.setattr(webhook_service, "_refetch", no_room)
    deliver(client, subscription_event(state, paying, "evt_budget"))
    apply_now()
    row = rows(state)["evt_budget"]
    assert kinds == ["webhook"]
    assert (row.state, row.attempts) == ("pending", 0)
    assert (row.next_attempt_at - utcnow()).total_seconds() == pytest.approx(20, abs=3)


def test_a_subscription_read_brings_its_latest_invoice(
    paying: dict[str, Any], state: Any, client: Any, webhooks_lost: None, stripe_requests: list[str], apply_now: Any
) -> None:
    """A renewal's subscription and its new invoice, delivered together: the
    subscription's read keeps its latest invoice too, so the invoice's event
    (received before that read) costs nothing."""
    sub = state.gateway.client.v1.subscriptions.retrieve(paying["sub"])
    invoice = {"id": sub.latest_invoice, "object": "invoice", "customer": paying["customer"], "status": "draft"}
    deliver(client, subscription_event(state, paying, "evt_renewed"))
    deliver(client, event("invoice.created", invoice, "evt_new_invoice"))
    stripe_requests.clear()
    apply_now()
    assert stripe_requests == [f"GET /v1/subscriptions/{paying['sub']}"]
    assert {row.state for row in rows(state).values()} == {"applied"}


def _invoice_updated(state: Any, paying: dict[str, Any], invoice_id: str, event_id: str) -> bytes:
    # Dated ahead of any read so far: nothing stored can say it already.
    invoice = {"id": invoice_id, "object": "invoice", "customer": paying["customer"], "status": "paid"}
    payload = json.loads(event("invoice.updated", invoice, event_id))
    payload["created"] = int(state.gateway.clock()) + 60
    return json.dumps(payload).encode()


@pytest.mark.parametrize("invoices_second_full", [False, True])
def test_a_renewal_invoice_is_read_through_its_subscription_when_the_invoices_second_is_full(
    paying: dict[str, Any],
    state: Any,
    client: Any,
    webhooks_lost: None,
    stripe_requests: list[str],
    apply_now: Any,
    monkeypatch: Any,
    invoices_second_full: bool,
) -> None:
    """Stripe counts each endpoint's second apart: a subscription's latest invoice
    comes with the subscription's read too, so when the invoices' endpoint has no
    room left, the read goes there instead of waiting for the next second."""
    from billing import budget, replica
    from billing.instrumentation import InstrumentedHTTPClient

    sub, invoice_id = paying["sub"], state.gateway.client.v1.subscriptions.retrieve(paying["sub"]).latest_invoice
    deliver(client, subscription_event(state, paying, "evt_sub_first"))
    apply_now()  # the copy holds the subscription and its latest invoice
    with state_app(state):
        before = replica.stored_view(state.db, "invoice", invoice_id).fetched_at
    within = InstrumentedHTTPClient._within_budget

    def invoices_full(self: Any, method: str, url: str, attempt: Any) -> Any:
        work = budget.current_background()
        if invoices_second_full and "/v1/invoices/" in url and work is not None and work.deadline_seconds == 0:
            raise budget.BudgetExhausted(work.kind, 0.0)
        return within(self, method, url, attempt)

    monkeypatch.setattr(InstrumentedHTTPClient, "_within_budget", invoices_full)
    deliver(client, _invoice_updated(state, paying, invoice_id, "evt_invoice_updated"))
    stripe_requests.clear()
    apply_now()
    expected = [f"GET /v1/invoices/{invoice_id}"] + ([f"GET /v1/subscriptions/{sub}"] if invoices_second_full else [])
    assert stripe_requests == expected
    assert rows(state)["evt_invoice_updated"].state == "applied"
    with state_app(state):
        assert replica.stored_view(state.db, "invoice", invoice_id).fetched_at > before


def test_an_invoice_that_is_not_its_subscriptions_latest_is_read_as_itself(
    paying: dict[str, Any],
    state: Any,
    client: Any,
    webhooks_lost: None,
    stripe_requests: list[str],
    apply_now: Any,
    monkeypatch: Any,
) -> None:
    from billing import budget, replica
    from billing.instrumentation import InstrumentedHTTPClient
    from billing.webhooks.service import _renewing_subscription

    invoice_id = state.gateway.client.v1.subscriptions.retrieve(paying["sub"]).latest_invoice
    deliver(client, subscription_event(state, paying, "evt_sub_first"))
    apply_now()
    with state_app(state):
        assert (
            _renewing_subscription(state, invoice_id, replica.stored_view(state.db, "invoice", invoice_id))
            == paying["sub"]
        )
        assert _renewing_subscription(state, "in_another", replica.stored_view(state.db, "invoice", invoice_id)) is None
    within = InstrumentedHTTPClient._within_budget

    def invoices_full(self: Any, method: str, url: str, attempt: Any) -> Any:
        work = budget.current_background()
        if "/v1/invoices/" in url and work is not None and work.deadline_seconds == 0:
            raise budget.BudgetExhausted(work.kind, 0.0)
        return within(self, method, url, attempt)

    monkeypatch.setattr(InstrumentedHTTPClient, "_within_budget", invoices_full)
    with state_app(state):  # the copy no longer says the invoice is the subscription's latest
        monkeypatch.setattr(replica, "subscription_document", lambda _db, _id: {"latest_invoice": "in_newer"})
        deliver(client, _invoice_updated(state, paying, invoice_id, "evt_old_invoice"))
        stripe_requests.clear()
        apply_now()
    assert stripe_requests == [f"GET /v1/invoices/{invoice_id}"]


def test_a_created_event_that_comes_after_a_read_costs_nothing(
    paying: dict[str, Any], state: Any, client: Any, webhooks_lost: None, stripe_requests: list[str], apply_now: Any
) -> None:
    """A renewal's `invoice.created` delivered after its subscription's read (which brought the
    new invoice): it says only that the invoice exists, which the copy knows. Any other event
    about it, delivered as late, is read."""
    invoice_id = state.gateway.client.v1.subscriptions.retrieve(paying["sub"]).latest_invoice
    deliver(client, subscription_event(state, paying, "evt_renewal"))
    apply_now()
    invoice = {"id": invoice_id, "object": "invoice", "customer": paying["customer"], "status": "draft"}
    late = json.loads(event("invoice.created", invoice, "evt_late_created"))
    late["created"] = int(state.gateway.clock()) + 60  # no clock rule can tell it is old
    deliver(client, json.dumps(late).encode())
    stripe_requests.clear()
    apply_now()
    assert stripe_requests == []
    assert rows(state)["evt_late_created"].state == "applied"
    deliver(client, _invoice_updated(state, paying, invoice_id, "evt_late_updated"))
    apply_now()
    assert stripe_requests == [f"GET /v1/invoices/{invoice_id}"]


def test_a_new_invoice_whose_events_come_first_applies_its_subscriptions_first(
    paying: dict[str, Any], state: Any, client: Any, webhooks_lost: None, stripe_requests: list[str], apply_now: Any
) -> None:
    """A renewal in a storm: the new invoice's `invoice.created` is delivered before the
    subscription's event. Its task applies the subscription's waiting event first, whose read
    brings the invoice: one read for both, whichever task runs first."""
    from billing import replica
    from billing.models import StripeCopy

    sub = state.gateway.client.v1.subscriptions.retrieve(paying["sub"])
    invoice = {
        "id": sub.latest_invoice,
        "object": "invoice",
        "customer": paying["customer"],
        "status": "draft",
        "parent": {"subscription_details": {"subscription": paying["sub"]}},
    }
    with state.db.write() as session:  # as if the copy had never seen this invoice
        session.execute(StripeCopy.__table__.delete().where(StripeCopy.id == sub.latest_invoice))  # type: ignore[attr-defined]
    deliver(client, event("invoice.created", invoice, "evt_invoice_first"))
    deliver(client, subscription_event(state, paying, "evt_subscription_second"))
    stripe_requests.clear()
    with state_app(state):
        assert webhook_service.apply_object(state, f"invoice:{sub.latest_invoice}") is None
    assert stripe_requests == [f"GET /v1/subscriptions/{paying['sub']}"]
    assert {row.state for row in rows(state).values()} == {"applied"}
    with state_app(state):
        assert replica.stored_view(state.db, "invoice", sub.latest_invoice) is not None
    apply_now()  # the subscription's own task: nothing left to do
    assert stripe_requests == [f"GET /v1/subscriptions/{paying['sub']}"]
