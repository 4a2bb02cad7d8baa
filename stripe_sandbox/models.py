"""Tables of the Stripe sandbox emulator, on its own declarative base and metadata.

Every emulated Stripe object is one row of `sandbox_objects`: the JSON document
plus the few columns listing and scheduling need (type, customer, ordering,
next due time). The tables are the emulator's business, not its host's: they
are absent from the host's metadata and migrations, and `database.install()`
creates them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, Index, Integer, String, Table, Text, inspect
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


class SandboxBase(DeclarativeBase):
    """The emulator's tables only (`SandboxBase.metadata`)."""


class SandboxObject(SandboxBase):
    __tablename__ = "sandbox_objects"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    object_type: Mapped[str] = mapped_column(String(64))
    # Owning customer, for "list this customer's subscriptions/invoices/...".
    customer: Mapped[str | None] = mapped_column(String(255))
    created: Mapped[int] = mapped_column(BigInteger)
    # Sandbox time in microseconds, bumped to stay strictly increasing within a
    # process: orders lists newest first even for objects created in the same
    # second (ties across processes fall back to the id).
    seq: Mapped[int] = mapped_column(BigInteger)
    # Deleted objects keep their row: a deleted customer is still retrievable.
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    # Next sandbox time at which the object changes on its own (trial end,
    # period end, cancel_at, ...), so advancing the clock only visits due rows.
    due_at: Mapped[int | None] = mapped_column(BigInteger)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (
        Index("ix_sandbox_objects_type_seq", "object_type", "deleted", "seq", "id"),
        Index("ix_sandbox_objects_customer_type_seq", "customer", "object_type", "seq", "id"),
        Index("ix_sandbox_objects_due_at", "due_at"),
    )


class SandboxIdempotencyKey(SandboxBase):
    """A POST's idempotency key and the response it replays (see idempotency.py)."""

    __tablename__ = "sandbox_idempotency"

    # Keys are scoped per API key, as on Stripe: SHA-256 of the secret key, never the key itself.
    api_key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    method: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(1024))
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[int | None] = mapped_column(Integer)
    body: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str] = mapped_column(String(64))
    # Real unix time, not sandbox time: advancing the sandbox clock must not expire keys.
    created_real: Mapped[float] = mapped_column(Float, index=True)


class SandboxClockState(SandboxBase):
    """One row (id 1): how far the sandbox clock runs ahead of real time, and its last background advance.

    `status` is Stripe's test clock status of that advance (see clock.py). The
    columns after `offset_seconds` came later: `database.install()` adds them to
    an existing table, so they are nullable or have a server default.
    """

    __tablename__ = "sandbox_clock"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    offset_seconds: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(32), default="ready", server_default="ready")
    # The advance running in the background (any process), and until when (real
    # unix time) its heartbeat vouches for it: a run whose process died expires.
    run_id: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[float | None] = mapped_column(Float)
    # Sandbox time the last background advance moved the clock to: what it made
    # happen is dated at or before it (traffic meanwhile is dated after).
    advanced_to: Mapped[int | None] = mapped_column(BigInteger)


class SandboxPriceLookupKey(SandboxBase):
    """Stripe keeps price lookup keys unique; the primary key enforces it under concurrency."""

    __tablename__ = "sandbox_price_lookup_keys"

    lookup_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    price_id: Mapped[str] = mapped_column(String(255))


class SandboxWebhookDelivery(SandboxBase):
    """Delivery state of one event to the sandbox's webhook endpoint (see webhooks.py).

    Times here are real unix time, but for `next_attempt_at`: leases and
    signatures are about the moment of sending, and the receiver checks
    signatures against its own clock; retries are scheduled, as Stripe's, in the
    account's (sandbox) time, so advancing the clock brings them due.

    States: pending (to send, or to retry at `next_attempt_at`); delivered
    (`delivered_at`); failed (neither: given up after the last retry).
    """

    __tablename__ = "sandbox_webhook_deliveries"

    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    # The event's SandboxObject.seq: deliveries go out in creation order.
    seq: Mapped[int] = mapped_column(BigInteger)
    pending: Mapped[bool] = mapped_column(Boolean, default=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # A sender owns the row until then (it sends outside any transaction).
    lease_until: Mapped[float | None] = mapped_column(Float)
    last_attempt_at: Mapped[float | None] = mapped_column(Float)
    last_status: Mapped[int | None] = mapped_column(Integer)
    delivered_at: Mapped[float | None] = mapped_column(Float)
    # Sandbox time of the next retry after a failed attempt; null: due now. Added after the
    # table first shipped: `database.install()` adds it to older databases.
    next_attempt_at: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index("ix_sandbox_webhook_deliveries_pending_seq", "pending", "seq"),)


class SandboxRateWindow(SandboxBase):
    """Requests counted in one second of real time for one rate-limit bucket (see rate_limits.py)."""

    __tablename__ = "sandbox_rate_windows"

    # The API key's hash, alone (its requests in all) or with an endpoint ("GET /v1/customers/{customer}").
    bucket: Mapped[str] = mapped_column(String(255), primary_key=True)
    window_start_second: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


SANDBOX_TABLES: list[Table] = list(SandboxBase.metadata.sorted_tables)


def create_sandbox_tables(bind: Engine | Connection) -> None:
    """Create the missing tables, without locking (see `database.install()` for that)."""
    SandboxBase.metadata.create_all(bind, checkfirst=True)


def drop_sandbox_tables(bind: Engine | Connection) -> None:
    SandboxBase.metadata.drop_all(bind, checkfirst=True)


def insert_if_absent(session: Session, model: type[SandboxBase], values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING; True if this call inserted the row.

    On PostgreSQL a conflicting row from a transaction still in flight makes this
    wait for it, so afterwards the winner's row is visible: the basis of
    idempotency keys and lookup-key uniqueness under concurrent requests.
    """
    if session.get_bind().dialect.name == "postgresql":
        statement: Any = postgresql_insert(model).values(**values).on_conflict_do_nothing()
    else:
        statement = sqlite_insert(model).values(**values).on_conflict_do_nothing()
    # RETURNING rather than rowcount: psycopg reports -1 for a skipped insert.
    returned = session.execute(statement.returning(*inspect(model).primary_key)).first()
    return returned is not None
