"""Wire level: form decoding, parameter validation, errors, headers, clock."""

from __future__ import annotations

import time

import pytest
import stripe
from stripe.params import CustomerCreateParams, PriceListParams, SubscriptionCreateParams

from stripe_sandbox import SandboxClock, SandboxHTTPClient, SqlSessions
from stripe_sandbox.errors import SandboxError
from stripe_sandbox.form import decode
from stripe_sandbox.params import validate
from stripe_sandbox.periods import add_interval, period_containing


def test_decode_nested_form() -> None:
    encoded = (
        "metadata[workspace_id]=w1&items[0][price]=p&items[0][quantity]=2&items[1][price]=q"
        "&expand[0]=a&expand[1]=b&lookup_keys[]=k&metadata[gone]=&phone=&email=a%2Bb%40c.d"
    )
    assert decode(encoded) == {
        "metadata": {"workspace_id": "w1", "gone": ""},
        "items": [{"price": "p", "quantity": "2"}, {"price": "q"}],
        "expand": ["a", "b"],
        "lookup_keys": ["k"],
        "phone": "",
        "email": "a+b@c.d",
    }


def test_decode_keeps_sparse_indexes_as_keys() -> None:
    assert decode("metadata[7]=x") == {"metadata": {"7": "x"}}
    # A dense run decodes as a list; the schema turns it back into a hash.
    assert validate(CustomerCreateParams, decode("metadata[0]=x")) == {"metadata": {"0": "x"}}


def test_validate_coerces_per_typeddict() -> None:
    params = validate(
        SubscriptionCreateParams,
        decode(
            "customer=cus_1&items[0][price]=p&items[0][quantity]=3&cancel_at_period_end=true&trial_end=now"
            "&trial_settings[end_behavior][missing_payment_method]=pause"
        ),
    )
    assert params == {
        "customer": "cus_1",
        "items": [{"price": "p", "quantity": 3}],
        "cancel_at_period_end": True,
        "trial_end": "now",
        "trial_settings": {"end_behavior": {"missing_payment_method": "pause"}},
    }
    assert validate(PriceListParams, decode("created[gte]=5&active=false")) == {"created": {"gte": 5}, "active": False}


@pytest.mark.parametrize(
    ("typed_dict", "encoded", "code", "param"),
    [
        (CustomerCreateParams, "address[foo]=x", "parameter_unknown", "address[foo]"),
        (CustomerCreateParams, "api_key=sk_x", "parameter_unknown", "api_key"),
        (SubscriptionCreateParams, "items[0][prices]=p", "parameter_unknown", "items[0][prices]"),
        (CustomerCreateParams, "balance=ten", "parameter_invalid_integer", "balance"),
        (CustomerCreateParams, "balance=", "parameter_invalid_empty", "balance"),
        (CustomerCreateParams, "shipping[name]=x", "parameter_missing", "shipping[address]"),
        (CustomerCreateParams, "tax_exempt=sometimes", None, "tax_exempt"),
        (SubscriptionCreateParams, "cancel_at_period_end=maybe", None, "cancel_at_period_end"),
        (CustomerCreateParams, "address=nowhere", None, "address"),
    ],
)
def test_validate_rejects(typed_dict: type, encoded: str, code: str | None, param: str) -> None:
    with pytest.raises(SandboxError) as raised:
        validate(typed_dict, decode(encoded))
    assert (raised.value.status, raised.value.code, raised.value.param) == (400, code, param)


def test_error_shape_and_request_id(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.customers.create(params={"address": {"city": "Oslo", "foo": "x"}})  # type: ignore[arg-type]
    error = raised.value
    assert error.http_status == 400
    assert error.request_id and error.request_id.startswith("req_")
    body = error.json_body["error"]
    assert body["type"] == "invalid_request_error"
    assert body["code"] == "parameter_unknown"
    assert body["param"] == "address[foo]"
    assert body["message"] == "Received unknown parameter: address[foo]"
    assert body["doc_url"].endswith("/parameter-unknown")
    assert body["request_log_url"].startswith(f"https://dashboard.stripe.com/test/logs/{error.request_id}")


def test_enum_error_message(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.customers.create(params={"tax_exempt": "sometimes"})
    assert raised.value.param == "tax_exempt"
    assert raised.value.user_message == "Invalid tax_exempt: must be one of exempt, none, or reverse"


def test_success_headers(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(params={"name": "Ada"})
    response = customer.last_response
    assert response is not None
    assert response.request_id and response.request_id.startswith("req_")
    assert response.headers["request-id"] == response.headers["Request-Id"]
    assert response.idempotency_key  # the library sends one with every POST; it is echoed


def test_unrecognized_url(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.raw_request("get", "/v1/no_such_things")
    assert raised.value.http_status == 404
    assert raised.value.user_message.startswith("Unrecognized request URL (GET: /v1/no_such_things)")
    assert raised.value.request_id.startswith("req_")


def test_live_key_rejected(database: SqlSessions) -> None:
    live = stripe.StripeClient("sk_live_abcdefghijkl", http_client=SandboxHTTPClient(database))
    with pytest.raises(stripe.AuthenticationError):
        live.v1.customers.list()


def test_clock_advances_created(client: stripe.StripeClient, clock: SandboxClock) -> None:
    before = clock.now()
    assert abs(before - time.time()) < 5
    after = clock.advance(days=3)
    assert after - before >= 3 * 86400
    assert clock.offset() == 3 * 86400
    customer = client.v1.customers.create()
    assert customer.created >= after
    assert clock.advance_to(after + 100) >= after + 100
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_period_arithmetic_clamps_day() -> None:
    jan_31 = 1706702400  # 2024-01-31 12:00 UTC
    feb_29 = add_interval(jan_31, "month", 1)
    assert feb_29 - jan_31 == 29 * 86400
    # Boundaries come from the anchor, so the day comes back after a short month.
    assert period_containing(jan_31, "month", 1, feb_29 + 1) == (feb_29, jan_31 + 60 * 86400)
    assert add_interval(jan_31, "year", 1) - jan_31 == 366 * 86400
    assert add_interval(jan_31, "week", 2) - jan_31 == 14 * 86400


def test_async_client(database: SqlSessions) -> None:
    import asyncio

    client = stripe.StripeClient("sk_test_sandbox", http_client=SandboxHTTPClient(database))

    async def roundtrip() -> tuple[str, str]:
        created = await client.v1.customers.create_async(params={"name": "Async"})
        fetched = await client.v1.customers.retrieve_async(created.id)
        return created.id, fetched.id

    created_id, fetched_id = asyncio.run(roundtrip())
    assert created_id == fetched_id


def test_request_stream_returns_a_readable_body(database: SqlSessions) -> None:
    http_client = SandboxHTTPClient(database)
    stream, status, headers = http_client.request_stream(
        "get", "https://api.stripe.com/v1/customers?limit=1", {"Authorization": "Bearer sk_test_x"}
    )
    assert status == 200 and headers["content-type"] == "application/json"
    assert b'"object": "list"' in stream.read()
