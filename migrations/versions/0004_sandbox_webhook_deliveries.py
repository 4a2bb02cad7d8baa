"""Formerly the Stripe sandbox's webhook deliveries table; now nothing.

This revision used to create the emulator's sandbox_webhook_deliveries table.
It belongs to the `stripe_sandbox` package now, which creates it itself in
sandbox mode (`stripe_sandbox.install()`); the revision id stays so that the
chain, and databases already past it, remain valid. 0005 drops the table it
created.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 00:04:26.076707
"""

from __future__ import annotations

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
