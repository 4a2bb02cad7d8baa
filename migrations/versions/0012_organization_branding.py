"""Organization branding: the picture (an HTTPS URL, or an upload kept in
`organization_pictures`), the branding settings, and a unique index on
`external_id` (the public branding route looks organizations up by it).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("organizations", sa.Column("picture_url", sa.String(2048), nullable=True))
    op.add_column("organizations", sa.Column("picture_digest", sa.String(64), nullable=True))
    op.add_column("organizations", sa.Column("branding", sa.JSON(), nullable=True))
    op.create_index("ux_organizations_external_id", "organizations", ["external_id"], unique=True)
    op.create_table(
        "organization_pictures",
        sa.Column("organization_id", sa.String(32), sa.ForeignKey("organizations.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("content_type", sa.String(32), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("organization_pictures")
    op.drop_index("ux_organizations_external_id", "organizations")
    with op.batch_alter_table("organizations") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("branding")
        batch.drop_column("picture_digest")
        batch.drop_column("picture_url")
