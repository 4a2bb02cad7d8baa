"""Capacity: what subscriptions provide, what organizations use, and the one
place that decides whether more may be used.

A pool is what a set of organizations draws on (API.md, Pools): `single` and
`pooled` workspaces have one (every account's subscriptions feed it), an
`assigned` workspace has one per billing account (a root and its subtree draw
on the root's account). Capacity is read from the service's copy of Stripe,
never from Stripe.

Every change that can take capacity (a usage report, a root reassigned) or
give it back below usage (a subscription decreased, paused or cancelled)
first locks the workspace row, then reads what it checks, so the check and
the change are one step however many requests run at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    FunctionElement,
    Integer,
    Select,
    String,
    Subquery,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, aliased

from billing import replica
from billing.access import Access, organization_access, workspace_archived
from billing.audit import trail
from billing.catalog import PRODUCTS, CatalogProducts
from billing.db import Database
from billing.errors import ApiError, not_found
from billing.memo import Memo
from billing.models import BillingAccountIndex, CapacityHold, Organization, StripeCopy, Workspace, utcnow
from billing.state import BillingState
from billing.subscriptions.active import PROVIDING, provides_capacity
from billing.tokens import USAGE_SCOPE, has_scope

Quantities = dict[str, int]
HOLD_SECONDS = 120  # longer than any Stripe call a hold covers (it is removed when the call ends)


def zero() -> Quantities:
    return dict.fromkeys(PRODUCTS, 0)


@dataclass(frozen=True)
class Pool:
    """`account_id` None: the workspace's one pool (`single`, `pooled`)."""

    account_id: str | None


def pool_of(workspace: Workspace, account_id: str | None) -> Pool:
    """The pool an organization assigned to `account_id` (its root's) draws on,
    or the one a subscription of that account feeds."""
    return Pool(account_id if workspace.billing_mode == "assigned" else None)


_LOCK = select(Workspace).where(Workspace.id == bindparam("workspace_id")).with_for_update(of=Workspace)


def _locked(session: Session, statement: Select[Any], params: dict[str, str], writable: bool) -> Sequence[Any]:
    # The workspace's row itself is the locked row's latest version (PostgreSQL
    # re-reads a row it waited to lock).
    row = session.execute(statement.execution_options(populate_existing=True), params).first()
    if row is None:
        raise not_found("workspace")
    if writable and row[0].archived_at is not None:
        raise workspace_archived()
    return row


def lock_workspace(session: Session, workspace_id: str, *, writable: bool = True) -> Workspace:
    """Lock the workspace row for the rest of the transaction (every capacity
    change of the workspace waits here); 409 when archived and `writable`.
    Read what the change depends on after this, in statements of its own."""
    workspace: Workspace = _locked(session, _LOCK, {"workspace_id": workspace_id}, writable)[0]
    return workspace


def lock_organization(session: Session, workspace_id: str, org_id: str) -> tuple[Workspace, Organization]:
    """`lock_workspace` (writable), then the organization as the previous
    holder of the lock left it."""
    workspace = lock_workspace(session, workspace_id)
    return workspace, organization_in(session, workspace_id, org_id, fresh=True)


def subscription_quantities(products: CatalogProducts, data: dict[str, Any]) -> Quantities:
    """A subscription document's quantities by product."""
    found = zero()
    for item in (data.get("items") or {}).get("data") or []:
        product = products.of_price(item.get("price") or {})
        if product is not None:
            found[product] += int(item.get("quantity") or 0)
    return found


Held = tuple[dict[str, Any], dict[str, int] | None]  # a subscription and a live hold on it (if any)


def provided_by_account(
    products: CatalogProducts, session: Session, workspace_id: str, account_id: str | None = None
) -> dict[str, Quantities]:
    """What the providing subscriptions of each account (or of one) give."""
    return _provided(products, replica.workspace_subscriptions(session, workspace_id, PROVIDING, account_id))


def _provided(products: CatalogProducts, subscriptions: Iterable[Held]) -> dict[str, Quantities]:
    """By account: each providing subscription counted at the lower of its
    quantities and any live hold on it."""
    counted: dict[str, tuple[str, Quantities]] = {}
    for data, held in subscriptions:
        if not provides_capacity(data):
            continue
        account, quantities = counted.setdefault(
            str(data["id"]), (str(replica.customer_of(data)), subscription_quantities(products, data))
        )
        if held is not None:  # two holds on one subscription: the lower of each
            for product in PRODUCTS:
                quantities[product] = min(quantities[product], held.get(product, 0))
    totals: dict[str, Quantities] = {}
    for account, quantities in counted.values():
        totals[account] = _sum([totals.get(account, zero()), quantities])
    return totals


def provided(products: CatalogProducts, session: Session, workspace_id: str, pool: Pool) -> Quantities:
    return _sum(provided_by_account(products, session, workspace_id, pool.account_id).values())


def pooled_seat_limits(products: CatalogProducts, session: Session, workspaces: Iterable[Workspace]) -> dict[str, int]:
    """The `pooled_seat_limit` of each pooled workspace: its one pool's `users` capacity."""
    return {
        workspace.id: provided(products, session, workspace.id, Pool(None))["users"]
        for workspace in workspaces
        if workspace.billing_mode == "pooled"
    }


def _sum(parts: Iterable[Quantities]) -> Quantities:
    total = zero()
    for part in parts:
        for product in PRODUCTS:
            total[product] += part.get(product, 0)
    return total


# The usage of every root's subtree, by the root's billing account: the one
# statement a pool's usage is summed from (params: workspace_id).
_USED_BY_ACCOUNT = (
    select(
        Organization.billing_account_id.label("account_id"),
        *(func.sum(getattr(Organization, f"subtree_{p}")).label(p) for p in PRODUCTS),
    )
    .where(Organization.workspace_id == bindparam("workspace_id"), Organization.parent_id.is_(None))
    .group_by(Organization.billing_account_id)
)


def _pool_usage(of_account: bool) -> Subquery:
    """One row: a pool's usage per product (params: workspace_id, and account_id
    for an `assigned` workspace's pool)."""
    sums = _USED_BY_ACCOUNT.subquery("by_account")
    query = select(*(func.coalesce(func.sum(sums.c[p]), 0).label(f"pool_{p}") for p in PRODUCTS))
    return (query.where(sums.c.account_id == bindparam("account_id")) if of_account else query).subquery("pool")


_POOL_USAGE = {of_account: _pool_usage(of_account) for of_account in (False, True)}
_POOL_USED = {of_account: select(*usage.c) for of_account, usage in _POOL_USAGE.items()}


def _pool_params(workspace_id: str, pool: Pool) -> dict[str, Any]:
    return {"workspace_id": workspace_id, "account_id": pool.account_id}


def used_by_account(session: Session, workspace_id: str) -> dict[str | None, Quantities]:
    """The usage of every root's subtree, by the root's billing account."""
    return _by_account(session.execute(_USED_BY_ACCOUNT, {"workspace_id": workspace_id}))


def _by_account(rows: Iterable[Sequence[Any]]) -> dict[str | None, Quantities]:
    """`_USED_BY_ACCOUNT`'s rows, by account."""
    return {row[0]: dict(zip(PRODUCTS, (int(v or 0) for v in row[1:]), strict=True)) for row in rows}


def used(session: Session, workspace_id: str, pool: Pool) -> Quantities:
    row = session.execute(_POOL_USED[pool.account_id is not None], _pool_params(workspace_id, pool)).one()
    return dict(zip(PRODUCTS, (int(v) for v in row), strict=True))


# -- the entitlement read ---------------------------------------------------------


@dataclass(frozen=True)
class Headroom:
    """How much more one constraint lets the organization take of a product:
    a limit on `node` (the organization or an ancestor), or the pool (None)."""

    free: int
    node: Organization | None


class _PairsAgg(FunctionElement[Any]):
    """An aggregate: the JSON array of [a, b] for every row (null over none)."""

    type = JSON()
    name = "pairs_agg"
    inherit_cache = True


@compiles(_PairsAgg, "postgresql")
def _pairs_agg_postgresql(element: _PairsAgg, compiler: Any, **kw: Any) -> str:
    return f"json_agg(json_build_array({compiler.process(element.clauses, **kw)}))"


@compiles(_PairsAgg, "sqlite")
def _pairs_agg_sqlite(element: _PairsAgg, compiler: Any, **kw: Any) -> str:
    a, b = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"json_group_array(json_array(json({a}), json({b})))"


def _pool_subscriptions(of_account: bool) -> Subquery:
    """One row: the pool's providing subscriptions, each with any live hold,
    as [document, hold] pairs (params as `replica.subscriptions_statement`)."""
    rows = replica.subscriptions_statement(of_customer=of_account).subquery("held")
    return select(_PairsAgg(rows.c.data, rows.c.quantities).label("subscriptions")).subquery("pool_subscriptions")


def _path_and_pool(of_account: bool) -> Select[Any]:
    """A limits read after the access check is this one statement: the
    organization and its ancestors, the pool's usage on each row, and on the
    organization's own row the pool's subscriptions (params: ids,
    organization_id, and the pool's)."""
    usage, subscriptions = _POOL_USAGE[of_account], _pool_subscriptions(of_account)
    return (
        select(Organization, *usage.c, subscriptions.c.subscriptions)
        .join_from(Organization, usage, true())
        .outerjoin_from(Organization, subscriptions, Organization.id == bindparam("organization_id"))
        .where(Organization.id.in_(bindparam("ids", expanding=True)))
    )


_PATH_AND_POOL = {of_account: _path_and_pool(of_account) for of_account in (False, True)}


class Limits:
    """The limits read of one organization: computed once, in one transaction."""

    def __init__(self, state: BillingState, session: Session, workspace: Workspace, org: Organization) -> None:
        """`org` names the organization and its path (which never change);
        its rows, the organization's own included, are read again here (over
        what the session holds), with the pool's usage and subscriptions."""
        self.state, self.workspace = state, workspace
        account_id = org.billing_account_id
        while True:
            pool = pool_of(workspace, account_id)
            rows = session.execute(
                _PATH_AND_POOL[pool.account_id is not None].execution_options(populate_existing=True),
                {
                    "ids": [org.id, *org.ancestor_ids],
                    "organization_id": org.id,
                    **_pool_params(workspace.id, pool),
                    **replica.subscriptions_params(workspace.id, PROVIDING, pool.account_id),
                },
            ).all()
            nodes = {row[0].id: row for row in rows}
            if org.id not in nodes:  # deleted since `org` was read (its subtree goes with it)
                raise not_found("organization")
            if pool == pool_of(workspace, nodes[org.id][0].billing_account_id):
                break
            account_id = nodes[org.id][0].billing_account_id  # its root was reassigned since: that pool
        *usage, subscriptions = nodes[org.id][1:]
        self._set(
            [nodes[i][0] for i in (org.id, *reversed(org.ancestor_ids))],
            dict(zip(PRODUCTS, (int(v) for v in usage), strict=True)),
            _sum(_provided(state.products, subscriptions or []).values()),
        )

    def _set(self, path: list[Organization], pool_used: Quantities, capacity: Quantities) -> None:
        self.path: list[Organization] = path  # the organization, then its ancestors, nearest first
        self.org: Organization = path[0]
        self.pool_used, self.capacity = pool_used, capacity

    @classmethod
    def of(
        cls,
        state: BillingState,
        workspace: Workspace,
        path: list[Organization],
        pool_used: Quantities,
        capacity: Quantities,
    ) -> Limits:
        """The limits of rows already read (a usage report's, under the lock)."""
        read = cls.__new__(cls)
        read.state, read.workspace = state, workspace
        read._set(path, pool_used, capacity)
        return read

    def binding(self, product: str) -> Headroom:
        """The constraint with the least headroom: limits on the path, nearest
        first, then the pool (the first of equals binds)."""
        found = [
            Headroom(limit - node.subtree_usage(product), node)
            for node in self.path
            if (limit := node.limit(product)) is not None
        ]
        found.append(Headroom(self.capacity[product] - self.pool_used[product], None))
        return min(found, key=lambda h: h.free)

    def free(self, product: str) -> int:
        return max(0, self.binding(product).free)

    def entry(self, product: str) -> dict[str, Any]:
        limits = [limit for n in self.path if (limit := n.limit(product)) is not None]
        used_here, free = self.org.subtree_usage(product), self.free(product)
        return {
            "type": product,
            "used": used_here,
            "direct": self.org.usage(product),
            "free": free,
            "org_limit": min(limits) if limits else None,
            "total": used_here + free,
        }

    def context(self, headroom: Headroom) -> dict[str, str]:
        if headroom.node is self.org:
            return {"type": "organization", "name": self.org.name}
        if headroom.node is not None:
            return {"type": "parent", "name": headroom.node.name}
        if self.workspace.billing_mode == "pooled":
            return {"type": "workspace", "name": self.workspace.name}
        customer = replica.customer(self.state.db, self.org.billing_account_id or "") or {}
        return {"type": "billing_account", "name": str(customer.get("name") or self.org.billing_account_id)}

    def document(self) -> dict[str, Any]:
        tightest = min((self.binding(product) for product in PRODUCTS), key=lambda h: h.free)
        return {
            "organization_id": self.org.id,
            "organization_name": self.org.name,
            "limits": [self.entry(product) for product in PRODUCTS],
            "context": self.context(tightest),
        }


def organization_in(session: Session, workspace_id: str, org_id: str, *, fresh: bool = False) -> Organization:
    """`fresh`: read the row again even if the session holds it."""
    org = session.get(Organization, org_id, populate_existing=fresh)
    if org is None or org.workspace_id != workspace_id:
        raise not_found("organization")
    return org


def limits(state: BillingState, access: Access, org: Organization) -> dict[str, Any]:
    """The limits read (`access` and `org` from `organization_access`)."""
    with state.db.read() as session:
        return Limits(state, session, access.workspace, org).document()


def capacity(state: BillingState, workspace: Workspace) -> dict[str, Any]:
    """Every pool of the workspace: capacity, use and what is free, per product."""
    db = state.db
    # Columns on a connection, no ORM Session (on SQLite, its reads share one transaction).
    with db.columns() as connection:
        by_account = _provided(
            state.products, replica.workspace_subscriptions_read(db, connection, workspace.id, PROVIDING)
        )
        use = _by_account(db.fetch_columns(connection, _USED_BY_ACCOUNT, {"workspace_id": workspace.id}))
        if workspace.billing_mode == "assigned":
            accounts = list(
                connection.scalars(
                    select(BillingAccountIndex.customer_id)
                    .where(
                        BillingAccountIndex.workspace_id == workspace.id,
                        BillingAccountIndex.state == "active",
                        BillingAccountIndex.customer_id.is_not(None),
                    )
                    .order_by(BillingAccountIndex.created_at, BillingAccountIndex.id)
                )
            )
            # An account gone outside our API (its customer deleted in the Dashboard)
            # still has roots drawing on it: its pool shows, with nothing provided.
            accounts += sorted(account for account in use if account is not None and account not in accounts)
            pools = [(account, by_account.get(str(account), zero()), use.get(account, zero())) for account in accounts]
        else:
            pools = [(None, _sum(by_account.values()), _sum(use.values()))]
    return {
        "pools": [
            {
                "billing_account_id": account,
                "products": {p: {"capacity": cap[p], "used": u[p], "free": max(0, cap[p] - u[p])} for p in PRODUCTS},
            }
            for account, cap, u in pools
        ]
    }


# -- taking and giving back ----------------------------------------------------------


def _fingerprint(rows: Subquery) -> Any:
    """PostgreSQL: what a pool's capacity is computed from, as one string: each providing
    subscription's copy with its stamp (a new view of it has a later one) and each live hold
    on it (a hold is never changed, only added or removed). Equal strings, equal capacity."""
    entry = (
        rows.c.copy_id + ":" + cast(rows.c.fetched_at, String) + ":" + cast(func.coalesce(rows.c.hold_id, 0), String)
    )
    return func.coalesce(func.string_agg(entry, aggregate_order_by(literal(","), rows.c.copy_id, rows.c.hold_id)), "")


def _fingerprinted_rows(of_account: bool) -> Subquery:
    statement = replica.subscriptions_statement(of_customer=of_account).add_columns(
        StripeCopy.id.label("copy_id"), StripeCopy.fetched_at, CapacityHold.id.label("hold_id")
    )
    return statement.subquery("held")


def _pool_inputs_statement(of_account: bool) -> Select[Any]:
    """One row: the pool's providing subscriptions as [document, hold] pairs, and their
    fingerprint (params as `replica.subscriptions_statement`)."""
    rows = _fingerprinted_rows(of_account)
    return select(_PairsAgg(rows.c.data, rows.c.quantities), _fingerprint(rows))


_POOL_INPUTS = {of_account: _pool_inputs_statement(of_account) for of_account in (False, True)}


@dataclass(frozen=True)
class _Report:
    """A usage report, as the statements that check and move it take it."""

    workspace_id: str
    org_id: str
    path_ids: list[str]  # the organization, then its ancestors nearest first (they never change)
    pool: Pool
    product: str
    delta: int

    def params(self, capacity: Quantities, fingerprint: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {
            "in_workspace": self.workspace_id,  # (a column's name can't be an UPDATE's parameter)
            "organization_id": self.org_id,
            "ids": self.path_ids,
            "account_id": self.pool.account_id,
            "delta": self.delta,
            "capacity": capacity[self.product],
        }
        if fingerprint is not None:
            params.update(replica.subscriptions_params(self.workspace_id, PROVIDING, self.pool.account_id))
            params["fingerprint"] = fingerprint
        return params


def _in_pool(of_account: bool) -> Any:
    """The organization (fresh: read after the lock) still draws on the pool the report
    was checked against (params: in_workspace, organization_id, account_id)."""
    reported = aliased(Organization, name="reported")
    where = [
        Workspace.id == bindparam("in_workspace"),
        reported.id == bindparam("organization_id"),
        reported.workspace_id == Workspace.id,
    ]
    if of_account:
        where += [Workspace.billing_mode == "assigned", reported.billing_account_id == bindparam("account_id")]
    else:
        where.append(or_(Workspace.billing_mode != "assigned", reported.billing_account_id.is_(None)))
    return exists().where(*where)


def _pool_used(product: str, of_account: bool) -> Any:
    """The pool's usage of `product`: its roots' subtrees (params: in_workspace, account_id)."""
    root = aliased(Organization, name="pool_root")
    where = [root.workspace_id == bindparam("in_workspace"), root.parent_id.is_(None)]
    if of_account:
        where.append(root.billing_account_id == bindparam("account_id"))
    return select(func.coalesce(func.sum(getattr(root, f"subtree_{product}")), 0)).where(*where).scalar_subquery()


def _fingerprint_holds(of_account: bool) -> Any:
    """The pool's capacity is still what the report was checked against (params: `fingerprint`
    and those of `replica.subscriptions_statement`)."""
    return select(_fingerprint(_fingerprinted_rows(of_account))).scalar_subquery() == bindparam("fingerprint")


def _report_statement(product: str, of_account: bool, fingerprinted: bool, taking: bool) -> Any:
    """The check and the move of a usage report, one statement: run under the workspace's
    lock, in a snapshot taken after it, it reads the rows it checks as the lock's previous
    holder left them. `taking` (a positive delta) moves only if the organization still draws
    on the pool checked, and the delta fits its capacity (the `capacity` param, from the pool's
    subscriptions: with `fingerprinted`, read before the lock and still the same, else read
    under it) and every limit on the path; a release never takes the organization's usage
    below 0. Params: `_Report.params`."""
    usage, subtree = getattr(Organization, f"usage_{product}"), getattr(Organization, f"subtree_{product}")
    reported, on_path = aliased(Organization, name="reported"), aliased(Organization, name="on_path")
    delta = bindparam("delta", type_=Integer)
    used_here = (
        select(getattr(reported, f"usage_{product}"))
        .where(reported.id == bindparam("organization_id"), reported.workspace_id == bindparam("in_workspace"))
        .scalar_subquery()
    )
    limit_on_path, subtree_on_path = getattr(on_path, f"limit_{product}"), getattr(on_path, f"subtree_{product}")
    if taking:
        change: Any = delta
        checks = [
            _in_pool(of_account),
            ~exists().where(
                on_path.id.in_(bindparam("ids", expanding=True)),
                limit_on_path.is_not(None),
                subtree_on_path + delta > limit_on_path,
            ),
            _pool_used(product, of_account) + delta <= bindparam("capacity", type_=Integer),
            *([_fingerprint_holds(of_account)] if fingerprinted else []),
        ]
    else:
        change = case((used_here + delta < 0, -used_here), else_=delta)  # a release stops at 0
        checks = [change != 0]
    writable = exists().where(Workspace.id == bindparam("in_workspace"), Workspace.archived_at.is_(None))
    statement = (
        update(Organization)
        .where(
            Organization.id.in_(bindparam("ids", expanding=True)),
            Organization.workspace_id == bindparam("in_workspace"),
            writable,
            used_here.is_not(None),
            *checks,
        )
        .values(
            {
                usage: usage + case((Organization.id == bindparam("organization_id"), change), else_=0),
                subtree: subtree + change,
            }
        )
    )
    if not fingerprinted:
        return statement
    # PostgreSQL, read back in the same statement: the path's rows as moved, the change, the
    # pool's usage before it (the statement's snapshot), and for a release (which checked
    # nothing) whether the answer's capacity and pool are still the organization's.
    stale = literal(False) if taking else or_(~_in_pool(of_account), ~_fingerprint_holds(of_account))
    return statement.returning(
        *_PATH_COLUMNS, change.label("change"), _pool_used(product, of_account).label("pool_used"), stale
    )


_PATH_COLUMNS = (
    Organization.id,
    Organization.name,
    Organization.path,
    Organization.billing_account_id,
    *(getattr(Organization, f"{kind}_{p}") for kind in ("limit", "usage", "subtree") for p in PRODUCTS),
)
_PATH_KEYS = [column.key for column in _PATH_COLUMNS]


def _state_statement(of_account: bool) -> Select[Any]:
    """After the move, in the same transaction: the path's rows and the pool's usage
    (params: `_Report.params`)."""
    return select(*_PATH_COLUMNS, *(_pool_used(p, of_account).label(f"pool_{p}") for p in PRODUCTS)).where(
        Organization.id.in_(bindparam("ids", expanding=True)), Organization.workspace_id == bindparam("in_workspace")
    )


_KINDS = [(p, a, f, t) for p in PRODUCTS for a in (False, True) for f in (False, True) for t in (False, True)]
_REPORT = {kind: _report_statement(*kind) for kind in _KINDS}
_STATE = {of_account: _state_statement(of_account) for of_account in (False, True)}
_LOCK_ROW = select(Workspace.archived_at).where(Workspace.id == bindparam("in_workspace")).with_for_update()


# What each pool's capacity was when this process last read it, with the fingerprint of what it
# was computed from, by (workspace, account): a report checks that fingerprint under the lock, so
# a capacity that has changed since is never used (the report is checked again, and the entry
# dropped). Saves a report the read of the subscriptions' documents.
_KNOWN_CAPACITY: Memo[tuple[str, str | None], tuple[Quantities, str]] = Memo(4096)


def _read_capacity(state: BillingState, report: _Report) -> tuple[Quantities, str]:
    """The pool's capacity and its fingerprint, read now (and kept in `_KNOWN_CAPACITY`)."""
    with state.db.columns() as connection:
        pairs, fingerprint = connection.execute(
            _POOL_INPUTS[report.pool.account_id is not None],
            replica.subscriptions_params(report.workspace_id, PROVIDING, report.pool.account_id),
        ).one()
    capacity = _sum(_provided(state.products, pairs or []).values())
    return _KNOWN_CAPACITY.keep((report.workspace_id, report.pool.account_id), (capacity, fingerprint))


def report_usage(state: BillingState, workspace_id: str, org_id: str, product: str, delta: int) -> dict[str, Any]:
    """Take (`delta` > 0) or release capacity for an organization, as the request's caller may
    (`organization_access(write=True)`); answers its limits entry for the product. 409
    capacity_exceeded past the pool or any limit on the path; a release never takes usage
    below 0.

    Reports of one workspace queue on its lock, so each holds it for as little as it can. On
    PostgreSQL the pool's capacity (computed here from the subscriptions' documents) is read
    first, with a fingerprint of what it came from (or known from an earlier report of this
    process, `_KNOWN_CAPACITY`); then one transaction, sent as one round trip, takes the lock
    and checks, moves and reads back in one statement (a positive delta only if the
    fingerprint still holds); its commit doesn't wait for the disk (README: a usage report's
    200). A service token's report of a target this process knows (`_KNOWN_TARGETS`) is that
    round trip alone. A report that moved nothing (refused, or something changed meanwhile) is
    checked again the slow way, after the access check, with the capacity read under the lock,
    as on SQLite (whose writes queue on its lock)."""
    service = has_scope(USAGE_SCOPE)
    round_trip = state.db.has_round_trip_transactions
    known = _KNOWN_TARGETS.get((workspace_id, org_id)) if service and round_trip else None
    if known is not None:

        def checked() -> tuple[Workspace, Organization]:
            access, org = organization_access(workspace_id, org_id, write=True)
            return access.workspace, org

        answer = _report_in_one_round_trip(state, *known, product, delta, checked)
        if answer is not None:
            return answer
    access, org = organization_access(workspace_id, org_id, write=True)
    if service:
        _KNOWN_TARGETS.keep((access.workspace.id, org.id), (access.workspace, org))
    if round_trip and known is None:
        answer = _report_in_one_round_trip(
            state, access.workspace, org, product, delta, lambda: (access.workspace, org)
        )
        if answer is not None:
            return answer
    return _report_in_transaction(state, _report_of(access.workspace, org, product, delta))


# A service token may report in any workspace (`usage_access`): what its report must check is that
# the workspace is there and writable and the organization in it, which the report's statement
# checks under the lock. So a process keeps the targets of its service tokens' reports, by
# (workspace, organization), as the access check read them: a report of a known target skips that
# check. An organization's path never changes; a pool that did (its root reassigned) fails the
# statement's check, and the report is checked again the slow way.
_KNOWN_TARGETS: Memo[tuple[str, str], tuple[Workspace, Organization]] = Memo(4096)


def _report_of(workspace: Workspace, org: Organization, product: str, delta: int) -> _Report:
    path_ids = [org.id, *reversed(org.ancestor_ids)]
    return _Report(workspace.id, org.id, path_ids, pool_of(workspace, org.billing_account_id), product, delta)


def _report_in_one_round_trip(
    state: BillingState,
    workspace: Workspace,
    org: Organization,
    product: str,
    delta: int,
    checked: Callable[[], tuple[Workspace, Organization]],
) -> dict[str, Any] | None:
    """PostgreSQL: the report in one round trip; None if it moved nothing. `checked`: the
    workspace and organization, access-checked (a release's answer read again needs them)."""
    report = _report_of(workspace, org, product, delta)
    of_account = report.pool.account_id is not None
    known = (report.workspace_id, report.pool.account_id)
    capacity, fingerprint = _KNOWN_CAPACITY.get(known) or _read_capacity(state, report)
    params = report.params(capacity, fingerprint)
    _, (rows, _) = state.db.in_one_round_trip(
        [(_LOCK_ROW, params), (_REPORT[report.product, of_account, True, report.delta > 0], params)],
        wait_for_disk=False,
    )
    nodes = {row[0]: row for row in rows}
    if report.org_id not in nodes:  # refused, stale, gone, archived, or nothing to release
        _KNOWN_CAPACITY.pop(known, None)
        return None
    *_, change, pool_before, stale = nodes[report.org_id]
    if stale:  # a release moved (it needs no capacity), but the answer's capacity or pool is not current
        _KNOWN_CAPACITY.pop(known, None)
        workspace, org = checked()
        with state.db.read() as session:
            return Limits(state, session, workspace, org).entry(report.product)
    path = [_node(nodes[i]) for i in report.path_ids]
    return Limits.of(state, workspace, path, {report.product: int(pool_before) + int(change)}, capacity).entry(
        report.product
    )


def _report_in_transaction(state: BillingState, report: _Report) -> dict[str, Any]:
    """A usage report in a transaction that reads the capacity under the lock."""
    with state.db.write(wait_for_disk=False) as session:
        workspace = lock_workspace(session, report.workspace_id)
        org = organization_in(session, report.workspace_id, report.org_id, fresh=True)
        report = replace(report, pool=pool_of(workspace, org.billing_account_id))
        capacity = provided(state.products, session, report.workspace_id, report.pool)
        params = report.params(capacity, None)
        of_account, taking = report.pool.account_id is not None, report.delta > 0
        connection = session.connection()  # Core statements: the ORM's bulk-update machinery costs
        moved = connection.execute(_REPORT[report.product, of_account, False, taking], params).rowcount
        nodes = {row[0]: row for row in connection.execute(_STATE[of_account], params)}
        pool_used = dict(zip(PRODUCTS, (int(v) for v in nodes[org.id][len(_PATH_COLUMNS) :]), strict=True))
        read = Limits.of(state, workspace, [_node(nodes[i]) for i in report.path_ids], pool_used, capacity)
        # A refusal's entry commits with this transaction, which changes nothing else.
        refused = _refused(session, report, read) if taking and not moved else None
    if refused is not None:
        raise refused
    return read.entry(report.product)


def _refused(session: Session, report: _Report, read: Limits) -> ApiError:
    """A refused report is on the audit trail (an accepted one is in the usage totals):
    record it; the 409 capacity_exceeded to answer."""
    product, used = report.product, read.org.usage(report.product)
    trail.record(
        session,
        report.workspace_id,
        "usage.refused",
        ("organization", report.org_id),
        {f"usage.{product}": trail.change(used, used + report.delta)},
    )
    free = read.free(product)
    return ApiError(409, "capacity_exceeded", f"Not enough {product} capacity: requested {report.delta}, free {free}.")


def _node(row: Sequence[Any]) -> Organization:
    return Organization.loaded(zip(_PATH_KEYS, row, strict=False))


def check_room_for_subtree(
    products: CatalogProducts, session: Session, workspace: Workspace, root: Organization, account_id: str
) -> None:
    """Reassigning a root: the new account's pool must hold the subtree's usage
    on top of what it already carries."""
    pool = pool_of(workspace, account_id)
    if pool.account_id is None or root.billing_account_id == account_id:
        return  # the same pool
    cap, use = provided(products, session, workspace.id, pool), used(session, workspace.id, pool)
    for product in PRODUCTS:
        needed = root.subtree_usage(product)
        if needed and use[product] + needed > cap[product]:
            raise ApiError(
                409,
                "capacity_exceeded",
                f"The billing account's pool has {max(0, cap[product] - use[product])} {product} free; "
                f"this organization's subtree uses {needed}.",
            )


@contextmanager
def holding(
    state: BillingState,
    workspace_id: str,
    account_id: str,
    subscription_id: str,
    after: Quantities,
    *,
    cancelling: bool,
) -> Iterator[None]:
    """Hold a subscription at its quantities-to-be while the change that lowers
    it is sent to Stripe; 409 first if that would leave its pool below usage
    (a product already below usage is refused only if the change lowers it)."""
    with state.db.write() as session:
        workspace = lock_workspace(session, workspace_id, writable=False)
        pool = pool_of(workspace, account_id)
        before = provided(state.products, session, workspace_id, pool)
        hold = CapacityHold(
            workspace_id=workspace_id,
            subscription_id=subscription_id,
            quantities={p: after.get(p, 0) for p in PRODUCTS},
            expires_at=utcnow() + timedelta(seconds=HOLD_SECONDS),
        )
        session.add(hold)
        session.flush()
        left, use = provided(state.products, session, workspace_id, pool), used(session, workspace_id, pool)
        for product in PRODUCTS:
            if left[product] < before[product] and left[product] < use[product]:
                if cancelling:
                    raise ApiError(
                        409,
                        "cancellation_would_underprovision",
                        f"Cancelling would leave {left[product]} {product} for {use[product]} in use.",
                    )
                raise ApiError(
                    409,
                    "would_underprovision",
                    f"This change would leave {left[product]} {product} for {use[product]} in use.",
                )
        hold_id = hold.id
    try:
        yield
    finally:
        with state.db.write() as session:
            session.execute(delete(CapacityHold).where(CapacityHold.id == hold_id))


def refuse_if_in_use(session: Session, workspace_id: str) -> None:
    """Archiving: 409 while any organization of the workspace uses capacity."""
    if any(any(q.values()) for q in used_by_account(session, workspace_id).values()):
        raise ApiError(409, "workspace_not_empty", "Organizations of this workspace still use capacity.")


def refuse_if_assigned(state: BillingState, workspace_id: str, account_id: str) -> None:
    """Deleting an account: 409 while a root organization is assigned to it."""
    with state.db.read() as session:
        assigned = session.scalar(
            select(Organization.id)
            .where(
                Organization.workspace_id == workspace_id,
                Organization.parent_id.is_(None),
                Organization.billing_account_id == account_id,
            )
            .limit(1)
        )
    if assigned is not None:
        raise ApiError(
            409,
            "billing_account_in_use",
            "Organizations are assigned to this billing account; reassign or delete them first.",
        )


def delete_expired_holds(db: Database) -> int:
    """Remove holds that no longer count (the clean-up job: reads skip them anyway)."""
    with db.write() as session:
        result = session.execute(delete(CapacityHold).where(CapacityHold.expires_at < utcnow()))
        return int(getattr(result, "rowcount", 0) or 0)
