"""Rebuild the billing-account index from Stripe, which is the system of record.

Every customer the service creates carries its workspace id, currency and the
reservation's reference in its metadata, so a lost or half-written index can
always be recovered from the customers themselves.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import delete, select, update

from billing.billing_accounts.service import REFERENCE_KEY, forget_account
from billing.models import BillingAccountIndex, Workspace, utcnow
from billing.state import current
from billing.payment_methods.service import ensure_default_payment_method

log = logging.getLogger("billing.reconcile")

# A reservation younger than this may still have its Stripe call in flight.
PENDING_GRACE = timedelta(minutes=10)


@dataclass
class ReconcileReport:
    scanned: int = 0
    activated: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    released: int = 0
    conflicts: list[str] = field(default_factory=list)
    defaults_set: list[str] = field(default_factory=list)


def reconcile() -> ReconcileReport:
    """Runs in an app context (the CLI command's)."""
    state = current()
    report = ReconcileReport()
    customers = list(state.gateway.iter_customers())
    report.scanned = len(customers)
    with state.db.read() as session:
        workspace_ids = set(session.scalars(select(Workspace.id)))
        rows = list(session.scalars(select(BillingAccountIndex)))
    by_customer = {r.customer_id: r for r in rows if r.customer_id}
    by_reference = {r.reference: r for r in rows}
    seen: set[str] = set()
    settled: set[int] = set()

    for customer in customers:
        metadata = customer.metadata.to_dict() if customer.metadata else {}
        workspace_id = metadata.get("workspace_id")
        if workspace_id not in workspace_ids:
            continue  # not ours, or its workspace is gone
        seen.add(customer.id)
        row = by_customer.get(customer.id)
        if row is not None:
            if row.workspace_id != workspace_id:
                report.conflicts.append(customer.id)
                log.error("customer %s: index says %s, Stripe says %s; left alone",
                          customer.id, row.workspace_id, workspace_id)
            continue
        reference = metadata.get(REFERENCE_KEY) or ""
        pending = by_reference.get(reference)
        with state.db.write() as session:
            if pending is not None and pending.customer_id is None:
                session.execute(
                    update(BillingAccountIndex)
                    .where(BillingAccountIndex.id == pending.id)
                    .values(customer_id=customer.id, state="active")
                )
                settled.add(pending.id)
                report.activated.append(customer.id)
            else:
                session.add(
                    BillingAccountIndex(
                        workspace_id=workspace_id,
                        customer_id=customer.id,
                        reference=reference if reference and reference not in by_reference else uuid.uuid4().hex,
                        currency=metadata.get("currency") or customer.currency or "usd",
                        state="active",
                    )
                )
                report.restored.append(customer.id)

    stale = utcnow() - PENDING_GRACE
    for row in rows:
        if row.customer_id and row.customer_id not in seen:
            # Listed customers exclude deleted ones; confirm one by one before dropping.
            if state.gateway.retrieve_customer(row.customer_id) is None:
                forget_account(row.customer_id)
                report.removed.append(row.customer_id)
        elif row.customer_id is None and row.id not in settled and row.created_at < stale:
            # No customer carries its reference: the create never happened.
            with state.db.write() as session:
                session.execute(
                    delete(BillingAccountIndex).where(
                        BillingAccountIndex.id == row.id, BillingAccountIndex.customer_id.is_(None)
                    )
                )
            report.released += 1

    # What a missed payment_method.attached webhook left undone.
    for customer in customers:
        if customer.id in seen and not (customer.invoice_settings and customer.invoice_settings.default_payment_method):
            if ensure_default_payment_method(customer.id):
                report.defaults_set.append(customer.id)
    return report
