"""The emulated API: one module per Stripe resource, each adding its routes.

A new resource is a module with `register(router)` listed here.
"""

from __future__ import annotations

from stripe_sandbox import (
    coupons,
    customers,
    events,
    invoices,
    payment_intents,
    payment_methods,
    prices,
    products,
    setup_intents,
    subscriptions,
    tax,
    tax_ids,
)
from stripe_sandbox.router import Router

RESOURCES = (
    customers,
    products,
    prices,
    coupons,
    subscriptions,
    payment_methods,
    setup_intents,
    payment_intents,
    invoices,
    tax,
    tax_ids,
    events,
)


def build_router() -> Router:
    router = Router()
    for resource in RESOURCES:
        resource.register(router)
    return router
