"""Bad input gets the contract's error and changes nothing (API.md, Errors)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import jwt
import pytest
from sqlalchemy import select

from billing.models import StripeEvent
from billing.stripe_ids import intent_id
from tests.helpers import FULL, TEST_ENV, assert_error, deliver, index_rows, sign


@pytest.fixture
def world(as_user: Any) -> dict[str, Any]:
    alice = as_user("alice")
    ws = alice.workspace()
    account = alice.account(ws)
    return {"alice": alice, "ws": ws, "acc": f"/workspaces/{ws}/billing-accounts/{account['id']}"}


@pytest.mark.parametrize("value", ["nul\x00here", "lone \ud800 surrogate", "bell\x07", "esc\x1b[0m"])
def test_control_characters_and_lone_surrogates_in_a_body_are_422(
    world: dict[str, Any], state: Any, value: str
) -> None:
    alice, ws = world["alice"], world["ws"]
    body = json.dumps({**FULL, "name": value}).encode()  # ensure_ascii: "\ud800" travels as an escape
    response = alice.client.post(
        f"/workspaces/{ws}/billing-accounts", data=body, headers={**alice.headers, "Content-Type": "application/json"}
    )
    error = assert_error(response, 422, "validation_failed")
    assert "name" in error["errors"]
    assert len(index_rows(state, ws)) == 1  # nothing written
    nested = alice.patch(world["acc"], {"address": {"country": "US", "city": value}})
    assert "address.city" in assert_error(nested, 422, "validation_failed")["errors"]


@pytest.mark.parametrize("value", ["a\u0085b", "\u0080", "csi \u009b[0m", "end\u009f"])
def test_c1_control_characters_are_refused_like_the_others(world: dict[str, Any], value: str) -> None:
    alice = world["alice"]
    before = alice.get(world["acc"]).json
    error = assert_error(alice.patch(world["acc"], {"description": value}), 422, "validation_failed")
    assert "description" in error["errors"]
    assert (
        "name"
        in assert_error(alice.post("/workspaces", {"name": value, "billing_mode": "single"}), 422, "validation_failed")[
            "errors"
        ]
    )
    assert alice.get(world["acc"]).json == before  # nothing stored
    encoded = value.encode().hex("%").upper()
    assert_error(alice.get(f"{world['acc']}/invoices?after=in_%{encoded}"), 422, "validation_failed")
    assert_error(alice.get(f"/workspaces/{world['ws']}/billing-accounts/cus_%{encoded}"), 422, "validation_failed")
    # Printable text beyond them is fine: "é" is U+00E9, "…" U+2026.
    assert alice.patch(world["acc"], {"description": "Café … ok"}).json["description"] == "Café … ok"


def test_a_required_body_that_is_not_sent_is_422(world: dict[str, Any], session_app: Any) -> None:
    """Every operation whose document marks its body required refuses a request without one
    (webargs would read it as {}: a PATCH that did nothing, answered 200)."""
    alice, ws, account_id = world["alice"], world["ws"], world["acc"].rsplit("/", 1)[1]
    ids = {"workspaceId": ws, "billingAccountId": account_id}
    spec = session_app.test_client().get("/openapi.json").json
    required = [
        (method, path)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and operation.get("requestBody", {}).get("required")
    ]
    assert ("patch", "/workspaces/{workspaceId}") in required
    before = alice.get(world["acc"]).json
    for method, path in required:
        url = re.sub(r"\{(\w+)\}", lambda match: ids.get(match.group(1), "x_unknown"), path)
        for extra in ({}, {"data": b"", "content_type": "application/json"}):
            response = alice.client.open(url, method=method.upper(), headers=alice.headers, **extra)
            error = assert_error(response, 422, "validation_failed")
            assert error["errors"] == {"_schema": ["Send a JSON body."]}, (method, path)
    assert alice.get(world["acc"]).json == before


def test_tab_and_newline_in_free_text_are_fine(world: dict[str, Any]) -> None:
    response = world["alice"].patch(world["acc"], {"description": "line one\n\tline two"})
    assert response.status_code == 200 and response.json["description"] == "line one\n\tline two"


@pytest.mark.parametrize("suffix", ["%00", "x%00y", "%1b"])
def test_control_characters_in_path_ids_and_cursors_are_422(world: dict[str, Any], suffix: str) -> None:
    alice = world["alice"]
    assert_error(alice.get(f"/workspaces/{world['ws']}/billing-accounts/cus_{suffix}"), 422, "validation_failed")
    assert_error(alice.get(f"{world['acc']}/invoices?after=in_{suffix}"), 422, "validation_failed")


def test_json_nested_too_deep_is_400_even_when_signed(world: dict[str, Any], client: Any) -> None:
    alice = world["alice"]
    deep = ("[" * 10_000 + "]" * 10_000).encode()
    response = alice.client.patch(
        world["acc"], data=deep, headers={**alice.headers, "Content-Type": "application/json"}
    )
    assert_error(response, 400, "invalid_json")
    payload = ('{"id": "evt_deep", "type": "customer.updated", "data": ' + "[" * 10_000 + "]" * 10_000 + "}").encode()
    assert_error(deliver(client, payload, sign(payload)), 400, "invalid_json")
    just_deep_enough = ('{"name": "Deep", "x": ' + "[" * 30 + "]" * 30 + "}").encode()  # 31 levels
    response = alice.client.patch(
        world["acc"], data=just_deep_enough, headers={**alice.headers, "Content-Type": "application/json"}
    )
    assert_error(response, 422, "validation_failed")  # parsed, then refused by the schema (unknown field)


def test_a_json_body_without_content_type_is_read_as_json(world: dict[str, Any]) -> None:
    alice = world["alice"]
    response = alice.client.patch(
        world["acc"], data=json.dumps({"name": "No header"}), headers={**alice.headers, "Content-Type": ""}
    )
    assert response.status_code == 200, response.json
    assert response.json["name"] == "No header"
    form = alice.client.patch(
        world["acc"], data="name=x", headers={**alice.headers, "Content-Type": "application/x-www-form-urlencoded"}
    )
    assert_error(form, 415, "unsupported_media_type")


def _token(**claims: Any) -> dict[str, str]:
    base = {
        "sub": "alice",
        "iat": int(time.time()),
        "exp": int(time.time()) + 600,
        "iss": TEST_ENV["JWT_ISSUER"],
        "aud": TEST_ENV["JWT_AUDIENCE"],
        **claims,
    }
    return {"Authorization": "Bearer " + jwt.encode(base, TEST_ENV["JWT_SECRET"], algorithm="HS256")}


@pytest.mark.parametrize("claims", [{"exp": str(int(time.time()) + 600)}, {"sub": "   "}, {"sub": ""}, {"exp": True}])
def test_tokens_with_a_string_exp_or_a_blank_sub_are_401(client: Any, claims: dict[str, Any]) -> None:
    assert_error(client.get("/workspaces", headers=_token(**claims)), 401, "authentication_required")
    assert client.get("/workspaces", headers=_token()).status_code == 200


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "ali\x00ce"},
        {"sub": "ali\ud800ce"},
        {"sub": "alice\u0085"},
        {"sub": "alice\n"},
        {"exp": 1e30},
        {"exp": int(time.time()) + 366 * 86400},
        {"exp": float("inf")},
    ],
)
def test_a_signed_token_with_a_malformed_sub_or_a_far_exp_is_401(client: Any, claims: dict[str, Any]) -> None:
    """Only a key holder can sign these; they are still refused, never a 500."""
    assert_error(client.get("/workspaces", headers=_token(**claims)), 401, "authentication_required")
    assert_error(
        client.post("/workspaces", json={"name": "X", "billing_mode": "single"}, headers=_token(**claims)),
        401,
        "authentication_required",
    )


def test_a_token_valid_for_a_year_is_accepted(client: Any) -> None:
    assert client.get("/workspaces", headers=_token(exp=int(time.time()) + 365 * 86400 - 60)).status_code == 200


def _event(**fields: Any) -> dict[str, Any]:
    return {
        "id": "evt_malformed",
        "object": "event",
        "type": "customer.updated",
        "created": int(time.time()),
        "data": {"object": {"id": "cus_x", "object": "customer"}},
        "livemode": False,
        **fields,
    }


@pytest.mark.parametrize(
    "fields",
    [
        {"id": "evt_\x00"},
        {"id": "evt_\ud800"},
        {"id": "evt_" + "x" * 10_000},
        {"id": "evt_a\u0085b"},
        {"type": "customer." + "x" * 5_000},
        {"type": "customer.up\x00dated"},
        {"type": 7},
        {"created": str(int(time.time()))},
        {"created": 1.5},
        {"created": True},
        {"created": 10**30},
        {"data": {"object": {"id": "cus_\x00", "object": "customer"}}},
        {"data": {"object": {"id": "cus_" + "x" * 10_000, "object": "customer"}}},
        {"data": {"object": {"id": "sub_1", "object": "subscription", "customer": "cus_\ud800"}}},
        {"data": {"object": {"id": "in_1", "object": "invoice", "customer": {"id": "cus_\x00"}}}},
        {"data": {"object": {"id": "cus_x", "object": "customer", "name": "NUL \x00 in free text"}}},
        {"data": {"object": {"id": "cus_x", "object": "customer", "metadata": {"k\ud800": "v"}}}},
        {"data": {"object": {"id": "cus_x", "object": "customer", "balance": float("nan")}}},
    ],
)
def test_a_signed_but_malformed_event_is_400_not_500(client: Any, state: Any, fields: dict[str, Any]) -> None:
    """Only Stripe's secret signs these; a 500 would make Stripe retry them for days."""
    payload = json.dumps(_event(**fields)).encode()  # ensure_ascii: NUL and surrogates as escapes
    assert_error(deliver(client, payload, sign(payload)), 400, "invalid_event")
    with state.db.read() as session:
        assert session.scalars(select(StripeEvent.id)).all() == []  # nothing stored
    fine = json.dumps(_event(data={"object": {"id": "cus_x", "object": "customer", "name": "Tab\tand \u0085"}}))
    assert deliver(client, fine.encode(), sign(fine.encode())).status_code == 200  # Stripe's free text is its own


def test_second_confirm_of_a_succeeded_setup_intent_is_a_client_error(world: dict[str, Any]) -> None:
    alice, acc = world["alice"], world["acc"]
    secret = alice.post(f"{acc}/payment-methods").json["client_secret"]
    intent = intent_id(secret)
    first = alice.post(f"/sandbox{acc}/setup-intents/{intent}/confirm", {"payment_method": "pm_card_visa"})
    assert first.status_code == 200 and first.json["status"] == "succeeded"
    again = alice.post(f"/sandbox{acc}/setup-intents/{intent}/confirm", {"payment_method": "pm_card_visa"})
    assert_error(again, 409, "setup_intent_unexpected_state")
