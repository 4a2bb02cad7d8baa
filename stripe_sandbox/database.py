"""Where the emulator keeps its state: the sessions it runs on, and its tables' creation.

The emulator does not own a database connection. It is handed a
`SessionSource` (any object with `read()` and `write()` session factories:
the host service's own database object fits as is), so that its rows live
next to the host's and nothing else is configured. `SqlSessions` is a
`SessionSource` of its own, for using the emulator standalone (its tests, a
script). `install()` creates the emulator's tables, once per database.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, create_engine, event, func, inspect, select, text
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateColumn

from stripe_sandbox.models import SandboxBase

# Key of the PostgreSQL advisory lock that serializes concurrent installs.
_INSTALL_LOCK = zlib.crc32(b"stripe_sandbox.install")


class SessionSource(Protocol):
    """Short sessions on the database the emulator's tables live in."""

    def read(self) -> AbstractContextManager[Session]:
        """A session for reads; each statement sees committed data."""
        ...

    def write(self) -> AbstractContextManager[Session]:
        """A session in a transaction that holds the write lock and commits on a clean exit.

        The lock matters on SQLite (BEGIN IMMEDIATE): a deferred transaction
        that reads and then writes can fail to upgrade its lock, and idempotency
        keys rely on a request's writes being serialized from its first read.
        """
        ...


def install(source: SessionSource) -> None:
    """Create the emulator's tables that do not exist yet (idempotent).

    Safe when several processes start at once (gunicorn workers): creation runs
    in one write transaction, under SQLite's write lock or a PostgreSQL
    advisory lock, and checks for each table (and column) after taking it. DDL
    is transactional on both, so a waiting process then finds the tables.
    """
    with source.write() as session:
        connection = session.connection()
        if connection.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(_INSTALL_LOCK)))
        SandboxBase.metadata.create_all(connection, checkfirst=True)
        _add_missing_columns(connection)


def _add_missing_columns(connection: Connection) -> None:
    """Add the columns a table made by an older emulator lacks.

    `create_all` only creates missing tables, and the emulator has no
    migrations: a column added to a model later (nullable, or with a server
    default) is added here, so an existing dev database keeps working.
    """
    inspector = inspect(connection)
    for table in SandboxBase.metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                definition = CreateColumn(column).compile(dialect=connection.dialect)
                connection.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {definition}"))


def normalize_url(url: str) -> str:
    """`postgres://` / `postgresql://` -> SQLAlchemy's psycopg (3) driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let the "begin" listener emit BEGIN itself (pysqlite's own transaction
        # handling would start transactions lazily and deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write_lock") else "BEGIN")


class SqlSessions:
    """A `SessionSource` over its own engine, for running the emulator standalone.

    sessions = SqlSessions("sqlite:///stripe.sqlite3")
    install(sessions)
    client = stripe.StripeClient("sk_test_x", http_client=SandboxHTTPClient(sessions))
    """

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        kwargs: dict[str, Any] = {}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
        self.engine = create_engine(self.url, **kwargs)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._write_engine = self.engine.execution_options(write_lock=True)
        # Reads on PostgreSQL skip BEGIN/ROLLBACK: nothing to hold between statements.
        self._read_engine = (
            self.engine if self.is_sqlite else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self._read_engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        with Session(self._write_engine, expire_on_commit=False) as session:
            with session.begin():
                yield session

    def dispose(self) -> None:
        self.engine.dispose()
