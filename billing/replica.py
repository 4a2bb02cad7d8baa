"""The service's own copy of the Stripe objects the API shows.

Every GET is answered from here, with no Stripe request. The copy is kept true
three ways: the gateway hands every object Stripe returns (to a write or a
fetch) to `keep`; webhooks re-fetch what changed elsewhere; `reconcile` catches
up from Stripe's events list or rebuilds everything.

An older view never overwrites a newer one: each view is stamped with the time
the Stripe request that returned it started, and stored only over a view
stamped earlier. A request that started later saw every change committed
before it started.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import stripe
from sqlalchemy import (
    JSON,
    BigInteger,
    Connection,
    FunctionElement,
    Select,
    Text,
    bindparam,
    case,
    cast,
    func,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session

from billing.audit import trail
from billing.catalog import CatalogProducts
from billing.db import Database
from billing.models import BillingAccountIndex, CapacityHold, StripeCopy, now_stamp, seconds_of, stamp_of, utcnow
from billing.stripe_ids import id_of, intent_id

if TYPE_CHECKING:
    from billing.state import BillingState

COPIED = frozenset({"customer", "subscription", "payment_method", "invoice", "product", "payment_intent", "tax_id"})


def _row(data: dict[str, Any], stamp: int) -> dict[str, Any]:
    object_type = str(data.get("object"))
    customer = data.get("id") if object_type == "customer" else id_of(data.get("customer"))
    return {
        "id": str(data["id"]),
        "object_type": object_type,
        "customer_id": customer,
        "status": data.get("status") if isinstance(data.get("status"), str) else None,
        "created": int(data.get("created") or 0),
        "deleted": bool(data.get("deleted")),
        "fetched_at": stamp,
        "data": data,
    }


def _as_stored(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A view as the copy stores it, and the latest invoice expanded in it (the
    copy keeps that on its own)."""
    # Back to Stripe's wire form: the library turns decimal strings into Decimal.
    data = json.loads(json.dumps(data, default=str))
    latest = data.get("latest_invoice")
    if isinstance(latest, dict) and not (latest.get("lines") or {}).get("has_more"):
        return {**data, "latest_invoice": latest.get("id")}, latest
    return data, None


class Keeper:
    """The gateway's keeper: stores every view Stripe returns (of a copied type)
    unless the copy already holds one fetched later. Bound to a database, so it
    also works outside a request (start-up, CLI).

    `clock` is Stripe's (unix seconds): a view that changes the object is dated
    on it (`changed_at`), as Stripe dates the object's own times; in the sandbox
    it is the emulator's, which an advance moves ahead of ours.

    A view that changes a workspace's billing (a customer, subscription, payment
    method or invoice of one of its accounts) is recorded in the audit trail in
    the same transaction (`billing.audit.trail`)."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        self.products = CatalogProducts(db)  # a subscription's items, named as the API names them

    def __call__(self, obj: stripe.StripeObject, stamp: int) -> None:
        self.keep_data(obj.to_dict(), stamp)

    def keep_data(self, data: dict[str, Any], stamp: int) -> None:
        rows = _rows(data, stamp)
        if rows:
            seen = stamp_of(self.clock())
            # One transaction: a subscription and the latest invoice it came with
            # change together (its pending_payment reads both).
            with self.db.write() as session:
                before = trail.views_before(session, rows)
                for row in rows:
                    _upsert(session, row, seen)
                trail.record_views(session, rows, before, self.products)


def _rows(data: dict[str, Any], stamp: int) -> list[dict[str, Any]]:
    """The copy's rows for a view (and for the latest invoice expanded in it)."""
    data, latest = _as_stored(data)
    if data.get("object") not in COPIED or not data.get("id"):
        return []
    # A write's answer expanded with the invoice it caused: keep that too.
    rows = _rows(latest, stamp) if latest is not None else []
    row = _row(data, stamp)
    if data.get("deleted"):
        # Stripe answers a deleted object with a stub: keep what we knew, flagged.
        row.pop("data")
    return [*rows, row]


def _upsert(session: Session, row: dict[str, Any], seen: int) -> None:
    """`seen`: when (on Stripe's clock, microseconds) the view reached us; its changed_at if it changes the object."""
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    # The first view is no change: until one is seen, updated_at is Stripe's own times.
    values = dict(row, first_seen=now_stamp(), changed_at=None)
    values.setdefault("data", {"id": row["id"], "object": row["object_type"], "deleted": True})
    statement = insert(StripeCopy).values(**values)
    changes: dict[str, Any] = {name: statement.excluded[name] for name in row if name != "id"}
    # A detached payment method has no customer: the copy keeps who it belonged
    # to, so a 404 for it is decided without asking Stripe (lists filter on the document).
    changes["customer_id"] = func.coalesce(statement.excluded.customer_id, StripeCopy.customer_id)
    if "data" in row:
        changes["changed_at"] = case(
            (StripeCopy.data != statement.excluded.data, literal(seen, BigInteger())), else_=StripeCopy.changed_at
        )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[StripeCopy.id],
            set_=changes,
            where=StripeCopy.fetched_at < statement.excluded.fetched_at,
        )
    )


# -- reads -----------------------------------------------------------------------


# Reads hand out the stored documents (Stripe's wire form, which the schemas
# reshape): building stripe objects from them would cost more than the query.
Document = dict[str, Any]


def _stored(db: Database, object_type: str, object_id: str) -> StripeCopy | None:
    with db.read() as session:
        row = session.get(StripeCopy, object_id)
    return row if row is not None and row.object_type == object_type else None


def stored_view(db: Database, object_type: str, object_id: str) -> StripeCopy | None:
    """The copy's row for an object (its document, stamp, deleted flag), in one read."""
    return _stored(db, object_type, object_id)


def customer(db: Database, customer_id: str) -> Document | None:
    """The customer, or None when it is deleted (or was never copied)."""
    row = _stored(db, "customer", customer_id)
    return None if row is None or row.deleted else row.data


def customers(db: Database, customer_ids: Iterable[str]) -> dict[str, StripeCopy]:
    ids = list(customer_ids)
    with db.read() as session:
        rows = session.scalars(select(StripeCopy).where(StripeCopy.id.in_(ids), StripeCopy.object_type == "customer"))
        return {row.id: row for row in rows}


CHANGED_AT = "billing_api_changed_at"  # added to documents handed out: seconds, see StripeCopy.changed_at


def _document(data: Document, changed_at: int | None) -> Document:
    return {**data, CHANGED_AT: seconds_of(changed_at)} if changed_at else data


# Built once: every list of a customer's subscriptions or payment methods runs one.
_OF_CUSTOMER = (
    select(StripeCopy.data, StripeCopy.changed_at)
    .where(
        StripeCopy.customer_id == bindparam("customer_id"),
        StripeCopy.object_type == bindparam("object_type"),
        StripeCopy.deleted.is_(False),
    )
    .order_by(StripeCopy.created.desc(), StripeCopy.first_seen.desc(), StripeCopy.id.desc())
)


def _of_customer(db: Database, object_type: str, customer_id: str) -> list[Document]:
    """Newest first, as Stripe lists them."""
    with db.columns() as connection:
        rows = connection.execute(_OF_CUSTOMER, {"customer_id": customer_id, "object_type": object_type})
        return [_document(data, changed_at) for data, changed_at in rows]


def subscriptions(db: Database, customer_id: str) -> list[Document]:
    return _of_customer(db, "subscription", customer_id)


def subscription(db: Database, subscription_id: str) -> stripe.Subscription | None:
    """As a stripe object: the services reason about one subscription's items."""
    row = _stored(db, "subscription", subscription_id)
    return None if row is None else stripe.Subscription.construct_from(_document(row.data, row.changed_at), None)


def subscription_document(db: Database, subscription_id: str) -> Document | None:
    """The stored subscription as the API shows it."""
    row = _stored(db, "subscription", subscription_id)
    return None if row is None else _document(row.data, row.changed_at)


def holds(document: Document, view: stripe.StripeObject) -> bool:
    """Whether a document the copy handed out is this view Stripe returned."""
    return {k: v for k, v in document.items() if k != CHANGED_AT} == _as_stored(view.to_dict())[0]


def subscriptions_statement(*, of_customer: bool) -> Select[dict[str, Any], dict[str, int]]:
    """The subscriptions of a workspace's accounts (or, `of_customer`, of one of
    them) whose Stripe status is one of `statuses`, each with the quantities of
    a live capacity hold on it (a row per hold). Params: workspace_id, now,
    statuses, and customer_id."""
    query = (
        select(StripeCopy.data, CapacityHold.quantities)
        .join(BillingAccountIndex, BillingAccountIndex.customer_id == StripeCopy.customer_id)
        .outerjoin(
            CapacityHold,
            (CapacityHold.subscription_id == StripeCopy.id)
            & (CapacityHold.workspace_id == bindparam("workspace_id"))
            & (CapacityHold.expires_at > bindparam("now")),
        )
        .where(
            BillingAccountIndex.workspace_id == bindparam("workspace_id"),
            BillingAccountIndex.state == "active",
            StripeCopy.object_type == "subscription",
            StripeCopy.status.in_(bindparam("statuses", expanding=True)),
            StripeCopy.deleted.is_(False),
        )
    )
    return query.where(StripeCopy.customer_id == bindparam("customer_id")) if of_customer else query


def subscriptions_params(workspace_id: str, statuses: Iterable[str], customer_id: str | None) -> dict[str, Any]:
    return {"workspace_id": workspace_id, "now": utcnow(), "statuses": list(statuses), "customer_id": customer_id}


# Built once (every capacity check runs one).
_SUBSCRIPTIONS = {of_customer: subscriptions_statement(of_customer=of_customer) for of_customer in (False, True)}


def workspace_subscriptions(
    session: Session, workspace_id: str, statuses: Iterable[str], customer_id: str | None = None
) -> list[tuple[Document, dict[str, int] | None]]:
    """`subscriptions_statement`'s rows, read in the caller's transaction."""
    rows = session.execute(
        _SUBSCRIPTIONS[customer_id is not None], subscriptions_params(workspace_id, statuses, customer_id)
    )
    return [(data, held) for data, held in rows]


def workspace_subscriptions_read(
    db: Database, connection: Connection, workspace_id: str, statuses: Iterable[str]
) -> list[tuple[Document, dict[str, int] | None]]:
    """`workspace_subscriptions` of the whole workspace, read on a connection of `db.columns()`
    (`Database.fetch_columns`: the capacity read, which every inventory service polls)."""
    rows = db.fetch_columns(connection, _SUBSCRIPTIONS[False], subscriptions_params(workspace_id, statuses, None))
    return [(data, held) for data, held in rows]


def payment_methods(db: Database, customer_id: str) -> list[Document]:
    """The customer's attached payment methods, newest first."""
    return [m for m in _of_customer(db, "payment_method", customer_id) if customer_of(m) == customer_id]


def tax_ids(db: Database, customer_id: str) -> list[Document]:
    """The customer's tax IDs, oldest first (as the account shows them)."""
    return list(reversed(_of_customer(db, "tax_id", customer_id)))


def tax_id(db: Database, tax_id_id: str) -> Document | None:
    """A tax ID, or None when it is deleted (or was never copied)."""
    row = _stored(db, "tax_id", tax_id_id)
    return None if row is None or row.deleted else row.data


def forget_tax_id(db: Database, tax_id_id: str, *, stamp: int) -> None:
    """Stripe has no such tax ID any more (deleted elsewhere): the copy keeps it flagged deleted,
    unless a view fetched after `stamp` says otherwise."""
    Keeper(db).keep_data({"id": tax_id_id, "object": "tax_id", "deleted": True}, stamp)


def former_owner(db: Database, payment_method_id: str) -> str | None:
    """The customer a payment method is, or last was, attached to (as far as the copy saw)."""
    row = _stored(db, "payment_method", payment_method_id)
    return None if row is None else row.customer_id


def payment_method(db: Database, payment_method_id: str) -> Document | None:
    row = _stored(db, "payment_method", payment_method_id)
    return None if row is None else row.data


def default_payment_method(db: Database, customer_id: str) -> str | None:
    """The customer's default payment method id, from the stored customer."""
    data = customer(db, customer_id)
    settings = (data or {}).get("invoice_settings") or {}
    return id_of(settings.get("default_payment_method"))


def customer_of(data: dict[str, Any]) -> str | None:
    """The customer id of a stored object (subscription, invoice, payment method)."""
    return id_of(data.get("customer"))


def invoice(db: Database, invoice_id: str) -> dict[str, Any] | None:
    row = _stored(db, "invoice", invoice_id)
    return None if row is None or row.deleted else row.data


def payment_intent(db: Database, payment_intent_id: str) -> dict[str, Any] | None:
    row = _stored(db, "payment_intent", payment_intent_id)
    return None if row is None else row.data


def open_invoice_paid_with(db: Database, customer_id: str, payment_intent_id: str) -> StripeCopy | None:
    """The customer's open invoice that this PaymentIntent pays. The copy relates
    them by the invoice's confirmation secret (current API versions show no
    invoice on the intent); a customer has few open invoices."""
    with db.read() as session:
        rows = session.scalars(
            select(StripeCopy).where(
                StripeCopy.customer_id == customer_id,
                StripeCopy.object_type == "invoice",
                StripeCopy.status == "open",
                StripeCopy.deleted.is_(False),
            )
        )
        for row in rows:
            secret = (row.data.get("confirmation_secret") or {}).get("client_secret") or ""
            if intent_id(secret) == payment_intent_id:
                return row
    return None


class _ProductNames(FunctionElement[Any]):
    """An invoice's products, by id, with their names (`None` for a product the copy holds
    without one; a product it doesn't hold is left out): the copy's products that the
    invoice's lines name, unnested from its document in the invoices' own statement."""

    type = JSON()
    name = "product_names"
    inherit_cache = True


# The statement is one; what differs is each dialect's JSON functions: the aggregate of id -> name,
# a product's name, a line's product, and the lines of the invoice's document (`{data}`).
_PRODUCT_NAMES_SQL = (
    "(SELECT {aggregate}(product.id, {name}) FROM stripe_copies AS product"
    " WHERE product.object_type = 'product' AND product.id IN (SELECT {product} FROM {lines} AS line))"
)
_PRODUCT_NAMES_JSON = {
    "postgresql": {
        "aggregate": "jsonb_object_agg",
        "name": "product.data ->> 'name'",
        "product": "line -> 'pricing' -> 'price_details' ->> 'product'",
        "lines": "jsonb_array_elements({data} -> 'lines' -> 'data')",
    },
    "sqlite": {
        "aggregate": "json_group_object",
        "name": "json_extract(product.data, '$.name')",
        "product": "json_extract(line.value, '$.pricing.price_details.product')",
        "lines": "json_each({data}, '$.lines.data')",
    },
}


@compiles(_ProductNames)
def _product_names(element: _ProductNames, compiler: Any, **kw: Any) -> str:
    parts = dict(_PRODUCT_NAMES_JSON[compiler.dialect.name])
    parts["lines"] = parts["lines"].format(data=compiler.process(element.clauses, **kw))
    return _PRODUCT_NAMES_SQL.format(**parts)


def _invoices_statement(cursor: str | None, *, named: bool = False) -> Select[Any]:
    """A page of a customer's invoices (params: customer_id, limit, and for a cursor its
    created, first_seen and id), newest first unless `before`; keyset on (created, first_seen, id).
    `named`: each as its id, its document's JSON text and its products' names (`_ProductNames`)."""
    c = StripeCopy
    key = (c.created, c.first_seen, c.id)
    columns = [c.id, cast(c.data, Text), _ProductNames(c.data)] if named else [c.data]
    query = select(*columns).where(
        c.customer_id == bindparam("customer_id"), c.object_type == "invoice", c.deleted.is_(False)
    )
    at = tuple_(bindparam("created"), bindparam("first_seen"), bindparam("id"))
    if cursor == "after":
        query = query.where(tuple_(*key) < at)
    elif cursor == "before":
        query = query.where(tuple_(*key) > at)
    order = [k.asc() for k in key] if cursor == "before" else [k.desc() for k in key]
    return query.order_by(*order).limit(bindparam("limit"))


# Built once: every invoices list runs one (only the documents travel, not whole rows).
_INVOICES = {
    (cursor, named): _invoices_statement(cursor, named=named)
    for cursor in (None, "after", "before")
    for named in (False, True)
}


def _invoice_rows(
    db: Database, customer_id: str, limit: int, after: str | None, before: str | None, *, named: bool
) -> tuple[list[Any], bool]:
    params: dict[str, Any] = {"customer_id": customer_id, "limit": limit + 1}
    which = "after" if after else "before" if before else None
    if which is not None:
        cursor = _stored(db, "invoice", after or before or "")
        if cursor is None:
            which = None  # as before: an unknown cursor pages from the start (the service refuses it first)
        else:
            params.update(created=cursor.created, first_seen=cursor.first_seen, id=cursor.id)
    with db.columns() as connection:
        rows = list(db.fetch_columns(connection, _INVOICES[which, named], params))
    more = len(rows) > limit
    rows = rows[:limit]
    if which == "before":
        rows.reverse()
    return rows, more


def invoices_page(
    db: Database, customer_id: str, limit: int, *, after: str | None = None, before: str | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """One page of a customer's invoices, newest first, after or before a
    cursor invoice (keyset on created, id); and whether more lie beyond it."""
    rows, more = _invoice_rows(db, customer_id, limit, after, before, named=False)
    return [row[0] for row in rows], more


def named_invoices_page(
    db: Database, customer_id: str, limit: int, *, after: str | None = None, before: str | None = None
) -> tuple[list[tuple[str, str, dict[str, str]]], bool]:
    """`invoices_page`, each invoice as its id and its stored document's JSON text (unparsed: its
    reader may have parsed the same text before), with the names of its lines' products (as
    `product_names` answers them), read in the same statement."""
    rows, more = _invoice_rows(db, customer_id, limit, after, before, named=True)
    return [
        (id_, text, {product: str(name) for product, name in (names or {}).items()}) for id_, text, names in rows
    ], more


def invoices_since(db: Database, customer_id: str, since: int) -> list[dict[str, Any]]:
    """A customer's invoices created at `since` (Stripe's unix seconds) or later."""
    c = StripeCopy
    query = select(c.data).where(
        c.customer_id == customer_id, c.object_type == "invoice", c.deleted.is_(False), c.created >= since
    )
    with db.read() as session:
        return list(session.scalars(query))


# Built once: every invoices list runs one (the names only, not the products' documents).
_PRODUCT_NAMES = select(StripeCopy.id, StripeCopy.data["name"].as_string()).where(
    StripeCopy.id.in_(bindparam("ids", expanding=True)), StripeCopy.object_type == "product"
)


def product_names(db: Database, product_ids: set[str]) -> dict[str, str]:
    if not product_ids:
        return {}
    with db.columns() as connection:
        return {id_: str(name) for id_, name in connection.execute(_PRODUCT_NAMES, {"ids": list(product_ids)})}


# -- copying ---------------------------------------------------------------------


def copy_customer(state: BillingState, customer_id: str, *, with_customer: bool = True) -> None:
    """Copy a customer and everything of it the API shows (the gateway keeps
    what it fetches); mark its account copied. For an account older than the
    copy, on its first read, and for `reconcile --full`."""
    gateway, db = state.gateway, state.db
    if with_customer and gateway.retrieve_customer(customer_id) is None:
        return  # gone from Stripe (the copy says so): nothing more to copy
    gateway.list_subscriptions(customer_id)
    listed = {method.id for method in gateway.list_payment_methods(customer_id)}
    for stale in payment_methods(db, customer_id):  # detached while we weren't told
        if stale["id"] not in listed:
            gateway.retrieve_payment_method(stale["id"])
    held = {found.id for found in gateway.list_tax_ids(customer_id)}
    for gone in tax_ids(db, customer_id):  # deleted while we weren't told
        if gone["id"] not in held and gateway.retrieve_tax_id(gone["id"]) is None:
            forget_tax_id(db, gone["id"], stamp=now_stamp())
    for invoice in gateway.iter_invoices(customer_id):
        confirmation = getattr(invoice, "confirmation_secret", None)
        secret = confirmation.client_secret if confirmation else None
        if invoice.status == "open" and secret:  # what an open invoice waits for (pending_payment's reason)
            gateway.retrieve_payment_intent(intent_id(str(secret)))
    mark_copied(db, [customer_id])


def mark_copied(db: Database, customer_ids: Iterable[str]) -> None:
    ids = list(customer_ids)
    if not ids:
        return
    with db.write() as session:
        session.execute(
            update(BillingAccountIndex).where(BillingAccountIndex.customer_id.in_(ids)).values(copied_at=utcnow())
        )


def ensure_copied(state: BillingState, accounts: Iterable[BillingAccountIndex]) -> None:
    """Copy the accounts that are older than the copy (once per account, ever)."""
    for account in accounts:
        if account.copied_at is None and account.customer_id:
            copy_customer(state, account.customer_id)
