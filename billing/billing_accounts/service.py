"""Rules for billing accounts.

The Stripe customer is the account; the index row only says which workspace
owns it. Creating one reserves a slot first (a short locked transaction that
enforces the billing-mode limit), then creates the customer with an idempotency
key derived from the reservation, then activates the slot. No database lock is
held while Stripe is called.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from typing import Any, cast

import stripe
from sqlalchemy import delete, func, select, update
from stripe.params import (
    CustomerCreateParams,
    CustomerCreateParamsAddress,
    CustomerUpdateParams,
)

from billing import replica, taxes
from billing.access import Access, AccountAccess
from billing.errors import ApiError, not_found
from billing.leases import account_lease_name, lease
from billing.models import BillingAccountIndex, Workspace, utcnow
from billing.organizations.capacity import refuse_if_assigned
from billing.state import BillingState
from billing.subscriptions.active import has_active_subscription

log = logging.getLogger("billing.billing_accounts")

ACCOUNT_LIMITS = {"single": 1, "pooled": 10, "assigned": 10}
REFERENCE_KEY = "billing_api_reference"


def account_limit(billing_mode: str) -> int:
    return ACCOUNT_LIMITS[billing_mode]


def _address_params(address: dict[str, Any]) -> CustomerCreateParamsAddress:
    """The fields sent, as Stripe's address; null is sent as "" (Stripe's way to clear one).
    (Stripe's create and update address params are the same shape.)"""
    params: CustomerCreateParamsAddress = {}
    if "country" in address:
        params["country"] = address["country"] or ""
    if "line1" in address:
        params["line1"] = address["line1"] or ""
    if "line2" in address:
        params["line2"] = address["line2"] or ""
    if "city" in address:
        params["city"] = address["city"] or ""
    if "state" in address:
        params["state"] = address["state"] or ""
    if "postal_code" in address:
        params["postal_code"] = address["postal_code"] or ""
    return params


def list_billing_accounts(state: BillingState, access: Access) -> list[replica.Document]:
    """The workspace's accounts, oldest first, from the copy of Stripe."""
    settle_pending(state, access.workspace.id)
    with state.db.read() as session:
        rows = list(
            session.scalars(
                select(BillingAccountIndex)
                .where(
                    BillingAccountIndex.workspace_id == access.workspace.id,
                    BillingAccountIndex.state == "active",
                )
                .order_by(BillingAccountIndex.created_at, BillingAccountIndex.id)
            )
        )
    replica.ensure_copied(state, rows)
    copies = replica.customers(state.db, (str(r.customer_id) for r in rows))
    customers = []
    for row in rows:
        copy = copies.get(str(row.customer_id))
        if copy is None or copy.deleted:
            forget_account(state, str(row.customer_id))
            continue
        if _belongs(copy.data, access.workspace.id):
            customers.append(copy.data)
    return customers


def _belongs(customer: replica.Document, workspace_id: str) -> bool:
    """Defence in depth: the customer's own metadata must name the workspace."""
    owner = (customer.get("metadata") or {}).get("workspace_id")
    if owner != workspace_id:
        log.error("index names workspace %s for customer %s, Stripe names %s", workspace_id, customer["id"], owner)
        return False
    return True


def forget_account(state: BillingState, customer_id: str) -> None:
    """Drop a billing account's index row (its customer is deleted, or gone from Stripe)."""
    with state.db.write() as session:
        session.execute(delete(BillingAccountIndex).where(BillingAccountIndex.customer_id == customer_id))
    log.info("customer %s: index row removed", customer_id)


def get_billing_account(state: BillingState, ctx: AccountAccess) -> replica.Document:
    replica.ensure_copied(state, [ctx.account])
    customer = replica.customer(state.db, ctx.customer_id)
    if customer is None:
        forget_account(state, ctx.customer_id)
        raise not_found("billing account")
    if not _belongs(customer, ctx.workspace_id):
        raise not_found("billing account")
    return customer


def _reserve_slot(
    state: BillingState, access: Access, currency: str, reference: str, params: CustomerCreateParams
) -> BillingAccountIndex:
    """Count and reserve under the workspace's write lock, so concurrent
    creates cannot both pass the limit. A retry of the same request (same
    reference) finds its own reservation instead of taking a second slot."""
    with state.db.write() as session:
        workspace = session.get(Workspace, access.workspace.id, with_for_update=True)
        if workspace is None:
            raise not_found("workspace")
        mine = session.scalar(select(BillingAccountIndex).where(BillingAccountIndex.reference == reference))
        if mine is not None and mine.workspace_id == workspace.id:
            return mine
        used = session.scalar(
            select(func.count())
            .select_from(BillingAccountIndex)
            .where(BillingAccountIndex.workspace_id == workspace.id)
        )
        limit = account_limit(workspace.billing_mode)
        if int(used or 0) >= limit:
            raise ApiError(
                409,
                "billing_account_limit_reached",
                f"A workspace in {workspace.billing_mode} mode can have at most {limit} billing "
                f"account{'s' if limit > 1 else ''}.",
            )
        row = BillingAccountIndex(
            workspace_id=workspace.id,
            reference=reference,
            currency=currency,
            state="pending",
            create_params=dict(params),
        )
        session.add(row)
    return row


# Held while a reservation's Stripe create runs: a request that died lets go of
# it within this time (the Stripe client's timeouts and retries fit inside).
RESERVATION_LEASE_SECONDS = 75.0


def _reservation_lease(reference: str) -> str:
    return f"reservation:{reference}"


def create_billing_account(
    state: BillingState, access: Access, data: dict[str, Any], request_key: str | None = None
) -> stripe.Customer:
    """`request_key` (from an Idempotency-Key) makes a retry reuse the first
    attempt's reservation and Stripe idempotency key."""
    access.for_billing_write()
    settle_pending(state, access.workspace.id)  # a slot held by a request that died is freed or filled first
    currency = data.get("currency") or state.config.default_currency
    reference = hashlib.sha256(request_key.encode()).hexdigest()[:32] if request_key else uuid.uuid4().hex
    params: CustomerCreateParams = {
        "name": data["name"],
        "email": data["email"],
        "address": _address_params(data["address"]),
        "metadata": {
            "workspace_id": access.workspace.id,
            "currency": currency,
            REFERENCE_KEY: reference,
        },
    }
    if data.get("phone"):
        params["phone"] = data["phone"]
    if data.get("description"):
        params["description"] = data["description"]
    taxes.on_customer(state.config, params)
    row = _reserve_slot(state, access, currency, reference, params)
    with lease(state.db, _reservation_lease(row.reference), ttl=RESERVATION_LEASE_SECONDS):
        return _create_reserved(state, row, params)


def _create_reserved(state: BillingState, row: BillingAccountIndex, params: CustomerCreateParams) -> stripe.Customer:
    """The Stripe create of a reservation, then its activation (or its release)."""
    try:
        customer = state.gateway.create_customer(params, idempotency_key=f"billing-account:{row.reference}")
    except stripe.StripeError as error:
        if _outcome_unknown(error):
            # Stripe may have created it: keep the reservation; it is settled later.
            log.warning("customer create for reservation %s has an unknown outcome", row.reference)
        else:
            _release(state, row)
        raise
    except BaseException:
        _release(state, row)
        raise
    _activate(state, row, customer.id)
    return customer


def settle_pending(state: BillingState, workspace_id: str) -> None:
    """Settle the workspace's reservations whose request died mid-way (no one
    holds their lease): replay the Stripe create under the reservation's own
    idempotency key (Stripe answers with the customer if it made one), then
    activate, or release on a definite refusal. An unknown outcome stays pending."""
    with state.db.read() as session:
        rows = list(
            session.scalars(
                select(BillingAccountIndex).where(
                    BillingAccountIndex.workspace_id == workspace_id,
                    BillingAccountIndex.state == "pending",
                    BillingAccountIndex.create_params.is_not(None),
                )
            )
        )
    for row in rows:
        try:
            with lease(state.db, _reservation_lease(row.reference), ttl=RESERVATION_LEASE_SECONDS, wait=0):
                with state.db.read() as session:
                    fresh = session.get(BillingAccountIndex, row.id)
                if fresh is None or fresh.state != "pending":
                    continue  # settled meanwhile
                _create_reserved(state, fresh, cast(CustomerCreateParams, fresh.create_params))
                log.info("reservation %s settled", row.reference)
        except ApiError as error:
            if error.code != "operation_in_progress":
                raise
            continue  # its request is still running
        except stripe.StripeError:
            continue  # Stripe can't say yet: still pending


def _activate(state: BillingState, row: BillingAccountIndex, customer_id: str) -> None:
    with state.db.write() as session:
        session.execute(
            update(BillingAccountIndex)
            .where(BillingAccountIndex.id == row.id)
            .values(customer_id=customer_id, state="active", copied_at=utcnow(), create_params=None)
        )


def _outcome_unknown(error: stripe.StripeError) -> bool:
    return isinstance(error, (stripe.APIConnectionError, stripe.APIError)) or (error.http_status or 0) >= 500


def _release(state: BillingState, row: BillingAccountIndex) -> None:
    with state.db.write() as session:
        session.execute(delete(BillingAccountIndex).where(BillingAccountIndex.id == row.id))


def update_billing_account(
    state: BillingState, ctx: AccountAccess, data: dict[str, Any], request_key: str
) -> stripe.Customer:
    ctx.for_billing_write()
    params: CustomerUpdateParams = {"metadata": {"updated_at": str(int(time.time()))}}
    if "name" in data:
        params["name"] = data["name"]
    if "email" in data:
        params["email"] = data["email"]
    # "" clears a field in Stripe.
    if "phone" in data:
        params["phone"] = data["phone"] or ""
    if "description" in data:
        params["description"] = data["description"] or ""
    if "address" in data:
        params["address"] = _address_params(data["address"])
        taxes.on_customer(state.config, params)
    # The key names these exact parameters: a retry after a lost answer carries a
    # new updated_at, which under the old key would be Stripe's idempotency_error.
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    try:
        return state.gateway.update_customer(ctx.customer_id, params, idempotency_key=f"{request_key}:update:{digest}")
    except stripe.InvalidRequestError as error:
        if error.code == "resource_missing":
            forget_account(state, ctx.customer_id)
            raise not_found("billing account") from None
        raise


def delete_billing_account(state: BillingState, ctx: AccountAccess, request_key: str) -> None:
    ctx.for_billing_write()
    customer_id = ctx.customer_id
    # Under the account's lease: no subscription can be created between the check and the delete.
    with lease(state.db, account_lease_name(customer_id)):
        refuse_if_assigned(state, ctx.workspace_id, customer_id)
        if has_active_subscription(state.db, customer_id):
            raise ApiError(
                422, "active_subscriptions_exist", "Cancel the account's active subscriptions before deleting it."
            )
        state.gateway.delete_customer(customer_id, idempotency_key=f"{request_key}:delete")
    forget_account(state, customer_id)
