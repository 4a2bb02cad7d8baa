"""The inbox of Stripe events (`stripe_events`), replacing `processed_events`.

Events are stored when delivered and applied later on queue workers; the ids
already processed are carried over as applied, so a late redelivery of one is
still a duplicate.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("object_key", sa.String(300), nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("claimed_until", sa.DateTime(), nullable=True),
        sa.Column("applied_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
    )
    op.create_index("ix_stripe_events_state_object", "stripe_events", ["state", "object_key"])
    op.create_index("ix_stripe_events_state_received", "stripe_events", ["state", "received_at"])
    op.execute(
        "INSERT INTO stripe_events (id, type, object_key, created, received_at, state, attempts, next_attempt_at,"
        " applied_at, payload)"
        " SELECT id, type, NULL, 0, processed_at, 'applied', 1, processed_at, processed_at, '{}'"
        " FROM processed_events"
    )
    op.drop_table("processed_events")


def downgrade() -> None:
    op.create_table(
        "processed_events",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("processed_at", sa.DateTime(), nullable=False),
    )
    op.execute("INSERT INTO processed_events (id, type, processed_at)"
               " SELECT id, type, applied_at FROM stripe_events WHERE state = 'applied'")
    op.drop_table("stripe_events")
