"""Alembic environment: the URL comes from DATABASE_URL (or the caller)."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

import billing.models  # noqa: F401  (registers the tables)
from billing.config import INSTANCE_DIR
from billing.db import Base, normalize_database_url

config = context.config


def database_url() -> str:
    url = config.attributes.get("database_url") or os.environ.get("DATABASE_URL")
    if not url:
        INSTANCE_DIR.mkdir(exist_ok=True)
        url = f"sqlite:///{INSTANCE_DIR / 'billing.sqlite3'}"
    return normalize_database_url(url)


def include_name(name: str | None, type_: str, _parents: object) -> bool:
    # The Stripe sandbox's tables share the database but are the emulator's own
    # (it creates them): autogenerate must neither drop nor diff them.
    return not (type_ == "table" and name is not None and name.startswith("sandbox_"))


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=Base.metadata,
        literal_binds=True,
        render_as_batch=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(database_url())
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=Base.metadata, render_as_batch=True, include_name=include_name
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
