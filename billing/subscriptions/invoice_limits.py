"""Stripe's limits on one subscription's invoices: "10 new invoices per subscription,
per minute" and "20 new invoices per subscription, per day" (https://docs.stripe.com/rate-limits).

Each increase is invoiced at once (`always_invoice`), so a workspace that adds seats one at a
time would meet Stripe's 429 at its 21st of a day. An increase is therefore invoiced at once only
while its subscription has room under both limits; past them its prorations go onto the next
invoice (`create_prorations`), and the preview says the same. Counted from the copy, on Stripe's
clock, over the last 24 hours (so whichever day Stripe counts, it is not more). The copy holds
every invoice the service's own writes made (a write's answer brings its invoice); an invoice
Stripe made itself (a renewal, a trial's end) may reach it only with its webhook, hence the margin.
"""

from __future__ import annotations

from typing import Literal

import stripe

from billing import replica
from billing.state import BillingState
from billing.stripe_ids import id_of, invoice_subscription

PER_MINUTE = 10
PER_DAY = 20
# Left for invoices Stripe makes on its own that the copy may not know yet.
MARGIN = 2
DAY_SECONDS = 86_400

Proration = Literal["always_invoice", "create_prorations"]


def increase_proration(state: BillingState, subscription: stripe.Subscription) -> Proration:
    """`always_invoice` while the subscription may get another invoice now, else `create_prorations`."""
    now = state.gateway.clock()
    customer_id = str(id_of(subscription.customer))
    created = [
        int(invoice.get("created") or 0)
        for invoice in replica.invoices_since(state.db, customer_id, int(now) - DAY_SECONDS)
        if invoice_subscription(invoice) == subscription.id
    ]
    in_last_minute = sum(1 for at in created if at > now - 60)
    if len(created) >= PER_DAY - MARGIN or in_last_minute >= PER_MINUTE - MARGIN:
        return "create_prorations"
    return "always_invoice"
