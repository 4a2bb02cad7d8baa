"""Documents two requests change at once keep both changes (no lost updates).

A request that read a customer (or subscription) early and rewrites it later
must re-read it under its row lock first; otherwise a concurrent update that
committed in between is overwritten with the stale copy. SQLite serialises
writers, so these races only show on PostgreSQL (TEST_DATABASE_URL); on SQLite
the tests pass trivially.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import stripe

from stripe_sandbox import SandboxHTTPClient, SqlSessions, invoice_engine
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.store import Store

ROUNDS = 12


@pytest.fixture(autouse=True)
def no_retry_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    # Lock conflicts answer 429 lock_timeout with Stripe-Should-Retry: retry at once.
    monkeypatch.setattr(stripe.HTTPClient, "_sleep_time_seconds", lambda self, num_retries: 0.0)


def _client(database: SqlSessions) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_sandbox", http_client=SandboxHTTPClient(database), max_network_retries=10)


def _run_together(*workers: Callable[[], None]) -> None:
    barrier = threading.Barrier(len(workers))
    errors: list[BaseException] = []

    def run(work: Callable[[], None]) -> None:
        barrier.wait()
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(work,)) for work in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_billing_keeps_a_default_payment_method_set_meanwhile(
    database: SqlSessions, monthly: stripe.Price, paying_customer: stripe.Customer
) -> None:
    client = _client(database)
    customer_id = paying_customer.id
    methods = [client.v1.payment_methods.attach("pm_card_visa", {"customer": customer_id}).id for _ in range(ROUNDS)]

    def set_defaults() -> None:
        own = _client(database)
        for method in methods:
            own.v1.customers.update(customer_id, {"invoice_settings": {"default_payment_method": method}})

    def subscribe() -> None:
        # Each creation finalizes (numbers) and charges a first invoice, rewriting the customer.
        own = _client(database)
        for _ in range(ROUNDS):
            own.v1.subscriptions.create({"customer": customer_id, "items": [{"price": monthly.id}]})

    def invoice_and_pay() -> None:
        own = _client(database)
        for _ in range(ROUNDS):
            own.v1.invoice_items.create({"customer": customer_id, "amount": 500, "currency": "usd"})
            invoice = own.v1.invoices.create({"customer": customer_id, "pending_invoice_items_behavior": "include"})
            assert invoice.id is not None
            own.v1.invoices.pay(invoice.id)

    _run_together(set_defaults, subscribe, subscribe, invoice_and_pay)

    customer = client.v1.customers.retrieve(customer_id)
    assert customer.invoice_settings is not None
    assert customer.invoice_settings.default_payment_method == methods[-1]
    numbers = [invoice.number for invoice in client.v1.invoices.list({"customer": customer_id}).auto_paging_iter()]
    assert len(numbers) == 3 * ROUNDS and len(set(numbers)) == len(numbers)  # no sequence number handed out twice
    assert customer.next_invoice_sequence == 3 * ROUNDS + 1


def test_a_subscription_keeps_the_default_payment_method_set_while_it_is_created(
    database: SqlSessions, monthly: stripe.Price, paying_customer: stripe.Customer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same race, made certain: the change commits between the creation's first read and its finalization."""
    if database.is_sqlite:
        pytest.skip("SQLite serialises writers: no change can commit while the creation runs")
    client = _client(database)
    method = client.v1.payment_methods.attach("pm_card_mastercard", {"customer": paying_customer.id}).id
    pending_items = invoice_engine.pending_items

    def change_meanwhile(store: Store, customer_id: str, **kwargs: Any) -> list[SandboxObject]:
        # The creation has read the customer, unlocked; another request changes it and commits now.
        _run_together(
            lambda: _client(database).v1.customers.update(  # type: ignore[arg-type]
                customer_id, {"invoice_settings": {"default_payment_method": method}}
            )
        )
        return pending_items(store, customer_id, **kwargs)

    monkeypatch.setattr(invoice_engine, "pending_items", change_meanwhile)
    subscription = client.v1.subscriptions.create({"customer": paying_customer.id, "items": [{"price": monthly.id}]})
    monkeypatch.undo()

    assert subscription.status == "active"
    customer = client.v1.customers.retrieve(paying_customer.id)
    assert customer.invoice_settings is not None
    assert customer.invoice_settings.default_payment_method == method
    assert customer.next_invoice_sequence == 2
