"""When the copy last saw an object change (Stripe keeps no update time).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stripe_copies") as batch:
        batch.add_column(sa.Column("changed_at", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stripe_copies") as batch:
        batch.drop_column("changed_at")
