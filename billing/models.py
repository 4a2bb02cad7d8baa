"""Tables of the service's own state: tenancy and the billing-account index.

Stripe stays the system of record for everything about money; these rows say
which workspace a Stripe customer belongs to, and who may act on it.
"""

from __future__ import annotations

import secrets
import string
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from billing.db import Base

_ALPHANUMERIC = string.ascii_letters + string.digits

ROLES = ("owner", "admin", "viewer")
BILLING_MODES = ("single", "pooled", "assigned")


def utcnow() -> datetime:
    return datetime.now(UTC)


# The copy's stamps (StripeCopy's fetched_at, first_seen and changed_at; an
# event's received_at as handed to the appliers) are microseconds: views fetched
# in the same second still order.
def stamp_of(seconds: float) -> int:
    """Unix seconds as a stamp."""
    return int(seconds * 1_000_000)


def seconds_of(stamp: int) -> float:
    return stamp / 1_000_000


def now_stamp() -> int:
    """Now, on our clock, as a stamp."""
    return stamp_of(time.time())


def new_workspace_id() -> str:
    return "ws_" + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(16))


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC: the same on SQLite and PostgreSQL."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Workspace(Base):
    __tablename__ = "workspaces"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_workspace_id)
    name: Mapped[str] = mapped_column(String(50))
    description: Mapped[str | None] = mapped_column(String(200))
    billing_mode: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set by the first subscription ever made in the workspace: the trial is once.
    first_subscription_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def archived(self) -> bool:
        return self.archived_at is not None


class Member(Base):
    __tablename__ = "workspace_members"
    __table_args__ = (Index("ix_workspace_members_user_id", "user_id"),)

    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BillingAccountIndex(Base):
    """Which Stripe customer belongs to which workspace.

    A row is `pending` from the moment a slot is reserved until Stripe has
    answered with the customer: the slot counts against the workspace's limit
    while no lock is held across the Stripe call. `reference` is sent to Stripe
    as the idempotency key and in the customer's metadata, so `reconcile` can
    pair a customer with the reservation that created it.
    """

    __tablename__ = "billing_accounts"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    customer_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    reference: Mapped[str] = mapped_column(String(64), unique=True)
    currency: Mapped[str] = mapped_column(String(3))
    state: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When the customer's objects (subscriptions, payment methods, invoices) were
    # first copied in full; None for an account older than the copy (its first
    # read copies it).
    copied_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The Stripe create's parameters while pending: a reservation whose request
    # died is settled by replaying them under the same idempotency key.
    create_params: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Lease(Base):
    """A short, expiring claim on a name, held across Stripe calls without
    holding a database lock (see `billing.leases`)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    token: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StripeEvent(Base):
    """One Stripe event as delivered (the inbox, see `billing.webhooks.inbox`).

    Stored once per event id when Stripe delivers it (or `reconcile` reads it),
    then applied on a queue worker. `object_key` names what it is about
    (`subscription:sub_...`): the events of one object that wait together are
    applied together, with one Stripe read. Kept after it is applied for as long
    as Stripe may deliver it again (dedupe), then deleted by the clean-up job.
    """

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    # `<object type>:<id>`; None for events about nothing the service copies.
    object_key: Mapped[str | None] = mapped_column(String(300))
    created: Mapped[int] = mapped_column(BigInteger)  # Stripe's clock (the event's `created`)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # pending -> applied, or parked (an operator replays it: `flask events replay`).
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A worker owns the event until then (a killed worker's claim lapses).
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(500))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON().with_variant(JSONB(), "postgresql"))

    __table_args__ = (
        Index("ix_stripe_events_state_object", "state", "object_key"),
        Index("ix_stripe_events_state_received", "state", "received_at"),
    )


IDEMPOTENCY_SCOPE_LENGTH = 300


class IdempotencyRecord(Base):
    """One Idempotency-Key of one scope (a caller in one workspace, or a caller
    alone for routes outside workspaces; `billing.idempotency._scope`): the
    request's fingerprint and, once done, its response."""

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(IDEMPOTENCY_SCOPE_LENGTH), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # running | done
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    response_type: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    locked_until: Mapped[datetime] = mapped_column(UTCDateTime)


class StripeCopy(Base):
    """One Stripe object as Stripe last returned it (customers, subscriptions,
    payment methods, invoices with all their lines, PaymentIntents, products), so that reads
    cost Stripe nothing (see `billing.replica`).

    `fetched_at` is when the Stripe request that returned this view started
    (microseconds): a view is stored only over an older one.
    """

    __tablename__ = "stripe_copies"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    object_type: Mapped[str] = mapped_column(String(32))
    customer_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(32))
    created: Mapped[int] = mapped_column(BigInteger)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    fetched_at: Mapped[int] = mapped_column(BigInteger)
    # When first copied (never updated): orders objects Stripe created in the
    # same second the way Stripe lists them, by arrival.
    first_seen: Mapped[int] = mapped_column(BigInteger)
    # When (microseconds, on Stripe's clock: the sandbox's in sandbox mode) the
    # copy stored a view whose document differed from the one before it: when the
    # object last changed, as far as the copy can tell (Stripe keeps no update
    # time). A subscription's `updated_at` comes from it.
    changed_at: Mapped[int | None] = mapped_column(BigInteger)
    data: Mapped[dict[str, Any]] = mapped_column(JSON().with_variant(JSONB(), "postgresql"))

    __table_args__ = (
        Index("ix_stripe_copies_customer_type_created", "customer_id", "object_type", "created", "first_seen", "id"),
    )


class ReplicaCursor(Base):
    """How far `reconcile` has read Stripe's events list (unix seconds)."""

    __tablename__ = "replica_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


def new_organization_id() -> str:
    return "org_" + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(16))


class Organization(Base):
    """A node of a workspace's organization tree: it consumes capacity
    (`usage_*`) and may cap what its subtree takes (`limit_*`).

    `subtree_*` is the usage of the node and everything below it, kept in the
    same transaction as every usage change, so a limits read is a handful of
    rows, not a walk of the tree. `billing_account_id` is the root's account,
    repeated on every node (a reassignment rewrites the subtree).
    """

    __tablename__ = "organizations"
    __table_args__ = (
        Index("ix_organizations_workspace_parent", "workspace_id", "parent_id"),
        Index("ix_organizations_workspace_path", "workspace_id", "path"),
        Index("ux_organizations_external_id", "external_id", unique=True),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_organization_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    parent_id: Mapped[str | None] = mapped_column(String(32))
    # "#"-joined ancestor ids, root first; "" for a root.
    path: Mapped[str] = mapped_column(String(400), default="")
    depth: Mapped[int] = mapped_column(Integer, default=0)
    name: Mapped[str] = mapped_column(String(50))
    external_id: Mapped[str] = mapped_column(String(36))  # unique: the public branding route finds by it too
    billing_account_id: Mapped[str | None] = mapped_column(String(64))
    # The picture: an HTTPS URL as given, or the digest of an upload kept in
    # `organization_pictures` (its URL is ours); never both.
    picture_url: Mapped[str | None] = mapped_column(String(2048))
    picture_digest: Mapped[str | None] = mapped_column(String(64))
    # {display_name, login_hint, colors {primary, page_background}}, or None when nothing is set.
    branding: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    limit_locations: Mapped[int | None] = mapped_column(BigInteger)
    limit_users: Mapped[int | None] = mapped_column(BigInteger)
    limit_sso: Mapped[int | None] = mapped_column(BigInteger)
    usage_locations: Mapped[int] = mapped_column(BigInteger, default=0)
    usage_users: Mapped[int] = mapped_column(BigInteger, default=0)
    usage_sso: Mapped[int] = mapped_column(BigInteger, default=0)
    subtree_locations: Mapped[int] = mapped_column(BigInteger, default=0)
    subtree_users: Mapped[int] = mapped_column(BigInteger, default=0)
    subtree_sso: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def limit(self, product: str) -> int | None:
        value: int | None = getattr(self, f"limit_{product}")
        return value

    def usage(self, product: str) -> int:
        return int(getattr(self, f"usage_{product}") or 0)

    def subtree_usage(self, product: str) -> int:
        return int(getattr(self, f"subtree_{product}") or 0)

    @property
    def ancestor_ids(self) -> list[str]:
        return self.path.split("#") if self.path else []

    @property
    def subtree_prefix(self) -> str:
        """What every descendant's path starts with."""
        return f"{self.path}#{self.id}" if self.path else self.id


class OrganizationPicture(Base):
    """An uploaded picture, as the service serves it (decoded, checked,
    re-encoded: `billing.organizations.pictures`). One per organization;
    deleted with it."""

    __tablename__ = "organization_pictures"

    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))  # sha256 of `data`: its URL names it
    content_type: Mapped[str] = mapped_column(String(32))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CapacityHold(Base):
    """A subscription's capacity as it will be once a change now being sent to
    Stripe lands (a decrease, a pause, a cancellation): usage reports count the
    lower of the two, so no report slips in between the underprovision check
    and Stripe's answer. Expires, so a crashed request never holds capacity."""

    __tablename__ = "capacity_holds"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    subscription_id: Mapped[str] = mapped_column(String(255))
    quantities: Mapped[dict[str, int]] = mapped_column(JSON)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StripeBudgetWindow(Base):
    """Stripe requests counted in one second by every process (`billing.budget`).

    `bucket` is a hash of the API key, alone (all requests) or with an endpoint
    (`<hash> GET /v1/customers/{id}`); a `<hash> cool-down` row instead marks the
    second background work may start again after Stripe's 429.
    """

    __tablename__ = "stripe_budget_windows"

    bucket: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start_second: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


def new_audit_event_id() -> str:
    return "aud_" + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(20))


class AuditEvent(Base):
    """One change to a workspace's billing state (`billing.audit`): written in the
    transaction of the change, never changed, deleted only past its retention
    (`AUDIT_RETENTION_DAYS`). `actor_type` is `user`, `service` or `stripe`
    (`actor_id` None for Stripe, whose event is `stripe_event_id` when an event
    told us)."""

    __tablename__ = "audit_events"
    __table_args__ = (
        # The list: a workspace's entries, newest first (keyset on occurred_at, id).
        Index("ix_audit_events_workspace_occurred", "workspace_id", "occurred_at", "id"),
        Index("ix_audit_events_workspace_target", "workspace_id", "target_id", "occurred_at"),
        Index("ix_audit_events_occurred", "occurred_at"),  # the retention sweep
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_audit_event_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str | None] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(255))
    changes: Mapped[dict[str, Any]] = mapped_column(JSON().with_variant(JSONB(), "postgresql"))
    request_id: Mapped[str | None] = mapped_column(String(100))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    stripe_event_id: Mapped[str | None] = mapped_column(String(255))
