"""What a subscription's status means: the status the API shows, "active"
(the contract: any status but canceled and incomplete_expired), and which
statuses provide capacity."""

from __future__ import annotations

from typing import Any

import stripe

from billing import replica
from billing.db import Database

# Every status the API shows (API.md, Subscriptions): Stripe's, and `paused` for a paused collection.
STATUSES = ("trialing", "active", "past_due", "unpaid", "canceled", "incomplete", "incomplete_expired", "paused")
ACTIVE_EXCLUDED = frozenset({"canceled", "incomplete_expired"})
# A subscription provides its quantities (capacity) only in these statuses, as
# the API shows them (so a paused collection provides nothing).
PROVIDING = frozenset({"trialing", "active", "past_due"})


def subscription_status(data: dict[str, Any]) -> str:
    """Stripe's status, except that paused collection reads `paused`."""
    if data.get("pause_collection") and data.get("status") not in ACTIVE_EXCLUDED:
        return "paused"
    return str(data["status"])


def provides_capacity(data: dict[str, Any]) -> bool:
    return subscription_status(data) in PROVIDING


def is_active(subscription: stripe.Subscription | dict[str, Any]) -> bool:
    return subscription["status"] not in ACTIVE_EXCLUDED


def active_subscription_ids(db: Database, customer_id: str) -> list[str]:
    """The customer's active subscriptions, newest first."""
    return [str(s["id"]) for s in replica.subscriptions(db, customer_id) if is_active(s)]


def has_active_subscription(db: Database, customer_id: str) -> bool:
    return bool(active_subscription_ids(db, customer_id))
