"""Rules for workspaces and their members."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from billing import replica
from billing.access import ROLE_RANK, Access
from billing.audit import trail
from billing.errors import ApiError, not_found
from billing.leases import account_lease_name, leases
from billing.models import BillingAccountIndex, Member, Workspace, utcnow
from billing.organizations.capacity import lock_workspace, pooled_seat_limits, refuse_if_in_use
from billing.state import BillingState
from billing.subscriptions.active import active_subscription_ids

MEMBER_LIMIT = 100  # members of a workspace, its owners included (API.md, Workspaces)


@dataclass(frozen=True)
class ShownWorkspace:
    """A workspace as the API shows it (schemas.workspaces.WorkspaceSchema)."""

    workspace: Workspace
    pooled_seat_limit: int | None  # None but in pooled mode


def shown(state: BillingState, workspaces: list[Workspace]) -> list[ShownWorkspace]:
    """Each workspace with its pooled_seat_limit, read from the copy of Stripe."""
    with state.db.read() as session:
        seats = pooled_seat_limits(state.products, session, workspaces)
    return [ShownWorkspace(workspace, seats.get(workspace.id)) for workspace in workspaces]


def create_workspace(state: BillingState, user_id: str, data: dict[str, Any]) -> ShownWorkspace:
    now = utcnow()
    workspace = Workspace(
        name=data["name"],
        description=data.get("description"),
        billing_mode=data["billing_mode"],
        created_at=now,
        updated_at=now,
    )
    with state.db.write() as session:
        session.add(workspace)
        session.flush()
        session.add(Member(workspace_id=workspace.id, user_id=user_id, role="owner", created_at=now, updated_at=now))
        trail.record(
            session,
            workspace.id,
            "workspace.created",
            ("workspace", workspace.id),
            trail.changed(
                {},
                {"name": workspace.name, "description": workspace.description, "billing_mode": workspace.billing_mode},
            ),
        )
    return shown(state, [workspace])[0]


def list_workspaces(state: BillingState, user_id: str) -> list[ShownWorkspace]:
    with state.db.read() as session:
        workspaces = list(
            session.scalars(
                select(Workspace)
                .join(Member, Member.workspace_id == Workspace.id)
                .where(Member.user_id == user_id)
                .order_by(Workspace.created_at, Workspace.id)
            )
        )
    return shown(state, workspaces)


def retrieve_workspace(state: BillingState, access: Access) -> ShownWorkspace:
    return shown(state, [access.workspace])[0]


def update_workspace(state: BillingState, access: Access, data: dict[str, Any]) -> ShownWorkspace:
    access.require_role("admin").require_writable()
    with state.db.write() as session:
        workspace = session.get(Workspace, access.workspace.id)
        if workspace is None:
            raise not_found("workspace")
        before = {field: getattr(workspace, field) for field in ("name", "description")}
        for field in ("name", "description"):
            if field in data:
                setattr(workspace, field, data[field])
        workspace.updated_at = utcnow()
        changes = trail.changed(before, {field: getattr(workspace, field) for field in before})
        if changes:
            trail.record(session, workspace.id, "workspace.updated", ("workspace", workspace.id), changes)
    return shown(state, [workspace])[0]


def archive_workspace(state: BillingState, access: Access) -> None:
    """Soft-delete; refused while any billing account has an active subscription."""
    access.require_role("owner").require_writable()
    with state.db.read() as session:
        customer_ids = list(
            session.scalars(
                select(BillingAccountIndex.customer_id).where(
                    BillingAccountIndex.workspace_id == access.workspace.id,
                    BillingAccountIndex.customer_id.is_not(None),
                )
            )
        )
    # Hold every account's lease: no subscription appears between the check and the archive.
    with leases(state.db, (account_lease_name(str(c)) for c in customer_ids)):
        blocking = {str(c): ids for c in customer_ids if (ids := active_subscription_ids(state.db, str(c)))}
        if blocking:
            raise ApiError(
                409,
                "workspace_not_empty",
                "Cancel the active subscriptions first: "
                + "; ".join(
                    f"{_account_named(state, account)} has {', '.join(ids)}" for account, ids in blocking.items()
                )
                + ".",
            )
        with state.db.write() as session:
            workspace = lock_workspace(session, access.workspace.id, writable=False)
            refuse_if_in_use(session, workspace.id)
            if workspace.archived_at is None:
                now = utcnow()
                workspace.archived_at = now
                workspace.updated_at = now
                trail.record(
                    session,
                    workspace.id,
                    "workspace.archived",
                    ("workspace", workspace.id),
                    {"archived": trail.change(False, True)},
                )


def _account_named(state: BillingState, customer_id: str) -> str:
    name = (replica.customer(state.db, customer_id) or {}).get("name")
    return f'billing account "{name}" ({customer_id})' if name else f"billing account {customer_id}"


# -- members -------------------------------------------------------------


def list_members(state: BillingState, access: Access) -> list[Member]:
    with state.db.read() as session:
        return list(
            session.scalars(
                select(Member)
                .where(Member.workspace_id == access.workspace.id)
                .order_by(Member.created_at, Member.user_id)
            )
        )


def _require_grant(access: Access, role: str) -> None:
    access.require_role("admin")
    if role == "owner" and access.role != "owner":
        raise ApiError(403, "permission_denied", "Only an owner can grant the owner role.")


def _owner_count(session: Any, workspace_id: str) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(Member).where(Member.workspace_id == workspace_id, Member.role == "owner")
        )
    )


def add_member(state: BillingState, access: Access, data: dict[str, Any]) -> Member:
    access.require_writable()
    _require_grant(access, data["role"])
    now = utcnow()
    with state.db.write() as session:
        # The workspace's row lock first: concurrent adds count one after the other.
        session.get(Workspace, access.workspace.id, with_for_update=True)
        if session.get(Member, (access.workspace.id, data["user_id"])) is not None:
            raise ApiError(409, "member_exists", "This user is already a member of the workspace.")
        members = session.scalar(
            select(func.count()).select_from(Member).where(Member.workspace_id == access.workspace.id)
        )
        if int(members or 0) >= MEMBER_LIMIT:
            raise ApiError(
                409, "member_limit_reached", f"A workspace can have at most {MEMBER_LIMIT} members; remove one first."
            )
        member = Member(
            workspace_id=access.workspace.id,
            user_id=data["user_id"],
            role=data["role"],
            created_at=now,
            updated_at=now,
        )
        session.add(member)
        trail.record(
            session,
            access.workspace.id,
            "member.added",
            ("member", member.user_id),
            {"role": trail.change(None, member.role)},
        )
    return member


def _member_or_404(session: Any, workspace_id: str, user_id: str) -> Member:
    # Lock the workspace row first: owner-count checks must not race each other.
    session.get(Workspace, workspace_id, with_for_update=True)
    member: Member | None = session.get(Member, (workspace_id, user_id), with_for_update=True)
    if member is None:
        raise not_found("member")
    return member


def change_member_role(state: BillingState, access: Access, user_id: str, role: str) -> Member:
    access.require_writable()
    _require_grant(access, role)
    with state.db.write() as session:
        member = _member_or_404(session, access.workspace.id, user_id)
        if member.role == "owner" and access.role != "owner":
            raise ApiError(403, "permission_denied", "Only an owner can change an owner's role.")
        if member.role == "owner" and role != "owner" and _owner_count(session, access.workspace.id) <= 1:
            raise ApiError(422, "cannot_remove_last_owner", "The workspace's last owner cannot be demoted.")
        if member.role != role:
            trail.record(
                session,
                access.workspace.id,
                "member.role_changed",
                ("member", user_id),
                {"role": trail.change(member.role, role)},
            )
            member.role = role
            member.updated_at = utcnow()
    return member


def remove_member(state: BillingState, access: Access, user_id: str) -> None:
    """Admins remove others; anyone may remove themself; never the last owner."""
    access.require_writable()
    if user_id != access.user_id:
        access.require_role("admin")
    with state.db.write() as session:
        member = _member_or_404(session, access.workspace.id, user_id)
        if member.role == "owner" and user_id != access.user_id and ROLE_RANK[access.role] < ROLE_RANK["owner"]:
            raise ApiError(403, "permission_denied", "Only an owner can remove an owner.")
        if member.role == "owner" and _owner_count(session, access.workspace.id) <= 1:
            raise ApiError(422, "cannot_remove_last_owner", "The workspace's last owner cannot be removed.")
        session.delete(member)
        trail.record(
            session,
            access.workspace.id,
            "member.removed",
            ("member", user_id),
            {"role": trail.change(member.role, None)},
        )
