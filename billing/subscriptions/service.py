"""Rules for subscriptions."""

from __future__ import annotations

import logging

import stripe

from billing.access import account_in_workspace
from billing.state import current

log = logging.getLogger("billing.subscriptions")

# "Active" in the contract means any status but these.
ACTIVE_EXCLUDED = frozenset({"canceled", "incomplete_expired"})


def list_subscriptions(workspace_id: str, customer_id: str) -> list[stripe.Subscription]:
    """The account's subscriptions, newest first (404 outside the workspace)."""
    account_in_workspace(workspace_id, customer_id)
    subscriptions = [
        s for s in current().gateway.list_subscriptions(customer_id) if s.customer == customer_id
    ]
    subscriptions.sort(key=lambda s: (s.created, s.id), reverse=True)
    return subscriptions
