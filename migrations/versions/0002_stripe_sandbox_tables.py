"""Formerly the Stripe sandbox's tables; now nothing.

This revision used to create the emulator's tables (sandbox_objects,
sandbox_idempotency, sandbox_clock, sandbox_price_lookup_keys). They belong to
the `stripe_sandbox` package now, which creates them itself in sandbox mode
(`stripe_sandbox.install()`); the revision id stays so that the chain, and
databases already past it, remain valid. 0005 drops the tables it created.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 23:47:39.593847
"""

from __future__ import annotations

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
