"""POST /webhooks/stripe: signatures, stored once, effects re-read from Stripe (see test_event_inbox.py)."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import pytest
from sqlalchemy import select

from billing.models import StripeEvent
from tests.helpers import WEBHOOK_SECRET as SECRET
from tests.helpers import assert_error, deliver, event, index_rows, sign


def processed(state: Any) -> list[str]:
    """The events stored (each once), applied or not."""
    with state.db.read() as session:
        return list(session.scalars(select(StripeEvent.id).order_by(StripeEvent.id)))


def test_valid_event_is_stored_once(client: Any, state: Any) -> None:
    payload = event("customer.updated", {"id": "cus_x", "object": "customer"})
    first = deliver(client, payload)
    assert first.status_code == 200 and first.json == {"received": True, "duplicate": False}
    second = deliver(client, payload)
    assert second.status_code == 200 and second.json == {"received": True, "duplicate": True}
    assert processed(state) == ["evt_test_1"]


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param("", id="missing"),
        pytest.param("t=1,v1=deadbeef", id="garbage"),
        pytest.param(None, id="wrong-secret"),
    ],
)
def test_bad_signatures_are_400(client: Any, state: Any, signature: str | None) -> None:
    payload = event("customer.deleted", {"id": "cus_x"})
    header = sign(payload, "whsec_someone_else") if signature is None else signature
    assert_error(deliver(client, payload, header), 400, "invalid_signature")
    assert processed(state) == []


def test_tampered_body_is_400(client: Any, state: Any) -> None:
    payload = event("customer.deleted", {"id": "cus_x"})
    header = sign(payload)
    assert_error(deliver(client, payload.replace(b"cus_x", b"cus_y"), header), 400, "invalid_signature")


def test_stale_timestamp_is_400(client: Any, state: Any) -> None:
    payload = event("customer.updated", {"id": "cus_x"})
    assert_error(deliver(client, payload, sign(payload, at=int(time.time()) - 301)), 400, "invalid_signature")
    assert deliver(client, payload, sign(payload, at=int(time.time()) - 200)).status_code == 200


def test_rotated_secrets_both_verify(client: Any, state: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(
        state, "config", dataclasses.replace(state.config, stripe_webhook_secrets=("whsec_new", SECRET))
    )
    old = event("customer.updated", {"id": "cus_x"}, "evt_old")
    new = event("customer.updated", {"id": "cus_x"}, "evt_new")
    assert deliver(client, old, sign(old, SECRET)).status_code == 200
    assert deliver(client, new, sign(new, "whsec_new")).status_code == 200
    assert sorted(processed(state)) == ["evt_new", "evt_old"]


def test_customer_deleted_removes_the_index_row(
    as_user: Any, client: Any, state: Any, webhooks_lost: None, apply_now: Any
) -> None:
    alice = as_user("alice")
    ws = alice.workspace()
    account = alice.account(ws)
    state.gateway.client.v1.customers.delete(account["id"])
    assert len(index_rows(state, ws)) == 1  # the sandbox's own delivery was lost
    response = deliver(client, event("customer.deleted", {"id": account["id"], "object": "customer"}))
    assert response.status_code == 200
    assert len(index_rows(state, ws)) == 1  # acknowledged, not yet applied
    apply_now()
    assert index_rows(state, ws) == []


def test_out_of_order_delete_is_checked_against_stripe(as_user: Any, client: Any, state: Any, apply_now: Any) -> None:
    """A forged or stale 'deleted' payload for a live customer changes nothing."""
    alice = as_user("alice")
    ws = alice.workspace()
    account = alice.account(ws)
    response = deliver(client, event("customer.deleted", {"id": account["id"], "object": "customer"}))
    assert response.status_code == 200
    apply_now()
    assert [r.customer_id for r in index_rows(state, ws)] == [account["id"]]


def test_not_an_event_is_400(client: Any) -> None:
    payload = json.dumps({"hello": "world"}).encode()
    assert_error(deliver(client, payload), 400, "invalid_event")
    assert_error(deliver(client, b"{nope", sign(b"{nope")), 400, "invalid_json")


def test_out_of_order_attach_events_still_pick_the_first_method(
    as_user: Any, client: Any, state: Any, monkeypatch: Any, apply_now: Any
) -> None:
    """Stripe's events for two attachments, delivered newest first: the first
    attached method still becomes the default, since handlers re-read Stripe."""
    alice = as_user("alice")
    ws = alice.workspace()
    account = alice.account(ws)
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    monkeypatch.setattr(state.webhooks, "_transport", lambda payload, headers: 503)
    first = alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_visa"}).json
    second = alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_amex"}).json
    # Deliver by hand, in reverse; the sandbox's own deliveries are acknowledged unread meanwhile.
    monkeypatch.setattr(state.webhooks, "_transport", lambda payload, headers: 200)
    events = list(state.gateway.client.v1.events.list({"type": "payment_method.attached", "limit": 10}).data)
    assert [e.data.object.id for e in events] == [second["id"], first["id"]]  # newest first
    for stripe_event in events:
        payload = json.dumps(stripe_event.to_dict()).encode()
        assert deliver(client, payload).status_code == 200
    apply_now()
    default = state.gateway.client.v1.customers.retrieve(account["id"]).invoice_settings.default_payment_method
    assert default == first["id"]
