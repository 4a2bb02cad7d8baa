from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
import stripe

from stripe_sandbox import SandboxClock, SandboxHTTPClient, SqlSessions, idempotency


def test_replay(client: stripe.StripeClient) -> None:
    options: stripe.RequestOptions = {"idempotency_key": "create-ada"}
    first = client.v1.customers.create(params={"name": "Ada"}, options=options)
    second = client.v1.customers.create(params={"name": "Ada"}, options=options)
    assert second.id == first.id
    assert second.to_dict() == first.to_dict()
    assert first.last_response is not None and second.last_response is not None
    assert "idempotent-replayed" not in first.last_response.headers
    assert second.last_response.headers["Idempotent-Replayed"] == "true"
    assert second.last_response.headers["Original-Request"] == first.last_response.request_id
    assert second.last_response.request_id != first.last_response.request_id
    assert len(client.v1.customers.list().data) == 1


def test_conflicting_reuse(client: stripe.StripeClient) -> None:
    options: stripe.RequestOptions = {"idempotency_key": "k1"}
    client.v1.customers.create(params={"name": "Ada"}, options=options)
    with pytest.raises(stripe.IdempotencyError) as raised:
        client.v1.customers.create(params={"name": "Grace"}, options=options)
    assert raised.value.http_status == 400
    assert raised.value.json_body["error"]["type"] == "idempotency_error"
    assert "same parameters" in raised.value.user_message
    with pytest.raises(stripe.IdempotencyError) as raised:
        client.v1.products.create(params={"name": "Ada"}, options=options)
    assert "same endpoint" in raised.value.user_message


def test_errors_are_replayed_but_validation_errors_are_not(client: stripe.StripeClient, monthly: stripe.Price) -> None:
    params: stripe.params.SubscriptionCreateParams = {"customer": "cus_missing", "items": [{"price": monthly.id}]}
    options: stripe.RequestOptions = {"idempotency_key": "sub-1"}
    for _ in range(2):
        with pytest.raises(stripe.InvalidRequestError) as raised:
            client.v1.subscriptions.create(params=params, options=options)
        assert raised.value.code == "resource_missing"
    assert raised.value.headers["Idempotent-Replayed"] == "true"
    # A request rejected by validation stores nothing: the key stays free.
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.create(params={"balance": "x"}, options={"idempotency_key": "c-1"})  # type: ignore[arg-type]
    assert client.v1.customers.create(params={"name": "Ok"}, options={"idempotency_key": "c-1"}).name == "Ok"


def test_failed_request_leaves_no_partial_state(client: stripe.StripeClient) -> None:
    # product_data creates a product before the currency check fails.
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.prices.create(
            params={"currency": "dollars", "unit_amount": 1, "product_data": {"name": "Ghost"}},
            options={"idempotency_key": "ghost"},
        )
    assert client.v1.products.list().data == []


def test_keys_are_scoped_per_api_key(database: SqlSessions) -> None:
    """As on Stripe: the same key sent with another secret key is another key."""
    options: stripe.RequestOptions = {"idempotency_key": "shared"}
    one = stripe.StripeClient("sk_test_one", http_client=SandboxHTTPClient(database))
    two = stripe.StripeClient("sk_test_two", http_client=SandboxHTTPClient(database))
    first = one.v1.customers.create(params={"name": "Ada"}, options=options)
    second = two.v1.customers.create(params={"name": "Ada"}, options=options)
    assert second.id != first.id
    assert second.last_response is not None and "idempotent-replayed" not in second.last_response.headers
    # Each API key still replays its own.
    assert one.v1.customers.create(params={"name": "Ada"}, options=options).id == first.id
    assert two.v1.customers.create(params={"name": "Ada"}, options=options).id == second.id
    assert len(one.v1.customers.list().data) == 2


def test_advancing_the_sandbox_clock_does_not_expire_keys(client: stripe.StripeClient, clock: SandboxClock) -> None:
    options: stripe.RequestOptions = {"idempotency_key": "retry-after-a-jump"}
    first = client.v1.customers.create(params={"name": "Ada"}, options=options)
    clock.advance(days=2)
    again = client.v1.customers.create(params={"name": "Ada"}, options=options)
    assert again.id == first.id
    assert again.last_response is not None and again.last_response.headers["Idempotent-Replayed"] == "true"


def test_keys_expire_after_24_hours_of_real_time(client: stripe.StripeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    options: stripe.RequestOptions = {"idempotency_key": "daily"}
    first = client.v1.customers.create(params={"name": "Ada"}, options=options)
    started = time.time()

    def real_time_after(hours: float) -> None:
        monkeypatch.setattr(idempotency, "time", SimpleNamespace(time=lambda: started + hours * 3600))

    real_time_after(23)
    assert client.v1.customers.create(params={"name": "Ada"}, options=options).id == first.id
    real_time_after(25)
    fresh = client.v1.customers.create(params={"name": "Grace"}, options=options)
    assert fresh.id != first.id
    assert fresh.last_response is not None and "idempotent-replayed" not in fresh.last_response.headers


def test_concurrent_requests_with_one_key_create_one_object(database: SqlSessions) -> None:
    threads_count = 10
    barrier = threading.Barrier(threads_count)
    results: list[str] = []
    errors: list[BaseException] = []

    def create() -> None:
        client = stripe.StripeClient("sk_test_sandbox", http_client=SandboxHTTPClient(database), max_network_retries=2)
        barrier.wait()
        try:
            customer = client.v1.customers.create(
                params={"email": "race@example.com"}, options={"idempotency_key": "race"}
            )
            results.append(customer.id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == threads_count and len(set(results)) == 1
    client = stripe.StripeClient("sk_test_sandbox", http_client=SandboxHTTPClient(database))
    assert [c.id for c in client.v1.customers.list().data] == [results[0]]
