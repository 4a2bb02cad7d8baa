"""The service's migrations hold the service's tables only; the Stripe sandbox's are its own."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine, inspect, text

from billing.cli import ROOT, run_migrations
from billing.db import Base
from stripe_sandbox import SANDBOX_TABLES, create_sandbox_tables

OLD_SANDBOX_TABLES = {
    "sandbox_objects",
    "sandbox_idempotency",
    "sandbox_clock",
    "sandbox_price_lookup_keys",
    "sandbox_webhook_deliveries",
}


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def _upgrade(url: str, revision: str) -> None:
    config = AlembicConfig(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = url
    command.upgrade(config, revision)


def test_the_service_metadata_has_no_sandbox_table() -> None:
    assert not [name for name in Base.metadata.tables if name.startswith("sandbox_")]
    # The emulator's tables: those 0005 knows, and any it has added since.
    assert OLD_SANDBOX_TABLES <= {table.name for table in SANDBOX_TABLES}


def test_fresh_database_gets_no_sandbox_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    run_migrations(url)
    tables = _tables(url)
    assert {table.name for table in Base.metadata.sorted_tables} <= tables
    assert not [name for name in tables if name.startswith("sandbox_")]


def test_upgrade_drops_the_tables_old_migrations_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    _upgrade(url, "0004")
    # What 0002 and 0004 used to create: the old idempotency table had no api_key_hash.
    engine = create_engine(url)
    old_tables = [table for table in SANDBOX_TABLES if table.name in OLD_SANDBOX_TABLES]
    SANDBOX_TABLES[0].metadata.create_all(engine, tables=old_tables)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE sandbox_idempotency"))
        connection.execute(text("CREATE TABLE sandbox_idempotency (key VARCHAR(255) PRIMARY KEY, method VARCHAR(16))"))
    engine.dispose()
    assert OLD_SANDBOX_TABLES <= _tables(url)

    run_migrations(url)
    tables = _tables(url)
    assert not [name for name in tables if name.startswith("sandbox_")]
    assert {table.name for table in Base.metadata.sorted_tables} <= tables


def test_upgrade_keeps_the_emulators_own_current_tables(tmp_path: Path) -> None:
    """`flask migrate` builds the app (which installs the emulator's tables) before migrating."""
    url = f"sqlite:///{tmp_path / 'sandbox.sqlite3'}"
    _upgrade(url, "0004")
    engine = create_engine(url)
    create_sandbox_tables(engine)
    engine.dispose()
    run_migrations(url)
    assert OLD_SANDBOX_TABLES <= _tables(url)
