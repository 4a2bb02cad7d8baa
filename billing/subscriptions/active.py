"""What "active" means for a subscription (the contract: any status but
canceled and incomplete_expired), and whether an account has one."""

from __future__ import annotations

from typing import Any

import stripe

from billing import replica

ACTIVE_EXCLUDED = frozenset({"canceled", "incomplete_expired"})


def is_active(subscription: stripe.Subscription | dict[str, Any]) -> bool:
    return subscription["status"] not in ACTIVE_EXCLUDED


def has_active_subscription(customer_id: str) -> bool:
    return any(is_active(s) for s in replica.subscriptions(customer_id))
