"""The emulator creates its own tables: once, and safely when processes start together."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import stripe
from sqlalchemy import create_engine, inspect, make_url, text

from stripe_sandbox import SANDBOX_TABLES, SandboxClock, SandboxHTTPClient, SqlSessions, WebhookSender, install
from stripe_sandbox.database import normalize_url
from stripe_sandbox.models import SandboxClockState


@pytest.fixture
def empty_database_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A database without the emulator's tables: a new SQLite file, or a new PostgreSQL schema."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'empty.sqlite3'}"
        return
    schema = f"install_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalize_url(database_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    # libpq's `options`: every connection of the URL works in that schema only.
    url = make_url(normalize_url(database_url)).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _tables(sessions: SqlSessions) -> set[str]:
    with sessions.engine.connect() as connection:
        return set(inspect(connection).get_table_names())


def test_install_creates_the_tables_and_is_idempotent(empty_database_url: str) -> None:
    sessions = SqlSessions(empty_database_url)
    try:
        assert not _tables(sessions) & {table.name for table in SANDBOX_TABLES}
        install(sessions)
        assert {table.name for table in SANDBOX_TABLES} <= _tables(sessions)
        with sessions.write() as session:
            session.add(SandboxClockState(id=1, offset_seconds=5))
        install(sessions)  # again: nothing recreated, nothing lost
        with sessions.read() as session:
            row = session.get(SandboxClockState, 1)
            assert row is not None and row.offset_seconds == 5
    finally:
        sessions.dispose()


def test_concurrent_installs_all_succeed(empty_database_url: str) -> None:
    """Gunicorn workers starting at once each install; none fails on the others' tables."""
    workers = 6
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []
    all_sessions = [SqlSessions(empty_database_url) for _ in range(workers)]
    # The database exists before the workers start (the release step migrates it first): on
    # SQLite, switching a brand-new file to WAL is what would collide, not the install.
    with all_sessions[0].read() as session:
        session.execute(text("SELECT 1"))

    def start(sessions: SqlSessions) -> None:
        barrier.wait()
        try:
            install(sessions)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(sessions,)) for sessions in all_sessions]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert {table.name for table in SANDBOX_TABLES} <= _tables(all_sessions[0])
    finally:
        for sessions in all_sessions:
            sessions.dispose()


def test_install_adds_the_columns_an_older_table_lacks(empty_database_url: str) -> None:
    """A dev database made before the clock had a status keeps its offset and gains the status."""
    sessions = SqlSessions(empty_database_url)
    try:
        with sessions.write() as session:
            session.execute(text("CREATE TABLE sandbox_clock (id INTEGER PRIMARY KEY, offset_seconds BIGINT)"))
            session.execute(text("INSERT INTO sandbox_clock (id, offset_seconds) VALUES (1, 86400)"))
        install(sessions)
        clock = SandboxClock(sessions)
        assert clock.offset() == 86400
        assert clock.reading().status == "ready"
        assert clock.advance_in_background(seconds=1).status == "advancing"
        clock.wait_for_runs(10)
        assert clock.reading().status == "ready"
    finally:
        sessions.dispose()


def test_install_adds_columns_a_database_made_before_them_lacks(empty_database_url: str) -> None:
    """A dev database made before webhook retries were scheduled keeps working."""
    sessions = SqlSessions(empty_database_url)
    try:
        with sessions.write() as session:  # the table as it first shipped
            session.execute(
                text(
                    "CREATE TABLE sandbox_webhook_deliveries (event_id VARCHAR(255) PRIMARY KEY, seq BIGINT NOT NULL, "
                    "pending BOOLEAN NOT NULL, attempts INTEGER NOT NULL, lease_until FLOAT, last_attempt_at FLOAT, "
                    "last_status INTEGER, delivered_at FLOAT)"
                )
            )
        install(sessions)
        with sessions.engine.connect() as connection:
            columns = {column["name"] for column in inspect(connection).get_columns("sandbox_webhook_deliveries")}
        assert "next_attempt_at" in columns
        delivered: list[bytes] = []
        sender = WebhookSender(sessions, "whsec_x", lambda payload, headers: delivered.append(payload) or 200)
        client = stripe.StripeClient("sk_test_sandbox", http_client=SandboxHTTPClient(sessions, webhooks=sender))
        client.v1.customers.create(params={"name": "Ada"})
        assert len(delivered) == 1
    finally:
        sessions.dispose()
