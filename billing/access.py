"""Tenancy: who may see and change what, resolved once per request.

A workspace the caller is not a member of does not exist for them (404); a
billing account outside the workspace in the path is 404 too. Routes resolve
the caller's `Access` (or, under a billing account, an `AccountAccess`) in one
query and pass it to the service: nothing is read from or written to Stripe
before these checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from flask import g
from sqlalchemy import Select, bindparam, literal, select

from billing.errors import ApiError, forbidden, not_found
from billing.models import BillingAccountIndex, Member, Organization, Workspace
from billing.state import current
from billing.tokens import USAGE_SCOPE, has_scope

# A member's roles, lowest first; a route declares the one it needs (billing.openapi.route_facts).
Role = Literal["viewer", "admin", "owner"]
ROLE_RANK = {"viewer": 0, "admin": 1, "owner": 2}
# The role of a service token (scope billing:usage) in `usage_access`: it may
# report usage and read capacity in any workspace, and nothing else.
SERVICE_ROLE = "service"


def workspace_archived() -> ApiError:
    """The one error for a write to an archived workspace."""
    return ApiError(409, "workspace_archived", "The workspace is archived; it can no longer be changed.")


@dataclass(frozen=True)
class Access:
    workspace: Workspace
    role: str
    user_id: str

    def require_role(self, role: str) -> Access:
        """Raise 403 unless the caller's role is at least `role`."""
        if ROLE_RANK.get(self.role, -1) < ROLE_RANK[role]:  # a service token has no member role
            raise forbidden(f"This action needs the {role} role or higher.")
        return self

    def require_writable(self) -> Access:
        """Raise 409 when the workspace is archived (reads still work)."""
        if self.workspace.archived:
            raise workspace_archived()
        return self

    def for_billing_write(self) -> Access:
        return self.require_role("admin").require_writable()


@dataclass(frozen=True)
class AccountAccess:
    """The caller's access, and the billing account (under that workspace) the path names."""

    access: Access
    account: BillingAccountIndex

    @property
    def workspace_id(self) -> str:
        return self.access.workspace.id

    @property
    def customer_id(self) -> str:
        return str(self.account.customer_id)

    @property
    def currency(self) -> str:
        return self.account.currency

    def for_billing_write(self) -> AccountAccess:
        self.access.for_billing_write()
        return self


# An access check reads whole rows as columns, without an ORM Session (its set-up, loading and
# identity map were most of the check's time), and hands each row out as an instance of its
# class that no session holds. A statement's columns: the workspace's, the caller's role, then
# (if any) the account's or the organization's.
def _columns(entity: type[Any]) -> list[Any]:
    return list(entity.__table__.columns)


def _instance(entity: type[Any], values: Sequence[Any]) -> Any:
    """The row's instance; None for an outer join's missing row (no primary key)."""
    keys = _KEYS[entity]
    return None if values[0] is None else entity.loaded(zip(keys, values, strict=True))


_KEYS = {
    entity: [entity.__mapper__.get_property_by_column(column).key for column in _columns(entity)]
    for entity in (Workspace, BillingAccountIndex, Organization)
}
_WORKSPACE_WIDTH = len(_KEYS[Workspace])


def _read(statement: Select[Any], params: dict[str, Any], other: type[Any] | None = None) -> tuple[Any, ...] | None:
    """(workspace, role[, other]) from the statement's first row, or None."""
    db = current().db
    with db.columns() as connection:
        rows = db.fetch_columns(connection, statement, params)
    if not rows:
        return None
    row = rows[0]
    workspace, role = _instance(Workspace, row[:_WORKSPACE_WIDTH]), row[_WORKSPACE_WIDTH]
    if other is None:
        return workspace, role
    return workspace, role, _instance(other, row[_WORKSPACE_WIDTH + 1 :])


# Built once: every authenticated request runs one of these (params: workspace_id, user_id).
_MEMBERSHIP = (
    select(*_columns(Workspace), Member.role)
    .join(Member, Member.workspace_id == Workspace.id)
    .where(Workspace.id == bindparam("workspace_id"), Member.user_id == bindparam("user_id"))
)
_MEMBERSHIP_AND_ACCOUNT = _MEMBERSHIP.add_columns(*_columns(BillingAccountIndex)).outerjoin(
    BillingAccountIndex,
    (BillingAccountIndex.workspace_id == Workspace.id)
    & (BillingAccountIndex.customer_id == bindparam("customer_id"))
    & (BillingAccountIndex.state == "active"),
)
_WORKSPACE = select(*_columns(Workspace), literal(SERVICE_ROLE)).where(Workspace.id == bindparam("workspace_id"))


# A limits read's access and organization in one query (params: workspace_id,
# user_id, organization_id); a service token's has no membership to join.
_IN_WORKSPACE = (Organization.workspace_id == Workspace.id) & (Organization.id == bindparam("organization_id"))
_MEMBERSHIP_AND_ORGANIZATION = _MEMBERSHIP.add_columns(*_columns(Organization)).outerjoin(Organization, _IN_WORKSPACE)
_WORKSPACE_AND_ORGANIZATION = _WORKSPACE.add_columns(*_columns(Organization)).outerjoin(Organization, _IN_WORKSPACE)


def workspace_access(workspace_id: str) -> Access:
    """The caller's access to a workspace; 404 when they are not a member."""
    row = _read(_MEMBERSHIP, {"workspace_id": workspace_id, "user_id": g.user_id})
    if row is None:
        raise not_found("workspace")
    return Access(workspace=row[0], role=row[1], user_id=g.user_id)


def usage_access(workspace_id: str, *, write: bool) -> Access:
    """Access to report usage (`write`) or read limits and capacity: a member
    (admin+ to write), or a service token with the billing:usage scope for any
    workspace. 404 for anyone else, as for every workspace route."""
    if has_scope(USAGE_SCOPE):
        row = _read(_WORKSPACE, {"workspace_id": workspace_id})
        if row is None:
            raise not_found("workspace")
        return Access(workspace=row[0], role=SERVICE_ROLE, user_id=g.user_id)
    access = workspace_access(workspace_id)
    return access.require_role("admin") if write else access


def organization_access(workspace_id: str, organization_id: str, *, write: bool = False) -> tuple[Access, Organization]:
    """`usage_access(write=...)` and the organization, in one query; 404 when the caller may
    not read the workspace or the organization is not in it. `write` (a usage report): 403
    below admin, then 409 when the workspace is archived, before the organization's 404."""
    service = has_scope(USAGE_SCOPE)
    row = _read(
        _WORKSPACE_AND_ORGANIZATION if service else _MEMBERSHIP_AND_ORGANIZATION,
        {"workspace_id": workspace_id, "user_id": g.user_id, "organization_id": organization_id},
        Organization,
    )
    if row is None:
        raise not_found("workspace")
    access = Access(workspace=row[0], role=row[1], user_id=g.user_id)
    if write:
        if not service:
            access.require_role("admin")
        access.require_writable()
    if row[2] is None:
        raise not_found("organization")
    return access, row[2]


def account_access(workspace_id: str, customer_id: str) -> AccountAccess:
    """The caller's access and the billing account, in one query; 404 when the
    caller is not a member or the account is not (or no longer) in the workspace."""
    row = _read(
        _MEMBERSHIP_AND_ACCOUNT,
        {"workspace_id": workspace_id, "user_id": g.user_id, "customer_id": customer_id},
        BillingAccountIndex,
    )
    if row is None:
        raise not_found("workspace")
    if row[2] is None:
        raise not_found("billing account")
    return AccountAccess(Access(workspace=row[0], role=row[1], user_id=g.user_id), row[2])
