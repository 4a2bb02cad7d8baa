"""Rules for tax IDs: the limit, ownership, and verification as Stripe reports it.

A tax ID is a Stripe customer tax ID. Stripe checks the value's format when it is added
(422 `tax_id_invalid`, `billing.errors`) and verifies EU VAT numbers, UK VAT numbers and
Australian ABNs asynchronously: `customer.tax_id.updated` brings the result, which the
webhook worker copies like any object (`billing.webhooks`); reads come from the copy.
Stripe Tax uses a verified number for reverse charge (`billing.taxes`, `stripe_sandbox/tax.py`).
"""

from __future__ import annotations

from typing import Any

from billing import replica
from billing.access import AccountAccess
from billing.errors import ApiError, not_found
from billing.leases import lease
from billing.state import BillingState

MAX_TAX_IDS = 5  # Stripe's limit per customer


def _lease_name(customer_id: str) -> str:
    """Held while a customer's tax IDs are counted and one is added: concurrent adds never pass one count together."""
    return f"tax-ids:{customer_id}"


def list_tax_ids(state: BillingState, ctx: AccountAccess) -> list[dict[str, Any]]:
    replica.ensure_copied(state, [ctx.account])
    return replica.tax_ids(state.db, ctx.customer_id)


def create_tax_id(state: BillingState, ctx: AccountAccess, data: dict[str, Any], request_key: str) -> dict[str, Any]:
    """409 `tax_id_limit_reached` at the limit, before Stripe is asked; the gateway keeps
    Stripe's answer in the copy before the lease is let go."""
    ctx.for_billing_write()
    replica.ensure_copied(state, [ctx.account])
    with lease(state.db, _lease_name(ctx.customer_id)):
        if len(replica.tax_ids(state.db, ctx.customer_id)) >= MAX_TAX_IDS:
            raise ApiError(409, "tax_id_limit_reached", f"A billing account can hold at most {MAX_TAX_IDS} tax IDs.")
        created = state.gateway.create_tax_id(
            ctx.customer_id,
            {"type": data["type"], "value": data["value"]},
            idempotency_key=f"{request_key}:tax-id",
        )
    return created.to_dict()


def delete_tax_id(state: BillingState, ctx: AccountAccess, tax_id: str, request_key: str) -> None:
    """Another account's tax ID, or one that exists nowhere, is the same 404, decided from the copy."""
    ctx.for_billing_write()
    replica.ensure_copied(state, [ctx.account])
    found = replica.tax_id(state.db, tax_id)
    if found is None or replica.customer_of(found) != ctx.customer_id:
        raise not_found("tax ID")
    state.gateway.delete_tax_id(ctx.customer_id, tax_id, idempotency_key=f"{request_key}:delete-tax-id")
