"""Drop the Stripe sandbox's tables that 0002 and 0004 used to create.

The emulator (`stripe_sandbox`) owns its tables now and creates them itself,
in its own shape, when the service starts in sandbox mode. Databases migrated
before that still hold the old ones: they go, with whatever emulated Stripe
state they held. Fresh databases never had them, hence "if they exist"; and
tables in the emulator's own current shape (its idempotency table has
`api_key_hash`: `flask migrate` builds the app, which installs them, before
migrating) are the emulator's, not these, and stay.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SANDBOX_TABLES = (
    "sandbox_objects",
    "sandbox_idempotency",
    "sandbox_clock",
    "sandbox_price_lookup_keys",
    "sandbox_webhook_deliveries",
)


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    existing = set(inspector.get_table_names())
    if "sandbox_idempotency" in existing and "api_key_hash" in {
            column["name"] for column in inspector.get_columns("sandbox_idempotency")}:
        return  # the emulator's own, current tables
    for name in SANDBOX_TABLES:
        if name in existing:
            op.drop_table(name)  # its indexes go with it


def downgrade() -> None:
    pass  # the emulator recreates its tables itself
