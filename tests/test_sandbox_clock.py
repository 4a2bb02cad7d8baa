"""POST /sandbox/clock/advance answers at once, as Stripe's test clocks do; GET /sandbox/clock
says `ready` once what came due is readable through the API."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.clock_runs import hold_runs
from tests.helpers import assert_error

DAY = 86400


@pytest.fixture
def trialing(as_user: Any) -> dict[str, Any]:
    """A subscription in its trial, without a payment method (at its end it pauses)."""
    alice = as_user("alice")
    ws = alice.workspace("single")
    account = alice.account(ws)
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    sub = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 5}})
    assert sub.status_code == 201 and sub.json["status"] == "trialing", sub.json
    return {"alice": alice, "path": f"{acc}/subscriptions/{sub.json['id']}"}


def test_advance_answers_before_the_transitions_run(
    trialing: dict[str, Any], state: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, path = trialing["alice"], trialing["path"]
    release = hold_runs(monkeypatch, state.sandbox_clock)
    before = alice.get("/sandbox/clock").json
    assert before["status"] == "ready"
    response = alice.post("/sandbox/clock/advance", {"days": 15})
    assert response.status_code == 202, response.json
    assert response.json["advanced_seconds"] == 15 * DAY and response.json["status"] == "advancing"
    assert response.json["now"] >= before["now"] + 15 * DAY
    assert alice.get("/sandbox/clock").json["status"] == "advancing"
    assert alice.get(path).json["status"] == "trialing"
    release.set()
    state.sandbox_clock.wait_for_runs(10)
    assert alice.get("/sandbox/clock").json["status"] == "ready"
    assert alice.get(path).json["status"] == "paused"


def test_a_second_advance_while_advancing_is_409(
    trialing: dict[str, Any], state: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = trialing["alice"]
    release = hold_runs(monkeypatch, state.sandbox_clock)
    first = alice.post("/sandbox/clock/advance", {"days": 1}).json
    assert_error(alice.post("/sandbox/clock/advance", {"days": 1}), 409, "clock_advancing")
    assert alice.get("/sandbox/clock").json["now"] < first["now"] + DAY  # the refused advance moved nothing
    release.set()
    state.sandbox_clock.wait_for_runs(10)
    assert alice.advance_clock({"days": 1})["status"] == "ready"


def test_ready_waits_for_the_webhooks_delivered(
    trialing: dict[str, Any], state: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, path = trialing["alice"], trialing["path"]
    transport = state.webhooks._transport
    monkeypatch.setattr(state.webhooks, "_transport", lambda payload, headers: 503)  # the service is down
    assert alice.post("/sandbox/clock/advance", {"days": 15}).status_code == 202
    state.sandbox_clock.wait_for_runs(10)
    assert state.sandbox_clock.reading().status == "ready"  # the emulator is done ...
    assert alice.get("/sandbox/clock").json["status"] == "advancing"  # ... but the API can't show it yet
    assert alice.get(path).json["status"] == "trialing"
    monkeypatch.setattr(state.webhooks, "_transport", transport)
    assert state.webhooks.deliver_pending() == 0  # failed deliveries wait for their retry (Stripe's schedule) ...
    assert alice.get("/sandbox/clock").json["status"] == "advancing"
    state.sandbox_clock.advance(minutes=31)  # ... which sandbox time brings due
    assert state.webhooks.deliver_pending() > 0
    assert alice.get("/sandbox/clock").json["status"] == "ready"
    assert alice.get(path).json["status"] == "paused"


def test_ready_waits_for_the_service_to_apply_what_it_received(
    trialing: dict[str, Any], state: Any, monkeypatch: pytest.MonkeyPatch, apply_now: Any
) -> None:
    """Delivered (acknowledged into the inbox) is not applied: `ready` waits for the workers."""
    alice, path = trialing["alice"], trialing["path"]
    monkeypatch.setattr(state.webhooks, "after_run", None)  # no worker runs
    assert alice.post("/sandbox/clock/advance", {"days": 15}).status_code == 202
    state.sandbox_clock.wait_for_runs(10)
    state.webhooks.deliver_pending()  # acknowledged, not applied: no worker ran
    assert alice.get("/sandbox/clock").json["status"] == "advancing"
    assert alice.get(path).json["status"] == "trialing"
    apply_now()
    assert alice.get("/sandbox/clock").json["status"] == "ready"
    assert alice.get(path).json["status"] == "paused"


def test_a_failed_run_reads_internal_failure(
    trialing: dict[str, Any], state: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = trialing["alice"]

    def broken(*args: object) -> bool:
        raise RuntimeError("a transition failed")

    monkeypatch.setattr(state.sandbox_clock, "_process_next", broken)
    assert alice.post("/sandbox/clock/advance", {"days": 15}).status_code == 202
    state.sandbox_clock.wait_for_runs(10)
    assert alice.get("/sandbox/clock").json["status"] == "internal_failure"


def test_traffic_after_the_advance_does_not_hold_ready(
    trialing: dict[str, Any], state: Any, client: Any, apply_now: Any
) -> None:
    """Only what the advance made counts: events users cause meanwhile (dated
    after the time it moved to) may wait for the workers without holding `ready`."""
    from tests.helpers import deliver, event

    alice = trialing["alice"]
    reading = alice.post("/sandbox/clock/advance", {"days": 15}).json
    state.sandbox_clock.wait_for_runs(10)
    assert alice.get("/sandbox/clock").json["status"] == "ready"
    customer = trialing["path"].split("/")[4]
    later = json.loads(event("customer.updated", {"id": customer, "object": "customer"}, "evt_traffic"))
    later["created"] = reading["now"] + 5
    assert deliver(client, json.dumps(later).encode()).status_code == 200  # waits for a worker
    assert alice.get("/sandbox/clock").json["status"] == "ready"
    earlier = dict(later, id="evt_of_the_advance", created=reading["now"] - 5)
    assert deliver(client, json.dumps(earlier).encode()).status_code == 200
    assert alice.get("/sandbox/clock").json["status"] == "advancing"
    apply_now()
    assert alice.get("/sandbox/clock").json["status"] == "ready"
