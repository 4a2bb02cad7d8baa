"""An object Stripe answers without a field the service reads is Stripe's fault:
502 `stripe_error` in the contract's envelope, the Stripe request id in the log
line, never a 500 (the service runs with a live key against a fake
api.stripe.com, as in test_stripe_faults)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from tests.helpers import Api, assert_error


def answered_without(world: dict[str, Any], monkeypatch: Any, method: str, path: str, field: str) -> list[str]:
    """Stripe's answers to `method path` lose `field`; returns the request ids of those answers."""
    brain = world["fake"].brain
    request = brain.request
    ids: list[str] = []

    def without(verb: str, url: str, headers: Any, body: Any) -> Any:
        text, status, answer_headers = request(verb, url, headers, body)
        if verb.upper() == method and url.split("?")[0].endswith(path) and status == 200:
            data = json.loads(text)
            data.pop(field, None)
            text = json.dumps(data)
            ids.append(dict(answer_headers)["Request-Id"])
        return text, status, answer_headers

    monkeypatch.setattr(brain, "request", without)
    return ids


@pytest.mark.parametrize(
    "method,path,field,route",
    [
        # The reshaping of a customer into a billing account reads `created`.
        (
            "POST",
            "/v1/customers",
            "created",
            lambda ws: (
                f"/workspaces/{ws}/billing-accounts",
                {"name": "A", "email": "a@x.co", "address": {"country": "US"}},
            ),
        ),
        # The service reads the SetupIntent's `client_secret` (a Stripe object's attribute).
        ("POST", "/v1/setup_intents", "client_secret", None),
    ],
)
def test_a_stripe_object_missing_a_field_is_a_502_with_the_request_id_logged(
    stripe_world: dict[str, Any],
    auth: Any,
    monkeypatch: Any,
    caplog: Any,
    method: str,
    path: str,
    field: str,
    route: Any,
) -> None:
    alice = Api(stripe_world["app"].test_client(), auth("alice"))
    ws = alice.workspace("pooled")
    if route is None:
        account = alice.account(ws)
        route = lambda _ws: (f"/workspaces/{ws}/billing-accounts/{account['id']}/payment-methods", None)  # noqa: E731
    url, body = route(ws)
    ids = answered_without(stripe_world, monkeypatch, method, path, field)
    with caplog.at_level(logging.ERROR, logger="billing.errors"):
        response = alice.post(url, body)
    error = assert_error(response, 502, "stripe_error")
    assert response.json["type"] == "api_error"
    [request_id] = ids
    assert request_id not in response.get_data(as_text=True)  # the body says nothing of Stripe's
    [record] = [r for r in caplog.records if r.name == "billing.errors"]
    assert request_id in record.stripe_request_ids
    assert field in record.getMessage() and "Traceback" not in record.getMessage()
    assert error["message"]


def test_a_subscription_in_another_shape_is_a_502(stripe_world: dict[str, Any], auth: Any, monkeypatch: Any) -> None:
    """What a subscription shows is read by the service before the schema reshapes it
    (subscription_view): a Stripe answer of another shape there is Stripe's fault too."""
    alice = Api(stripe_world["app"].test_client(), auth("alice"))
    ws = alice.workspace("single")
    account = alice.account(ws)
    brain = stripe_world["fake"].brain
    request = brain.request

    def items_as_text(verb: str, url: str, headers: Any, body: Any) -> Any:
        text, status, answer_headers = request(verb, url, headers, body)
        if verb.upper() == "POST" and url.split("?")[0].endswith("/v1/subscriptions") and status == 200:
            data = json.loads(text)
            data["items"] = {"object": "list", "data": ["si_not_an_object"]}
            text = json.dumps(data)
        return text, status, answer_headers

    monkeypatch.setattr(brain, "request", items_as_text)
    response = alice.post(
        f"/workspaces/{ws}/billing-accounts/{account['id']}/subscriptions", {"product_quantities": {"users": 1}}
    )
    assert_error(response, 502, "stripe_error")
