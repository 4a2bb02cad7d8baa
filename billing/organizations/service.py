"""Rules for organizations: the tree, its bounds, limits, and which billing
account a root draws on in each billing mode (capacity itself: `capacity`)."""

from __future__ import annotations

import uuid
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from billing.access import Access
from billing.audit import trail
from billing.catalog import PRODUCTS
from billing.errors import ApiError, validation_error
from billing.leases import account_lease_name, lease
from billing.models import BillingAccountIndex, Organization, OrganizationPicture, new_organization_id, utcnow
from billing.organizations import pictures
from billing.organizations.branding import stored_branding
from billing.organizations.capacity import check_room_for_subtree, lock_organization, lock_workspace, organization_in
from billing.state import BillingState

MAX_ORGANIZATIONS = 1000
MAX_DEPTH = 9
MAX_CHILDREN = 100


def _limit_reached(message: str) -> ApiError:
    return ApiError(409, "organization_limit_reached", message)


def list_organizations(state: BillingState, access: Access) -> list[Organization]:
    with state.db.read() as session:
        return list(
            session.scalars(
                select(Organization)
                .where(Organization.workspace_id == access.workspace.id)
                .order_by(Organization.created_at, Organization.id)
            )
        )


def get_organization(state: BillingState, access: Access, org_id: str) -> Organization:
    with state.db.read() as session:
        return organization_in(session, access.workspace.id, org_id)


def get_parent(state: BillingState, access: Access, org_id: str) -> Organization | None:
    with state.db.read() as session:
        org = organization_in(session, access.workspace.id, org_id)
        return None if org.parent_id is None else session.get(Organization, org.parent_id)


def _subtree(session: Session, org: Organization) -> list[Organization]:
    """The organization's descendants (not itself)."""
    prefix = org.subtree_prefix
    return list(
        session.scalars(
            select(Organization).where(
                Organization.workspace_id == org.workspace_id,
                or_(Organization.path == prefix, Organization.path.startswith(prefix + "#", autoescape=True)),
            )
        )
    )


def descendants(state: BillingState, access: Access, org_id: str) -> list[Organization]:
    """Depth-first: each organization followed by its own subtree, siblings in creation order."""
    with state.db.read() as session:
        org = organization_in(session, access.workspace.id, org_id)
        below = _subtree(session, org)
    children: dict[str | None, list[Organization]] = {}
    for node in sorted(below, key=lambda o: (o.created_at, o.id)):
        children.setdefault(node.parent_id, []).append(node)
    ordered: list[Organization] = []
    stack = list(reversed(children.get(org.id, [])))
    while stack:
        node = stack.pop()
        ordered.append(node)
        stack.extend(reversed(children.get(node.id, [])))
    return ordered


def _account_rule(state: BillingState, access: Access, data: dict[str, Any], *, root: bool) -> str | None:
    """The billing account a root names, by the workspace's mode (422 otherwise)."""
    account_id = data.get("billing_account_id")
    mode = access.workspace.billing_mode
    if not root:
        if "billing_account_id" in data:
            raise validation_error({"billing_account_id": ["Only a root organization has a billing account."]})
        return None
    if mode == "pooled":
        if account_id is not None:
            raise validation_error(
                {
                    "billing_account_id": [
                        "In pooled mode organizations draw on the workspace's pool: leave billing_account_id out."
                    ]
                }
            )
        return None
    if account_id is None:
        raise validation_error({"billing_account_id": [f"Required in {mode} mode."]})
    with state.db.read() as session:
        known = session.scalar(
            select(BillingAccountIndex.id).where(
                BillingAccountIndex.workspace_id == access.workspace.id,
                BillingAccountIndex.customer_id == account_id,
                BillingAccountIndex.state == "active",
            )
        )
    if known is None:  # another workspace's account reads the same as none at all
        raise validation_error({"billing_account_id": ["No such billing account in this workspace."]})
    return str(account_id)


def _account_lease(state: BillingState, account_id: str | None) -> AbstractContextManager[None]:
    """Assigning a root to an account holds the account's lease: deleting the
    account (which holds it too) can't miss the assignment."""
    return lease(state.db, account_lease_name(account_id)) if account_id else nullcontext()


def _limits_columns(limits: dict[str, Any]) -> dict[str, Any]:
    return {f"limit_{product}": value for product, value in limits.items()}


def _audited(org: Organization) -> dict[str, Any]:
    """What the audit trail shows of an organization's changes (its picture by its URL or digest)."""
    return {
        "name": org.name,
        "parent_id": org.parent_id,
        "billing_account_id": org.billing_account_id,
        "limits": {product: org.limit(product) for product in PRODUCTS},
        "picture": org.picture_url or org.picture_digest,
        "branding": org.branding,
    }


@dataclass(frozen=True)
class _Picture:
    """A picture a request sets: an HTTPS URL, an upload decoded, or neither (removed)."""

    url: str | None = None
    upload: pictures.StoredPicture | None = None


def _picture(data: dict[str, Any]) -> _Picture | None:
    """The picture the body sets (None: it says nothing of one). An upload is
    decoded here, before any lock is taken; 422 if it is refused."""
    if "picture" not in data:
        return None
    value = data["picture"]
    if not isinstance(value, pictures.DataUri):
        return _Picture(url=value)
    try:
        return _Picture(upload=pictures.decode(value))
    except pictures.PictureRefused as refused:
        raise validation_error({"picture": [str(refused)]}, "The picture can't be used.") from None


def _set_picture(session: Session, org: Organization, picture: _Picture) -> None:
    org.picture_url = picture.url
    org.picture_digest = picture.upload.digest if picture.upload else None
    if picture.upload is None:
        session.execute(delete(OrganizationPicture).where(OrganizationPicture.organization_id == org.id))
        return
    session.merge(
        OrganizationPicture(
            organization_id=org.id,
            digest=picture.upload.digest,
            content_type=picture.upload.content_type,
            data=picture.upload.data,
            created_at=utcnow(),
        )
    )


def create_organization(
    state: BillingState, access: Access, data: dict[str, Any], parent_id: str | None = None
) -> Organization:
    """A root (`parent_id` None) or a child; 409 organization_limit_reached past
    1,000 per workspace, depth 9 or 100 children."""
    access.for_billing_write()
    account_id = _account_rule(state, access, data, root=parent_id is None)
    picture = _picture(data)
    now = utcnow()
    with _account_lease(state, account_id), state.db.write() as session:
        lock_workspace(session, access.workspace.id)
        count = (
            session.scalar(
                select(func.count()).select_from(Organization).where(Organization.workspace_id == access.workspace.id)
            )
            or 0
        )
        if count >= MAX_ORGANIZATIONS:
            raise _limit_reached(f"A workspace can have at most {MAX_ORGANIZATIONS} organizations.")
        path, depth = "", 0
        if parent_id is not None:
            parent = organization_in(session, access.workspace.id, parent_id)
            if parent.depth >= MAX_DEPTH:
                raise _limit_reached(f"Organizations nest at most {MAX_DEPTH} levels below a root.")
            siblings = (
                session.scalar(
                    select(func.count())
                    .select_from(Organization)
                    .where(Organization.workspace_id == access.workspace.id, Organization.parent_id == parent.id)
                )
                or 0
            )
            if siblings >= MAX_CHILDREN:
                raise _limit_reached(f"An organization can have at most {MAX_CHILDREN} direct children.")
            path, depth, account_id = parent.subtree_prefix, parent.depth + 1, parent.billing_account_id
        org = Organization(
            id=new_organization_id(),
            workspace_id=access.workspace.id,
            parent_id=parent_id,
            path=path,
            depth=depth,
            name=data["name"],
            external_id=str(uuid.uuid4()),
            billing_account_id=account_id,
            branding=stored_branding(data.get("branding")),
            created_at=now,
            updated_at=now,
            **{f"usage_{p}": 0 for p in PRODUCTS},
            **{f"subtree_{p}": 0 for p in PRODUCTS},
            **_limits_columns(data.get("limits") or {}),
        )
        session.add(org)
        if picture is not None and picture.upload is not None:
            session.flush()  # the picture's row refers to the organization's
            _set_picture(session, org, picture)
        elif picture is not None:
            org.picture_url = picture.url
        changes = {name: trail.change(None, value) for name, value in _audited(org).items() if value is not None}
        trail.record(session, org.workspace_id, "organization.created", ("organization", org.id), changes)
    return org


def update_organization(state: BillingState, access: Access, org_id: str, data: dict[str, Any]) -> Organization:
    """Name, limits (null removes one; a limit below usage only refuses new
    increases), picture, branding and, for a root outside pooled mode, its
    billing account."""
    access.for_billing_write()
    picture = _picture(data)
    account_id: str | None = None
    if "billing_account_id" in data:
        with state.db.read() as session:
            is_root = organization_in(session, access.workspace.id, org_id).parent_id is None
        account_id = _account_rule(state, access, data, root=is_root)
    with _account_lease(state, account_id), state.db.write() as session:
        workspace, org = lock_organization(session, access.workspace.id, org_id)
        before = _audited(org)
        if account_id is not None and account_id != org.billing_account_id:
            check_room_for_subtree(state.products, session, workspace, org, account_id)
            session.execute(
                update(Organization)
                .where(
                    Organization.workspace_id == org.workspace_id,
                    or_(
                        Organization.id == org.id,
                        Organization.path == org.subtree_prefix,
                        Organization.path.startswith(org.subtree_prefix + "#", autoescape=True),
                    ),
                )
                .values(billing_account_id=account_id)
                .execution_options(synchronize_session=False)
            )
            org.billing_account_id = account_id
        if "name" in data:
            org.name = data["name"]
        for column, value in _limits_columns(data.get("limits") or {}).items():
            setattr(org, column, value)
        if picture is not None:
            _set_picture(session, org, picture)
        if "branding" in data:
            org.branding = stored_branding(data["branding"])
        org.updated_at = utcnow()
        changes = trail.changed(before, _audited(org))
        if changes:
            trail.record(session, org.workspace_id, _update_action(changes), ("organization", org.id), changes)
    return org


def _update_action(changes: dict[str, Any]) -> str:
    """A move to another billing account, a change of limits alone, or any other change."""
    if "billing_account_id" in changes:
        return "organization.moved"
    if set(changes) == {"limits"}:
        return "organization.limits_changed"
    return "organization.updated"


def delete_organization(state: BillingState, access: Access, org_id: str) -> None:
    """Delete it and its descendants; 409 while any of them uses capacity."""
    access.for_billing_write()
    with state.db.write() as session:
        org = lock_organization(session, access.workspace.id, org_id)[1]
        if any(org.subtree_usage(product) for product in PRODUCTS):
            raise ApiError(
                409, "organization_has_usage", "This organization or one below it uses capacity; release it first."
            )
        ids = [org.id] + [node.id for node in _subtree(session, org)]
        session.execute(delete(Organization).where(Organization.id.in_(ids)))
        changes = {"name": trail.change(org.name, None)}
        if ids[1:]:
            changes["descendants"] = trail.change(ids[1:], None)
        trail.record(session, org.workspace_id, "organization.deleted", ("organization", org.id), changes)
