"""Stripe's limits on one subscription (https://docs.stripe.com/rate-limits, "Subscriptions
API"): "10 new invoices per subscription, per minute", "20 new invoices per subscription, per
day" and 200 quantity updates per subscription, per hour. An update that would make one more
invoice (`always_invoice`, a new billing interval), or change a quantity once more, is refused
with Stripe's 429 `rate_limit_error` and changes nothing. Counted on sandbox time; a day is the
last 24 hours (the stricter reading)."""

from __future__ import annotations

from sqlalchemy import select

from stripe_sandbox.models import SandboxObject
from stripe_sandbox.rate_limits import rate_limited
from stripe_sandbox.store import Document, Store
from stripe_sandbox.subscriptions.documents import internal_state

PER_MINUTE = 10
PER_DAY = 20
QUANTITY_UPDATES_PER_HOUR = 200


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


def count_quantity_update(store: Store, subscription: Document, items: list[Document]) -> None:
    """An update that sets an item's quantity: refused past the hour's 200, else counted."""
    if not any("quantity" in item for item in items):
        return
    state = internal_state(subscription)
    recent = [at for at in state.get("quantity_updates", []) if at > store.now - 3_600]
    if len(recent) >= QUANTITY_UPDATES_PER_HOUR:
        raise rate_limited()
    state["quantity_updates"] = [*recent, store.now]
