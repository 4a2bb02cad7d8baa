"""Ids read out of Stripe's fields: the one place each such rule is written."""

from __future__ import annotations

from typing import Any

import stripe


def named_id(value: Any) -> Any:
    """What a field that names an object holds: the object's id or, expanded,
    the object, whose `id` it gives. As given: a caller that trusts it not checks it."""
    if isinstance(value, dict):
        return value.get("id")
    if isinstance(value, stripe.StripeObject):
        return value["id"] if "id" in value else None
    return value


def id_of(value: Any) -> str | None:
    """The id such a field names (None when it names none)."""
    if isinstance(value, (dict, stripe.StripeObject)):
        return str(named_id(value))
    return value if value is None or isinstance(value, str) else None


def intent_id(client_secret: str) -> str:
    """`pi_123_secret_abc` -> `pi_123`: the PaymentIntent (or SetupIntent) a
    client secret confirms, read from it as Stripe.js reads it."""
    return client_secret.split("_secret_", 1)[0]


def invoice_subscription(invoice: dict[str, Any]) -> str | None:
    """The subscription an invoice bills (`parent.subscription_details.subscription`
    since Stripe's 2025 API versions), if it bills one."""
    parent = invoice.get("parent")
    details = parent.get("subscription_details") if isinstance(parent, dict) else None
    return id_of(details.get("subscription")) if isinstance(details, dict) else None
