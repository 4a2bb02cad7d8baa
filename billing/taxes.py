"""Stripe Tax (STRIPE_TAX=1): where the service asks Stripe to compute tax.

One home for the rule "with STRIPE_TAX, automatic tax is on everywhere": every subscription
the service creates or changes, every preview (so a preview shows the invoice that follows,
tax included), and Stripe checks a billing account's address as it is created or changed
(`tax[validate_location]=immediately`), so an address Stripe Tax can't place is refused
before anything is made (Stripe's `customer_tax_location_invalid`, the API's 422
`tax_location_invalid`: `billing.errors`). Stripe computes the amounts; the emulator does
it as Stripe documents (`stripe_sandbox/tax.py`).
"""

from __future__ import annotations

from stripe.params import (
    CustomerCreateParams,
    CustomerUpdateParams,
    InvoiceCreatePreviewParams,
    SubscriptionCreateParams,
    SubscriptionUpdateParams,
)

from billing.config import Config


def on_customer(config: Config, params: CustomerCreateParams | CustomerUpdateParams) -> None:
    if config.stripe_tax:
        params["tax"] = {"validate_location": "immediately"}


def on_subscription(config: Config, params: SubscriptionCreateParams | SubscriptionUpdateParams) -> None:
    if config.stripe_tax:
        params["automatic_tax"] = {"enabled": True}


def on_preview(config: Config, params: InvoiceCreatePreviewParams) -> None:
    if config.stripe_tax:
        params["automatic_tax"] = {"enabled": True}
