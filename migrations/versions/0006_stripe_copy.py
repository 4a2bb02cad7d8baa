"""The service's own copy of the Stripe objects the API shows; reconcile's events cursor.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stripe_copies",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("object_type", sa.String(32), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=True),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("fetched_at", sa.BigInteger(), nullable=False),
        sa.Column("first_seen", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    )
    op.create_index("ix_stripe_copies_customer_type_created", "stripe_copies",
                    ["customer_id", "object_type", "created", "first_seen", "id"])
    op.create_table(
        "replica_cursors",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    with op.batch_alter_table("billing_accounts") as batch:
        batch.add_column(sa.Column("copied_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("billing_accounts") as batch:
        batch.drop_column("copied_at")
    op.drop_table("replica_cursors")
    op.drop_index("ix_stripe_copies_customer_type_created", "stripe_copies")
    op.drop_table("stripe_copies")
