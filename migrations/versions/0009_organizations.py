"""Organizations (usage, limits, the tree) and capacity holds.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

PRODUCTS = ("locations", "users", "sso")


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("workspace_id", sa.String(32), sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("parent_id", sa.String(32), nullable=True),
        sa.Column("path", sa.String(400), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("external_id", sa.String(36), nullable=False),
        sa.Column("billing_account_id", sa.String(64), nullable=True),
        *[sa.Column(f"limit_{p}", sa.BigInteger(), nullable=True) for p in PRODUCTS],
        *[sa.Column(f"usage_{p}", sa.BigInteger(), nullable=False) for p in PRODUCTS],
        *[sa.Column(f"subtree_{p}", sa.BigInteger(), nullable=False) for p in PRODUCTS],
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_organizations_workspace_parent", "organizations", ["workspace_id", "parent_id"])
    op.create_index("ix_organizations_workspace_path", "organizations", ["workspace_id", "path"])
    op.create_table(
        "capacity_holds",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.String(32), sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("subscription_id", sa.String(255), nullable=False),
        sa.Column("quantities", sa.JSON(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_capacity_holds_workspace_id", "capacity_holds", ["workspace_id"])


def downgrade() -> None:
    op.drop_index("ix_capacity_holds_workspace_id", "capacity_holds")
    op.drop_table("capacity_holds")
    op.drop_index("ix_organizations_workspace_path", "organizations")
    op.drop_index("ix_organizations_workspace_parent", "organizations")
    op.drop_table("organizations")
