"""Bring the service's state back in line with Stripe, the system of record.

- The billing-account index: every customer the service creates carries its
  workspace id, currency and the reservation's reference in its metadata, so a
  lost or half-written index can always be recovered from the customers.
- The copy of Stripe (`billing.replica`): by default, catch up from Stripe's
  events list (kept 30 days) since the last run, each event handled as its
  webhook would be (and only once); `full=True` re-copies everything.

Safe to run on a schedule while traffic flows: every view it stores is stamped
with the time its request started, so it never overwrites a newer one.

One object that can't be handled (a customer whose metadata clashes with
another's, an object Stripe answers without a field) is logged, listed in the
report's `failed` and left for the next run; the run goes on with the rest. Only
what stops every object (Stripe or the database unreachable) ends it.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

import stripe
from flask import current_app
from sqlalchemy import delete, select, update
from sqlalchemy.exc import InterfaceError, OperationalError

from billing import replica
from billing.billing_accounts.service import REFERENCE_KEY, forget_account
from billing.budget import BudgetExhausted, background
from billing.models import BillingAccountIndex, ReplicaCursor, Workspace, utcnow
from billing.payment_methods.service import ensure_default_payment_method
from billing.state import BillingState

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
    events_replayed: int = 0
    copied_customers: int = 0
    # One entry per object that failed: {"object": id, "step": ..., "error": exception type}.
    failed: list[dict[str, str]] = field(default_factory=list)


# Failures that stop every object, not one: the run ends (the next one starts over).
SYSTEMIC = (
    stripe.APIConnectionError,
    stripe.AuthenticationError,
    stripe.PermissionError,
    OperationalError,
    InterfaceError,
    BudgetExhausted,
)


def _each(report: ReconcileReport, step: str, object_id: str, work: Callable[[], object]) -> bool:
    """One object's step. A failure of its own is logged and listed, and the run
    goes on with the rest; returns whether it went through."""
    try:
        work()
        return True
    except SYSTEMIC:
        raise
    except Exception as error:
        _failed(report, step, object_id, error)
        return False


def _failed(report: ReconcileReport, step: str, object_id: str, error: BaseException) -> None:
    report.failed.append({"object": object_id, "step": step, "error": type(error).__name__})
    # The type only, as the request log does: a message may carry data.
    log.warning("reconcile: %s of %s failed (%s); left for the next run", step, object_id, type(error).__name__)


@background("reconcile")
def reconcile(state: BillingState, *, full: bool = False) -> ReconcileReport:
    """Runs in an app context (the CLI command's). Background work: it leaves
    Stripe's request budget to users first (billing.budget)."""
    report = ReconcileReport()
    if not full:
        _catch_up_events(state, report)
    customers = list(state.gateway.iter_customers())
    report.scanned = len(customers)
    seen = _rebuild_index(state, report, customers)
    if full:
        _copy_everything(state, report)
    else:  # accounts restored just now, or older than the copy
        with state.db.read() as session:
            uncopied = list(
                session.scalars(
                    select(BillingAccountIndex).where(
                        BillingAccountIndex.copied_at.is_(None), BillingAccountIndex.customer_id.is_not(None)
                    )
                )
            )
        for account in uncopied:
            if _each(report, "copy", str(account.customer_id), partial(replica.ensure_copied, state, [account])):
                report.copied_customers += 1
    # What a missed payment_method.attached webhook left undone.
    for customer in customers:
        if customer.id in seen and not (customer.invoice_settings and customer.invoice_settings.default_payment_method):
            _each(report, "default", customer.id, partial(_set_default, state, report, customer.id))
    return report


def _set_default(state: BillingState, report: ReconcileReport, customer_id: str) -> None:
    if ensure_default_payment_method(state, customer_id):
        report.defaults_set.append(customer_id)


# Events can be committed at Stripe a little after the time they carry.
EVENTS_OVERLAP_SECONDS = 300
EVENTS_KEPT_SECONDS = 30 * 86400


def _catch_up_events(state: BillingState, report: ReconcileReport) -> None:
    """Put every event since the last run into the inbox, as its delivery
    would have (events already there are skipped), then apply what waits.
    Stripe's list is read page by page as it goes: order doesn't matter, the
    inbox applies events in any order."""
    from billing.jobs import apply_due
    from billing.webhooks import inbox
    from billing.webhooks.service import object_key

    with state.db.read() as session:
        cursor = session.get(ReplicaCursor, "events")
    since = cursor.value - EVENTS_OVERLAP_SECONDS if cursor else int(state.gateway.clock()) - EVENTS_KEPT_SECONDS
    latest = cursor.value if cursor else since
    for event in state.gateway.iter_events(since):

        def store(event: stripe.Event = event) -> None:
            data = json.loads(json.dumps(event.to_dict(), default=str))
            if inbox.store(state.db, data, object_key(data)).new:
                report.events_replayed += 1

        _each(report, "event", str(getattr(event, "id", None)), store)
        latest = max(latest, int(getattr(event, "created", None) or 0))
    apply_due()
    with state.db.write() as session:
        row = session.get(ReplicaCursor, "events", with_for_update=True)
        if row is None:
            session.add(ReplicaCursor(name="events", value=latest))
        elif row.value < latest:
            row.value = latest


# Customers copied side by side: each costs three Stripe list requests, on three
# endpoints, so 8 at a time stays under Stripe's 25 requests/s per endpoint
# even at ~150 ms a request.
COPY_WORKERS = 8
RATE_LIMIT_TRIES = 6


def _copy_everything(state: BillingState, report: ReconcileReport) -> None:
    """Re-copy every indexed customer's subscriptions, payment methods and
    invoices (the customers themselves were just listed, and kept)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with state.db.read() as session:
        customer_ids = [
            str(c)
            for c in session.scalars(
                select(BillingAccountIndex.customer_id).where(BillingAccountIndex.customer_id.is_not(None))
            )
        ]

    def copy(customer_id: str) -> BaseException | None:
        with app.app_context(), background("reconcile"):  # a context variable: each thread enters it
            for attempt in range(RATE_LIMIT_TRIES):
                try:
                    replica.copy_customer(state, customer_id, with_customer=False)
                    return None
                except stripe.RateLimitError:
                    # The stripe library leaves 429s to us: a batch job backs off and goes on.
                    if attempt == RATE_LIMIT_TRIES - 1:
                        raise
                    time.sleep(0.5 * 2**attempt)
                except SYSTEMIC:
                    raise
                except Exception as error:  # this customer's own: reported, the others go on
                    return error
        return None

    with ThreadPoolExecutor(max_workers=COPY_WORKERS, thread_name_prefix="reconcile") as pool:
        for customer_id, error in zip(customer_ids, pool.map(copy, customer_ids), strict=True):
            if error is None:
                report.copied_customers += 1
            else:
                _failed(report, "copy", customer_id, error)
    for _ in state.gateway.iter_products():
        pass


def _rebuild_index(state: BillingState, report: ReconcileReport, customers: list[stripe.Customer]) -> set[str]:
    """Pair customers with index rows; restore, activate, release and remove rows.
    Returns the ids of the customers that are ours."""
    index = _IndexRepair.load(state, report)
    for customer in customers:
        _each(report, "index", customer.id, partial(index.pair, customer))
    stale = utcnow() - PENDING_GRACE
    for row in index.rows:
        _each(report, "index", row.customer_id or f"reservation {row.reference}", partial(index.settle, row, stale))
    return index.seen


@dataclass
class _IndexRepair:
    """The index as it stood before the repair, and what the repair has met so far."""

    state: BillingState
    report: ReconcileReport
    workspace_ids: set[str]
    rows: list[BillingAccountIndex]
    by_customer: dict[str, BillingAccountIndex]
    by_reference: dict[str, BillingAccountIndex]
    seen: set[str] = field(default_factory=set)  # our customers
    settled: set[int] = field(default_factory=set)  # reservations a customer was found for

    @classmethod
    def load(cls, state: BillingState, report: ReconcileReport) -> _IndexRepair:
        with state.db.read() as session:
            workspace_ids = set(session.scalars(select(Workspace.id)))
            rows = list(session.scalars(select(BillingAccountIndex)))
        return cls(
            state,
            report,
            workspace_ids,
            rows,
            by_customer={r.customer_id: r for r in rows if r.customer_id},
            by_reference={r.reference: r for r in rows},
        )

    def pair(self, customer: stripe.Customer) -> None:
        """A customer of one of our workspaces: checked against its row, or given one."""
        metadata = customer.metadata.to_dict() if customer.metadata else {}
        workspace_id = metadata.get("workspace_id")
        if workspace_id not in self.workspace_ids:
            return  # not ours, or its workspace is gone
        row = self.by_customer.get(customer.id)
        if row is not None:
            self.seen.add(customer.id)
            if row.workspace_id != workspace_id:
                self.report.conflicts.append(customer.id)
                log.error(
                    "customer %s: index says %s, Stripe says %s; left alone",
                    customer.id,
                    row.workspace_id,
                    workspace_id,
                )
            return
        self._index(customer, workspace_id, metadata)

    def _index(self, customer: stripe.Customer, workspace_id: str, metadata: dict[str, str]) -> None:
        """Activate the reservation the customer's reference names, else restore a row for it."""
        reference = metadata.get(REFERENCE_KEY) or ""
        pending = self.by_reference.get(reference)
        reservation = pending if pending is not None and pending.customer_id is None else None
        with self.state.db.write() as session:
            if reservation is not None:
                session.execute(
                    update(BillingAccountIndex)
                    .where(BillingAccountIndex.id == reservation.id)
                    .values(customer_id=customer.id, state="active")
                )
            else:
                session.add(
                    BillingAccountIndex(
                        workspace_id=workspace_id,
                        customer_id=customer.id,
                        reference=reference if reference and reference not in self.by_reference else uuid.uuid4().hex,
                        currency=metadata.get("currency") or customer.currency or "usd",
                        state="active",
                    )
                )
        # Reported once committed: a row the database refused is a failure, not a repair.
        if reservation is not None:
            self.settled.add(reservation.id)
            self.report.activated.append(customer.id)
        else:
            self.report.restored.append(customer.id)
        self.seen.add(customer.id)

    def settle(self, row: BillingAccountIndex, stale: datetime) -> None:
        """A row no customer was found for: removed once Stripe confirms its customer
        deleted; a reservation older than `stale` released (the create never happened)."""
        if row.customer_id and row.customer_id not in self.seen:
            # Listed customers exclude deleted ones; confirm one by one before dropping.
            if self.state.gateway.retrieve_customer(row.customer_id) is None:
                forget_account(self.state, row.customer_id)
                self.report.removed.append(row.customer_id)
        elif row.customer_id is None and row.id not in self.settled and row.created_at < stale:
            # No customer carries its reference: the create never happened.
            with self.state.db.write() as session:
                session.execute(
                    delete(BillingAccountIndex).where(
                        BillingAccountIndex.id == row.id, BillingAccountIndex.customer_id.is_(None)
                    )
                )
            self.report.released += 1
