"""The audit trail (`audit_events`): one row per change to a workspace's
billing state, append-only, kept AUDIT_RETENTION_DAYS.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "workspace_id", sa.String(32), sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("actor_type", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(255), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_type", sa.String(32), nullable=False),
        sa.Column("target_id", sa.String(255), nullable=False),
        sa.Column("changes", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("request_id", sa.String(100), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("stripe_event_id", sa.String(255), nullable=True),
    )
    op.create_index("ix_audit_events_workspace_occurred", "audit_events", ["workspace_id", "occurred_at", "id"])
    op.create_index("ix_audit_events_workspace_target", "audit_events", ["workspace_id", "target_id", "occurred_at"])
    op.create_index("ix_audit_events_occurred", "audit_events", ["occurred_at"])


def downgrade() -> None:
    op.drop_table("audit_events")
