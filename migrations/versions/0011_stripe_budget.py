"""The Stripe request budget shared by every process (billing.budget).

Revision ID: 0011
Revises: 0010 (the lead re-chains it after 0010)
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stripe_budget_windows",
        sa.Column("bucket", sa.String(200), primary_key=True),
        sa.Column("window_start_second", sa.BigInteger(), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
        # PostgreSQL: no WAL for a second's counters (a commit without a WAL flush: ~1 ms less a
        # Stripe request). A crash empties the table, which costs nothing but that second's counts.
        prefixes=["UNLOGGED"] if op.get_bind().dialect.name == "postgresql" else [],
    )


def downgrade() -> None:
    op.drop_table("stripe_budget_windows")
