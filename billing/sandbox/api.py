"""The emulated API: one module per Stripe resource, each adding its routes.

A new resource (payment methods, setup intents, invoices, events) is a module
with `register(router)` listed here.
"""

from __future__ import annotations

from billing.sandbox import customers, prices, products, subscriptions
from billing.sandbox.router import Router

RESOURCES = (customers, products, prices, subscriptions)


def build_router() -> Router:
    router = Router()
    for resource in RESOURCES:
        resource.register(router)
    return router
