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
TAXED_INVOICES_LOOKED_AT = 20  # the tax status reads Stripe Tax's decision on the newest taxed one among these


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


def tax_status(state: BillingState, ctx: AccountAccess) -> dict[str, Any]:
    """The account's tax status as Stripe holds it, from the copy: the customer's `tax_exempt`
    (the Dashboard's "Tax status": taxable, exempt, reverse charge) and Stripe Tax's decision on
    the newest invoice it taxed (its `taxability_reason`). Reverse charge is either: the service
    decides nothing itself."""
    replica.ensure_copied(state, [ctx.account])
    customer = replica.customer(state.db, ctx.customer_id) or {}
    invoices, _ = replica.invoices_page(state.db, ctx.customer_id, TAXED_INVOICES_LOOKED_AT)
    taxed = next((i for i in invoices if (i.get("automatic_tax") or {}).get("enabled") and i.get("total_taxes")), None)
    reason = taxed["total_taxes"][0].get("taxability_reason") if taxed else None
    exempt = customer.get("tax_exempt") or "none"
    return {
        "automatic_tax": state.config.stripe_tax,
        "tax_exempt": exempt,
        "taxability_reason": reason,
        "reverse_charge": exempt == "reverse" or reason == "reverse_charge",
        "invoice_id": taxed["id"] if taxed else None,
    }
