"""Recording the audit trail, in the transaction of each change.

Two ways in, one table (`audit_events`, `billing.models.AuditEvent`):
- the service's own rows (workspaces, members, organizations, refused usage):
  the service calls `record` in its write transaction;
- what Stripe holds (billing accounts, subscriptions, payment methods,
  invoices): the copy of Stripe (`billing.replica.Keeper`) stores every view
  Stripe returns; `stripe_entries` compares it with the view it replaces and
  names what changed in the API's terms (status `active` -> `past_due`, a
  product's quantity, a card's brand and last4: never more of a card), and
  `record_views` writes those entries in the copy's own transaction. A write
  through the API and the same change learnt later from its webhook find the
  same view: the second finds nothing changed and adds nothing.

Who did it: the request's caller (a user, or a service token) for what the
request changed itself, including its Stripe writes (`written`); `stripe`, with
the event's id, for what a webhook (or `reconcile`) taught the copy
(`learnt_from_event`); `stripe` without an event for any other view that shows
a change (a read that found the copy behind). A request stores its write's
answer as soon as Stripe gives it, while the webhook of that change is applied
on a worker 2 s or more after it arrives (`COALESCE_SECONDS`), so the request
finds the change and the webhook nothing new; should a worker in another
process store it first (the request held up for seconds after Stripe's
answer), the entry is Stripe's, with the event. An idempotent replay runs
nothing (`billing.idempotency` answers it), so it adds nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import g, has_request_context
from sqlalchemy import insert, or_, select
from sqlalchemy.orm import Session

from billing.models import AuditEvent, BillingAccountIndex, StripeCopy, new_audit_event_id, utcnow
from billing.stripe_ids import id_of
from billing.tokens import USAGE_SCOPE

if TYPE_CHECKING:
    from billing.catalog import CatalogProducts

log = logging.getLogger("billing.audit")

Changes = dict[str, dict[str, Any]]  # field -> {before, after}
# The Stripe objects whose changes are a workspace's billing (a PaymentIntent or a product is not).
AUDITED = frozenset({"customer", "subscription", "payment_method", "invoice", "tax_id"})
# Kept in the customer's metadata (billing.billing_accounts.service.REFERENCE_KEY): a new
# customer's account is found by it before its index row names the customer.
REFERENCE_KEY = "billing_api_reference"

_event: ContextVar[str | None] = ContextVar("audit_stripe_event", default=None)


@contextmanager
def learnt_from_event(event_id: str | None) -> Iterator[None]:
    """What the copy learns in this block came from Stripe, told by this event."""
    token = _event.set(event_id or "")
    try:
        yield
    finally:
        _event.reset(token)


@contextmanager
def written() -> Iterator[None]:
    """The block is one of the request's own Stripe writes (the gateway says so): what the copy
    learns in it, from the write's answer or from a webhook applied meanwhile in this context
    (the sandbox delivers synchronously in tests), is the request's doing."""
    token = _written.set(_caller())  # taken now: a context pushed within (the worker's) has its own `g`
    try:
        yield
    finally:
        _written.reset(token)


@dataclass(frozen=True)
class Actor:
    type: str  # user | service | stripe
    id: str | None
    request_id: str | None = None
    idempotency_key: str | None = None
    stripe_event_id: str | None = None


_written: ContextVar[Actor | None] = ContextVar("audit_written", default=None)


def _caller() -> Actor | None:
    """The request's caller, if this runs in an authenticated request."""
    if not has_request_context():
        return None
    user_id = getattr(g, "user_id", None)
    if not user_id:
        return None
    claimed = getattr(g, "idempotency", None)  # (scope, key, lock) once billing.idempotency claimed a key
    return Actor(
        type="service" if USAGE_SCOPE in getattr(g, "token_scopes", frozenset()) else "user",
        id=str(user_id),
        request_id=getattr(g, "request_id", None),
        idempotency_key=claimed[1] if claimed else None,
    )


def _stripe(event_id: str | None) -> Actor:
    return Actor(type="stripe", id=None, stripe_event_id=event_id or None)


def actor() -> Actor:
    """Who makes the change the copy is about to record (see the module's docstring)."""
    return _written.get() or _stripe(_event.get())


def _values(
    workspace_id: str, action: str, target: tuple[str, str], changes: Changes, who: Actor, at: datetime
) -> dict[str, Any]:
    return {
        "id": new_audit_event_id(),
        "workspace_id": workspace_id,
        "occurred_at": at,
        "actor_type": who.type,
        "actor_id": who.id,
        "action": action,
        "target_type": target[0],
        "target_id": target[1],
        "changes": changes,
        "request_id": who.request_id,
        "idempotency_key": who.idempotency_key,
        "stripe_event_id": who.stripe_event_id,
    }


def record(session: Session, workspace_id: str, action: str, target: tuple[str, str], changes: Changes) -> None:
    """One entry for a change the request makes to the service's own rows, in its transaction (one INSERT)."""
    who = _caller() or _stripe(_event.get())
    session.add(AuditEvent(**_values(workspace_id, action, target, changes, who, utcnow())))


def change(before: Any, after: Any) -> dict[str, Any]:
    return {"before": before, "after": after}


def changed(before: dict[str, Any], after: dict[str, Any]) -> Changes:
    """The fields whose values differ, before and after."""
    return {name: change(before.get(name), after.get(name)) for name in after if before.get(name) != after.get(name)}


# -- what Stripe holds ---------------------------------------------------------------


@dataclass(frozen=True)
class StoredView:
    """The copy's view of an object before a new one replaces it."""

    fetched_at: int
    deleted: bool
    data: dict[str, Any]


def views_before(session: Session, rows: Iterable[dict[str, Any]]) -> dict[str, StoredView]:
    """The stored views that `rows` (the copy's new rows) may replace, locked until the transaction ends."""
    ids = [row["id"] for row in rows if row["object_type"] in AUDITED]
    if not ids:
        return {}
    found = session.execute(
        select(StripeCopy.id, StripeCopy.fetched_at, StripeCopy.deleted, StripeCopy.data)
        .where(StripeCopy.id.in_(ids))
        .with_for_update()
    )
    return {row.id: StoredView(row.fetched_at, row.deleted, row.data) for row in found}


@dataclass(frozen=True)
class Entry:
    action: str
    target: tuple[str, str]
    changes: Changes
    customer_id: str  # whose workspace it belongs to
    reference: str | None = None  # a new customer's reservation (its index row has no customer yet)


def record_views(
    session: Session, rows: Iterable[dict[str, Any]], before: dict[str, StoredView], products: CatalogProducts
) -> None:
    """The entries for the copy's new rows (those stored over `before`), in the
    copy's transaction: at most one SELECT (whose workspace) and one INSERT."""
    entries: list[Entry] = []
    for row in rows:
        if row["object_type"] not in AUDITED:
            continue
        old = before.get(row["id"])
        if old is not None and old.fetched_at >= row["fetched_at"]:
            continue  # an older view: the copy keeps the one it has
        previous = None if old is None or old.deleted else old.data
        current = None if row["deleted"] else row.get("data")
        try:
            entries.extend(stripe_entries(row["object_type"], row["id"], previous, current, products))
        except (AttributeError, TypeError, KeyError, ValueError) as error:
            # A view in a shape the service can't read (its reader answers 502 for it): the copy
            # still keeps it, and says here that the trail could not describe it.
            log.warning(
                "audit trail: %s %s in an unexpected shape (%s)", row["object_type"], row["id"], type(error).__name__
            )
    if not entries:
        return
    customers = {entry.customer_id for entry in entries}
    references = {entry.reference for entry in entries if entry.reference}
    accounts = session.execute(
        select(BillingAccountIndex.workspace_id, BillingAccountIndex.customer_id, BillingAccountIndex.reference).where(
            or_(BillingAccountIndex.customer_id.in_(customers), BillingAccountIndex.reference.in_(references))
        )
    ).all()
    by_customer = {customer: workspace for workspace, customer, _ in accounts if customer}
    by_reference = {reference: workspace for workspace, _, reference in accounts}
    who, at = actor(), utcnow()
    values = []
    for entry in entries:
        workspace_id = by_customer.get(entry.customer_id) or by_reference.get(entry.reference or "")
        if workspace_id is not None:  # else not one of ours
            values.append(_values(workspace_id, entry.action, entry.target, entry.changes, who, at))
    if values:
        session.execute(insert(AuditEvent).values(values))


def stripe_entries(
    object_type: str,
    object_id: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    products: CatalogProducts,
) -> list[Entry]:
    """What changed between two views of a Stripe object (None: none yet, or deleted), in the API's terms."""
    if object_type == "customer":
        return _customer(object_id, before, after)
    if object_type == "payment_method":
        return _payment_method(object_id, before, after)
    if object_type == "tax_id":
        return _tax_id(object_id, before, after)
    if after is None:
        return []  # a deleted subscription or invoice: its end was its last change
    if object_type == "subscription":
        return _subscription(object_id, before, after, products)
    return _invoice(object_id, before, after)


PROFILE = ("name", "email", "phone", "description", "address")


def _profile(data: dict[str, Any] | None) -> dict[str, Any]:
    return {name: (data or {}).get(name) for name in PROFILE}


def _default_method(data: dict[str, Any] | None) -> str | None:
    return id_of(((data or {}).get("invoice_settings") or {}).get("default_payment_method"))


def _customer(customer_id: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[Entry]:
    target = ("billing_account", customer_id)
    if after is None:
        if before is None:
            return []
        return [Entry("billing_account.deleted", target, changed(_profile(before), _profile(None)), customer_id)]
    reference = (after.get("metadata") or {}).get(REFERENCE_KEY)
    entries = []
    if before is None:
        changes = changed({}, _profile(after))
        changes["currency"] = change(None, (after.get("metadata") or {}).get("currency") or after.get("currency"))
        entries.append(Entry("billing_account.created", target, changes, customer_id, reference))
    elif changes := changed(_profile(before), _profile(after)):
        entries.append(Entry("billing_account.updated", target, changes, customer_id, reference))
    old_default, new_default = _default_method(before), _default_method(after)
    if old_default != new_default:
        method = new_default or str(old_default)
        entries.append(
            Entry(
                "payment_method.default_changed",
                ("payment_method", method),
                {"default_payment_method": change(old_default, new_default)},
                customer_id,
                reference,
            )
        )
    return entries


def card_of(data: dict[str, Any]) -> dict[str, Any]:
    """What the trail shows of a payment method: a card's brand and last4, nothing more."""
    card = data.get("card")
    if isinstance(card, dict):
        return {"type": "card", "brand": card.get("brand"), "last4": card.get("last4")}
    return {"type": data.get("type")}


def _payment_method(method_id: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[Entry]:
    old_owner = id_of((before or {}).get("customer"))
    new_owner = id_of((after or {}).get("customer"))
    if old_owner == new_owner:
        return []
    target = ("payment_method", method_id)
    entries = []
    if old_owner and before is not None:
        changes = {"billing_account_id": change(old_owner, None), "card": change(card_of(before), None)}
        entries.append(Entry("payment_method.removed", target, changes, old_owner))
    if new_owner and after is not None:
        changes = {"billing_account_id": change(None, new_owner), "card": change(None, card_of(after))}
        entries.append(Entry("payment_method.added", target, changes, new_owner))
    return entries


def _tax_id_facts(data: dict[str, Any]) -> dict[str, Any]:
    return {"type": data.get("type"), "value": data.get("value"), "country": data.get("country")}


def _verification(data: dict[str, Any] | None) -> str | None:
    return ((data or {}).get("verification") or {}).get("status")


def _tax_id(tax_id_id: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[Entry]:
    """A billing account's tax ID: added, removed, its verification settled (Stripe's word for it)."""
    target = ("tax_id", tax_id_id)
    if after is None:
        owner = id_of((before or {}).get("customer"))
        if before is None or not owner:
            return []
        changes = {name: change(value, None) for name, value in _tax_id_facts(before).items()}
        return [Entry("tax_id.removed", target, changes, owner)]
    owner = id_of(after.get("customer"))
    if not owner:
        return []
    if before is None:
        changes = changed({}, {**_tax_id_facts(after), "verification": _verification(after)})
        return [Entry("tax_id.added", target, changes, owner)]
    if _verification(before) != _verification(after):
        changes = {"verification": change(_verification(before), _verification(after))}
        return [Entry("tax_id.verification_changed", target, changes, owner)]
    return []


def _time(value: Any) -> str | None:
    if not value:
        return None
    return datetime.fromtimestamp(int(value), tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _subscription_facts(data: dict[str, Any], products: CatalogProducts) -> dict[str, Any]:
    from billing.subscriptions.active import subscription_status  # (it reads the copy: imported late)

    items = (data.get("items") or {}).get("data") or []
    quantities: dict[str, int] = {}
    for item in items:
        price = item.get("price") or {}
        product = products.of_price(price) if isinstance(price, dict) else None
        quantities[product or str(id_of(price))] = int(item.get("quantity") or 0)
    starts = [i["current_period_start"] for i in items if i.get("current_period_start")]
    ends = [i["current_period_end"] for i in items if i.get("current_period_end")]
    return {
        "status": subscription_status(data),
        "product_quantities": quantities,
        "cancel_at_period_end": bool(data.get("cancel_at_period_end")),
        "cancel_at": _time(data.get("cancel_at")),
        "current_period_start": min(starts) if starts else None,
        "current_period_end": max(ends) if ends else None,
        # The caller's own metadata (the service's keys, `billing_api_...`, are never shown).
        "metadata": {k: v for k, v in (data.get("metadata") or {}).items() if not k.startswith("billing_api_")},
    }


def _scheduled(facts: dict[str, Any]) -> bool:
    """Whether a cancellation is scheduled (at the period's end, or at a date)."""
    return bool(facts["cancel_at_period_end"] or facts["cancel_at"] is not None)


def _subscription(
    subscription_id: str, before: dict[str, Any] | None, after: dict[str, Any], products: CatalogProducts
) -> list[Entry]:
    customer_id = id_of(after.get("customer"))
    if customer_id is None:
        return []
    target = ("subscription", subscription_id)
    new = _subscription_facts(after, products)
    if before is None:
        changes = {"status": change(None, new["status"]), "product_quantities": change(None, new["product_quantities"])}
        return [Entry("subscription.created", target, changes, customer_id)]
    old = _subscription_facts(before, products)
    entries = []

    def add(action: str, *names: str) -> None:
        entries.append(Entry(action, target, {name: change(old[name], new[name]) for name in names}, customer_id))

    if old["product_quantities"] != new["product_quantities"]:
        same_products = set(old["product_quantities"]) == set(new["product_quantities"])
        add("subscription.quantity_changed" if same_products else "subscription.product_changed", "product_quantities")
    if old["metadata"] != new["metadata"]:
        add("subscription.metadata_changed", "metadata")
    if _scheduled(old) != _scheduled(new) and new["status"] != "canceled":
        add(
            "subscription.canceled" if _scheduled(new) else "subscription.uncanceled",
            "cancel_at_period_end",
            "cancel_at",
        )
    if old["status"] != new["status"]:
        if new["status"] == "paused":
            add("subscription.paused", "status")
        elif old["status"] == "paused" and new["status"] != "canceled":
            add("subscription.resumed", "status")
        else:
            add("subscription.status_changed", "status")
    if old["current_period_start"] and (new["current_period_start"] or 0) > old["current_period_start"]:
        entries.append(
            Entry(
                "subscription.renewed",
                target,
                {
                    name: change(_time(old[name]), _time(new[name]))
                    for name in ("current_period_start", "current_period_end")
                },
                customer_id,
            )
        )
    return entries


INVOICE_ENDS = {"paid": "invoice.paid", "void": "invoice.voided", "uncollectible": "invoice.marked_uncollectible"}


def _invoice_facts(data: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "status": (data or {}).get("status"),
        "attempt_count": int((data or {}).get("attempt_count") or 0),
        "amount_paid": int((data or {}).get("amount_paid") or 0),
    }


def _invoice(invoice_id: str, before: dict[str, Any] | None, after: dict[str, Any]) -> list[Entry]:
    """A payment (or its end), and each failed attempt; a renewal's new invoice is the subscription's `renewed`."""
    customer_id = id_of(after.get("customer"))
    if customer_id is None:
        return []
    target = ("invoice", invoice_id)
    old, new = _invoice_facts(before), _invoice_facts(after)
    if before is None and new["status"] == "paid" and not new["amount_paid"]:
        return []  # nothing was charged (a trial's, or a zero invoice)
    if new["status"] != old["status"] and new["status"] in INVOICE_ENDS:
        return [Entry(INVOICE_ENDS[new["status"]], target, changed(old, new), customer_id)]
    if new["attempt_count"] > old["attempt_count"] and new["status"] == "open":
        return [Entry("invoice.payment_failed", target, changed(old, new), customer_id)]
    return []
