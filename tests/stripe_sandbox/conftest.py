"""Fixtures: a sandbox-backed StripeClient on the suite's database.

That is SQLite by default and PostgreSQL when TEST_DATABASE_URL is set (CI runs
both). The emulator runs standalone here, on its own `SqlSessions` and with the
tables it installs itself; each test starts empty.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import stripe

from stripe_sandbox import SANDBOX_TABLES, SandboxClock, SandboxHTTPClient, SqlSessions, install


@pytest.fixture(scope="session")
def sandbox_database(database_url: str) -> Iterator[SqlSessions]:
    database = SqlSessions(database_url)
    install(database)
    yield database
    database.dispose()


@pytest.fixture
def database(sandbox_database: SqlSessions) -> Iterator[SqlSessions]:
    yield sandbox_database
    with sandbox_database.write() as session:
        for table in SANDBOX_TABLES:
            session.execute(table.delete())


@pytest.fixture
def client(database: SqlSessions) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_sandbox", http_client=SandboxHTTPClient(database), max_network_retries=2)


@pytest.fixture
def clock(database: SqlSessions) -> SandboxClock:
    return SandboxClock(database)


@pytest.fixture
def product(client: stripe.StripeClient) -> stripe.Product:
    return client.v1.products.create(params={"name": "Pro"})


@pytest.fixture
def make_price(client: stripe.StripeClient, product: stripe.Product) -> Callable[..., stripe.Price]:
    """A recurring 10.00 USD monthly price of `product`, with overrides."""

    def make(**params: Any) -> stripe.Price:
        defaults: dict[str, Any] = {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 1000,
            "recurring": {"interval": "month"},
        }
        return client.v1.prices.create(params={**defaults, **params})  # type: ignore[typeddict-item]

    return make


@pytest.fixture
def monthly(make_price: Callable[..., stripe.Price]) -> stripe.Price:
    return make_price(lookup_key="pro_monthly")


@pytest.fixture
def customer(client: stripe.StripeClient) -> stripe.Customer:
    return client.v1.customers.create(params={"email": "owner@example.com"})


@pytest.fixture
def paying_customer(client: stripe.StripeClient) -> stripe.Customer:
    """A customer whose default payment method is a Visa test card (charges succeed)."""
    return client.v1.customers.create(
        params={
            "email": "payer@example.com",
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )


@pytest.fixture
def customer_with(client: stripe.StripeClient) -> Callable[[str], stripe.Customer]:
    """customer_with("pm_card_chargeDeclined") -> a new customer whose default payment method is that test token's."""

    def make(token: str) -> stripe.Customer:
        return client.v1.customers.create(
            params={
                "email": "someone@example.com",
                "payment_method": token,
                "invoice_settings": {"default_payment_method": token},
            }
        )

    return make
