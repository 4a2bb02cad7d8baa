"""Tenancy: who may see and change what.

A workspace the caller is not a member of does not exist for them (404); an
object outside the workspace in the path is 404 too. Both checks happen before
anything is read from or written to Stripe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import g, request
from sqlalchemy import select

from billing.errors import ApiError, forbidden, not_found
from billing.models import BillingAccountIndex, Member, Workspace
from billing.state import current

ROLE_RANK = {"viewer": 0, "admin": 1, "owner": 2}


@dataclass(frozen=True)
class Access:
    workspace: Workspace
    role: str
    user_id: str

    def require_role(self, role: str) -> "Access":
        """Raise 403 unless the caller's role is at least `role`."""
        if ROLE_RANK[self.role] < ROLE_RANK[role]:
            raise forbidden(f"This action needs the {role} role or higher.")
        return self

    def require_writable(self) -> "Access":
        """Raise 409 when the workspace is archived (reads still work)."""
        if self.workspace.archived:
            raise ApiError(409, "workspace_archived", "The workspace is archived; it can no longer be changed.")
        return self

    def for_billing_write(self) -> "Access":
        return self.require_role("admin").require_writable()


def workspace_access(workspace_id: str) -> Access:
    """The caller's access to a workspace; 404 when they are not a member.

    On routes under a billing account, the account's index row is read in the
    same query and kept for `account_in_workspace`: one database round trip."""
    user_id: str = g.user_id
    customer_id = (request.view_args or {}).get("billingAccountId")
    query = (
        select(Workspace, Member.role)
        .join(Member, Member.workspace_id == Workspace.id)
        .where(Workspace.id == workspace_id, Member.user_id == user_id)
    )
    if customer_id:
        query = query.add_columns(BillingAccountIndex).outerjoin(
            BillingAccountIndex,
            (BillingAccountIndex.workspace_id == Workspace.id)
            & (BillingAccountIndex.customer_id == customer_id)
            & (BillingAccountIndex.state == "active"),
        )
    with current().db.read() as session:
        row = session.execute(query).first()
    if row is None:
        raise not_found("workspace")
    columns: tuple[Any, ...] = tuple(row)
    if customer_id:
        g.account_rows = {(workspace_id, customer_id): columns[2]}
    return Access(workspace=columns[0], role=columns[1], user_id=user_id)


def account_in_workspace(workspace_id: str, customer_id: str) -> BillingAccountIndex:
    """The index row of a billing account under this workspace; 404 otherwise."""
    prefetched = getattr(g, "account_rows", {})
    if (workspace_id, customer_id) in prefetched:
        row: BillingAccountIndex | None = prefetched[(workspace_id, customer_id)]
    else:
        with current().db.read() as session:
            row = session.scalar(
                select(BillingAccountIndex).where(
                    BillingAccountIndex.workspace_id == workspace_id,
                    BillingAccountIndex.customer_id == customer_id,
                    BillingAccountIndex.state == "active",
                )
            )
    if row is None:
        raise not_found("billing account")
    return row
