"""Drop the Stripe sandbox's tables that 0002 and 0004 used to create.

The emulator (`stripe_sandbox`) owns its tables now and creates them itself,
in its own shape, when the service starts in sandbox mode. Databases migrated
before that still hold the old ones: they go, with whatever emulated Stripe
state they held. Fresh databases never had them, hence "if they exist".

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
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name in SANDBOX_TABLES:
        if name in existing:
            op.drop_table(name)  # its indexes go with it


def downgrade() -> None:
    pass  # the emulator recreates its tables itself
