"""A Stripe event before it is stored: its signature (verify_event), what it must look
like (check_event), what it is about (object_key), and the inbox's retry schedule.
Plain functions on bytes and dicts: no app, no database, no HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest

from billing.errors import ApiError
from billing.webhooks.event_checks import MAX_ID_LENGTH, check_event
from billing.webhooks.inbox import backoff
from billing.webhooks.service import TOLERANCE_SECONDS, object_key, verify_event
from tests.helpers import WEBHOOK_SECRET, event, sign

SECRETS = (WEBHOOK_SECRET,)


def code_of(call: Any) -> tuple[int, str]:
    with pytest.raises(ApiError) as raised:
        call()
    return raised.value.status, raised.value.code


def an_event(**fields: Any) -> dict[str, Any]:
    return {
        "id": "evt_1",
        "object": "event",
        "type": "customer.updated",
        "created": 1_700_000_000,
        "data": {"object": {"id": "cus_1", "object": "customer"}},
        **fields,
    }


# -- the signature ---------------------------------------------------------------------


def test_a_signed_event_is_read() -> None:
    payload = event("customer.updated", {"id": "cus_1", "object": "customer"})
    assert verify_event(payload, sign(payload), SECRETS)["id"] == "evt_test_1"


def test_either_secret_of_a_rotation_verifies() -> None:
    payload = event("customer.updated", {"id": "cus_1", "object": "customer"})
    assert verify_event(payload, sign(payload, "whsec_old"), ("whsec_new", "whsec_old"))["type"] == "customer.updated"


@pytest.mark.parametrize("signature", ["", None, "t=1,v1=deadbeef"])
def test_a_missing_or_garbled_signature_is_refused(signature: str | None) -> None:
    payload = event("customer.updated", {"id": "cus_1", "object": "customer"})
    assert code_of(lambda: verify_event(payload, signature, SECRETS)) == (400, "invalid_signature")


def test_another_secrets_signature_is_refused() -> None:
    payload = event("customer.updated", {"id": "cus_1", "object": "customer"})
    assert code_of(lambda: verify_event(payload, sign(payload, "whsec_other"), SECRETS)) == (400, "invalid_signature")


def test_no_configured_secret_refuses_everything() -> None:
    payload = event("customer.updated", {"id": "cus_1", "object": "customer"})
    assert code_of(lambda: verify_event(payload, sign(payload), ())) == (400, "invalid_signature")


def test_a_signature_older_than_the_tolerance_is_refused() -> None:
    import time

    payload = event("customer.updated", {"id": "cus_1", "object": "customer"})
    old = sign(payload, at=int(time.time()) - TOLERANCE_SECONDS - 60)
    assert code_of(lambda: verify_event(payload, old, SECRETS)) == (400, "invalid_signature")


def test_a_payload_that_is_not_utf8_is_refused() -> None:
    payload = b'{"id": "evt_\xff"}'
    assert code_of(lambda: verify_event(payload, sign(payload), SECRETS)) == (400, "invalid_signature")


def test_signed_text_that_is_not_json_is_invalid_json() -> None:
    payload = b"not json"
    assert code_of(lambda: verify_event(payload, sign(payload), SECRETS)) == (400, "invalid_json")


@pytest.mark.parametrize("body", [[1, 2], {"id": "cus_1", "type": "customer.updated"}, {"id": "evt_1"}])
def test_signed_json_that_is_not_an_event_is_invalid_event(body: Any) -> None:
    payload = json.dumps(body).encode()
    assert code_of(lambda: verify_event(payload, sign(payload), SECRETS)) == (400, "invalid_event")


# -- what it must look like ----------------------------------------------------------------


def test_an_ordinary_event_passes() -> None:
    check_event(an_event())
    check_event(an_event(created=None))  # Stripe always sends it; we don't need it


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"id": "evt_" + "x" * MAX_ID_LENGTH}, id="id-too-long"),
        pytest.param({"id": "evt_1\n"}, id="id-control-character"),
        pytest.param({"id": ""}, id="id-empty"),
        pytest.param({"id": 7}, id="id-not-text"),
        pytest.param({"type": "x" * 101}, id="type-too-long"),
        pytest.param({"type": ""}, id="type-empty"),
        pytest.param({"created": 1.5}, id="created-fraction"),
        pytest.param({"created": True}, id="created-bool"),
        pytest.param({"created": -1}, id="created-negative"),
        pytest.param({"created": 2**53}, id="created-too-large"),
        pytest.param({"data": {"object": {"id": "cus_1\x00", "object": "customer"}}}, id="subject-nul"),
        pytest.param({"data": {"object": {"id": "in_1", "customer": {"id": "cus\t1"}}}}, id="expanded-customer-tab"),
        pytest.param({"data": {"object": {"id": "cus_1", "name": "a\x00b"}}}, id="nul-in-free-text"),
        pytest.param({"data": {"object": {"id": "cus_1", "name": "\ud800"}}}, id="lone-surrogate"),
        pytest.param({"data": {"object": {"id": "cus_1", "balance": float("nan")}}}, id="nan"),
    ],
)
def test_an_event_the_inbox_cannot_store_or_route_is_invalid(fields: dict[str, Any]) -> None:
    assert code_of(lambda: check_event(an_event(**fields))) == (400, "invalid_event")


def test_other_control_characters_in_stripes_free_text_are_not_ours_to_refuse() -> None:
    check_event(an_event(data={"object": {"id": "cus_1", "object": "customer", "name": "tab\there"}}))


def test_the_text_at_hand_spares_the_walk_but_not_the_checks() -> None:
    clean = an_event()
    check_event(clean, json.dumps(clean))
    nan = an_event(data={"object": {"id": "cus_1", "balance": float("nan")}})
    assert code_of(lambda: check_event(nan, json.dumps(nan))) == (400, "invalid_event")


# -- what it is about --------------------------------------------------------------------


@pytest.mark.parametrize(
    "type_,obj,key",
    [
        ("customer.updated", {"object": "customer", "id": "cus_1"}, "customer:cus_1"),
        (
            "customer.subscription.updated",
            {"object": "subscription", "id": "sub_1", "customer": "cus_1"},
            "subscription:sub_1",
        ),
        ("invoice.paid", {"object": "invoice", "id": "in_1", "customer": {"id": "cus_1"}}, "invoice:in_1"),
        ("payment_method.attached", {"object": "payment_method", "id": "pm_1"}, "payment_method:pm_1"),
        ("invoice_payment.paid", {"object": "invoice_payment", "id": "inpay_1", "invoice": "in_2"}, "invoice:in_2"),
        (
            "setup_intent.succeeded",
            {"object": "setup_intent", "id": "seti_1", "payment_method": {"id": "pm_2"}},
            "payment_method:pm_2",
        ),
        ("charge.succeeded", {"object": "charge", "id": "ch_1"}, None),  # the copy holds no charges
        ("setup_intent.created", {"object": "setup_intent", "id": "seti_1", "payment_method": None}, None),
    ],
)
def test_the_object_an_event_is_about(type_: str, obj: dict[str, Any], key: str | None) -> None:
    assert object_key({"type": type_, "data": {"object": obj}}) == key


def test_an_event_without_an_object_is_about_nothing() -> None:
    assert object_key({"type": "customer.updated", "data": None}) is None


# -- the inbox's retries ---------------------------------------------------------------------


def test_retries_double_from_five_seconds_up_to_an_hour() -> None:
    assert [backoff(n) for n in (0, 1, 2, 3, 4)] == [5.0, 5.0, 10.0, 20.0, 40.0]
    assert backoff(30) == 3600.0
