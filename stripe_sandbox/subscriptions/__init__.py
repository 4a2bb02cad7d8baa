"""Subscriptions: /v1/subscriptions, their billing, and what time does to them.

The stored document is the API shape except that each item's `price` holds
the price id: responses embed the price (and the legacy `plan`) as they are
when read, like Stripe's references. Items live inside their subscription.

Billing: creation invoices the first period (a 0 invoice for a trial) and,
for `charge_automatically`, charges the default payment method (the
subscription's, else the customer's invoice default). Item changes prorate
by the second, as pending invoice items or (`always_invoice`) an invoice
charged at once. An update with `payment_behavior=pending_if_incomplete` applies
only once the invoice it makes is paid (Stripe's pending updates). Changes over
time (trial end, renewal, cancel_at, incomplete expiry, a pending update's
expiry, pause_collection.resumes_at) run in `advance()` when the clock reaches
the row's `due_at` (see clock.py), one transition at its own moment.

Every change records its events (customer.subscription.created/updated/
deleted/paused/resumed/trial_will_end/pending_update_applied/
pending_update_expired, invoice.*, invoiceitem.created).

    documents      the document: shape, presentation, prices, periods, due time
    items          items[] specs -> item documents
    billing_cycle  invoices, prorations, periods, renewal, trial end, advance()
    lifecycle      create / update / resume / cancel
    preview        invoice previews (POST /v1/invoices/create_preview)
    handlers       the HTTP routes, KIND, register()
"""

from stripe_sandbox.subscriptions.billing_cycle import advance, collect, invoice_paid
from stripe_sandbox.subscriptions.documents import OBJECT_TYPE, URL, customer_subscriptions, due_at
from stripe_sandbox.subscriptions.handlers import KIND, register
from stripe_sandbox.subscriptions.lifecycle import cancel_all_for_customer
from stripe_sandbox.subscriptions.preview import preview_invoice

__all__ = [
    "KIND",
    "OBJECT_TYPE",
    "URL",
    "advance",
    "cancel_all_for_customer",
    "collect",
    "customer_subscriptions",
    "due_at",
    "invoice_paid",
    "preview_invoice",
    "register",
]
