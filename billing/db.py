"""Database engine, sessions and the declarative base shared by every table.

Transactions are short and never span a Stripe call: the sandbox emulator writes
to the same database on its own connections, and on SQLite a writer held across
a Stripe call would block it. `Database.write()` takes the write lock up front
(BEGIN IMMEDIATE on SQLite, a normal transaction plus row locks on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session


class Base(DeclarativeBase):
    pass


def normalize_database_url(url: str) -> str:
    """Heroku writes `postgres://`; SQLAlchemy wants a driver-qualified URL."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own
        # transaction handling would start transactions lazily and deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get("write_lock"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


@dataclass
class _SharedReads:
    database: Database
    outer: _SharedReads | None
    connection: Connection | None = None


# On PostgreSQL a request's reads share one pooled connection (one checkout and
# pre-ping a request, not one a read); see `Database.begin_request`.
_shared: ContextVar[_SharedReads | None] = ContextVar("shared_reads", default=None)


class Database:
    """One engine per process; `read()` and `write()` hand out short sessions."""

    def __init__(self, url: str, *, pool_size: int = 8, max_overflow: int = 0) -> None:
        """`pool_size + max_overflow` is the most connections this process opens
        to PostgreSQL (README: Deploying to production sums them)."""
        self.url = normalize_database_url(url)
        kwargs: dict[str, Any] = {"future": True}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow)
        self.engine = create_engine(self.url, **kwargs)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._write_engine = self.engine.execution_options(write_lock=True)
        # Reads on PostgreSQL skip BEGIN/ROLLBACK: two round trips fewer per read.
        self._read_engine = (
            self.engine if self.is_sqlite else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads (each statement sees committed data; nothing is held)."""
        shared = _shared.get()
        if shared is None or shared.database is not self:
            with Session(self._read_engine, expire_on_commit=False) as session:
                yield session
            return
        if shared.connection is None:
            shared.connection = self._read_engine.connect()
        with Session(shared.connection, expire_on_commit=False) as session:
            yield session

    def begin_request(self) -> None:
        """From here until `end_request`, reads share one connection. PostgreSQL
        only: its reads autocommit, so the connection holds no snapshot or row
        lock between them (SQLite's would hold a read transaction open); the
        request's leases live on it (`held_connection`). A request
        made inside a request (a webhook delivered in-process) gets its own."""
        if not self.is_sqlite:
            _shared.set(_SharedReads(self, outer=_shared.get()))

    def end_request(self) -> None:
        shared = _shared.get()
        if shared is not None and shared.database is self:
            _shared.set(shared.outer)
            if shared.connection is not None:
                shared.connection.close()

    @contextmanager
    def held_connection(self) -> Iterator[Connection]:
        """PostgreSQL only: a connection kept for the whole block, for session
        state that must die with the process (`billing.leases`' advisory locks):
        the request's shared one, or outside a request one opened for the block,
        which the block's reads then share (so it costs no connection more)."""
        assert not self.is_sqlite, "SQLite has no session state to hold"
        shared = _shared.get()
        if shared is not None and shared.database is self:
            if shared.connection is None:
                shared.connection = self._read_engine.connect()
            yield shared.connection
            return
        self.begin_request()
        try:
            shared = _shared.get()
            assert shared is not None
            shared.connection = self._read_engine.connect()
            yield shared.connection
        finally:
            self.end_request()

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """PostgreSQL only: a connection on which each statement commits alone; inside
        a request, the one its reads share (no pool checkout and ping). For one-statement
        writes that need no transaction (billing.budget's counters)."""
        assert not self.is_sqlite, "SQLite: use write()"
        shared = _shared.get()
        if shared is not None and shared.database is self:
            if shared.connection is None:
                shared.connection = self._read_engine.connect()
            try:
                yield shared.connection
            finally:
                shared.connection.commit()  # ends SQLAlchemy's own begin (the database has none)
            return
        with self._read_engine.connect() as connection:
            yield connection
            connection.commit()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session that holds the write lock and commits on a clean exit."""
        with Session(self._write_engine, expire_on_commit=False) as session:
            with session.begin():
                yield session

    def dispose(self) -> None:
        self.engine.dispose()
