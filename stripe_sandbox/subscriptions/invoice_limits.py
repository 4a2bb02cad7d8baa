"""Stripe's limits on one subscription's invoices (https://docs.stripe.com/rate-limits,
"Subscriptions API"): "10 new invoices per subscription, per minute" and "20 new invoices
per subscription, per day". An update that would make one more (`always_invoice`, a new
billing interval) is refused with Stripe's 429 `rate_limit_error` and changes nothing.
Counted on sandbox time; a day is the last 24 hours (the stricter reading)."""

from __future__ import annotations

from sqlalchemy import select

from stripe_sandbox.models import SandboxObject
from stripe_sandbox.rate_limits import rate_limited
from stripe_sandbox.store import Document, Store

PER_MINUTE = 10
PER_DAY = 20


def refuse_another_invoice(store: Store, subscription: Document) -> None:
    o = SandboxObject
    rows = store.session.scalars(
        select(o).where(
            o.customer == subscription["customer"], o.object_type == "invoice", o.created > store.now - 86_400
        )
    )
    created = [
        row.created
        for row in rows
        if ((row.data.get("parent") or {}).get("subscription_details") or {}).get("subscription") == subscription["id"]
    ]
    if len(created) >= PER_DAY or sum(1 for at in created if at > store.now - 60) >= PER_MINUTE:
        raise rate_limited()
