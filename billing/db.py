"""Database engine, sessions and the declarative base shared by every table.

Transactions are short and never span a Stripe call: the sandbox emulator writes
to the same database on its own connections, and on SQLite a writer held across
a Stripe call would block it. `Database.write()` takes the write lock up front
(BEGIN IMMEDIATE on SQLite, a normal transaction plus row locks on PostgreSQL).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Self

import psycopg
from psycopg import pq
from sqlalchemy import Connection, Engine, Executable, create_engine, event, func, select, text
from sqlalchemy.engine.base import ExceptionContextImpl
from sqlalchemy.exc import DBAPIError, DisconnectionError, StatementError
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

from billing import metrics

log = logging.getLogger("billing.db")


class Base(DeclarativeBase):
    @classmethod
    def loaded(cls, pairs: Iterable[tuple[str, Any]]) -> Self:
        """An instance holding `pairs` (attribute, value) as if loaded, in no session: rows read
        as columns, handed out as instances at a tenth of the constructor's cost (no events)."""
        instance: Self = cls.__mapper__.class_manager.new_instance()
        instance.__dict__.update(pairs)
        return instance


def normalize_database_url(url: str) -> str:
    """Heroku writes `postgres://`; SQLAlchemy wants a driver-qualified URL."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
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


# For this transaction only (SET LOCAL's effect), as a function: in a pipeline's implicit
# transaction (`in_one_round_trip`) SET LOCAL warns that it is outside a transaction block.
_NO_WAIT_FOR_DISK_SQL = "SELECT set_config('synchronous_commit', 'off', true)"
_NO_WAIT_FOR_DISK = text(_NO_WAIT_FOR_DISK_SQL)

# A pooled connection is pinged before use only when it sat idle long enough to have been
# dropped unseen (a restart, a failover, an idle timeout), or in the seconds after a database
# error (`Database.suspect_pooled`: the outage that caused it may have cut every connection).
# Under load each is reused within milliseconds, and a ping at every checkout was a round trip
# in every request (a quarter of a webhook's ack).
PING_IDLE_SECONDS = 1.0
PING_AFTER_ERROR_SECONDS = 5.0


def _ping_when_idle(engine: Engine, suspect_since: list[float]) -> None:
    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None:
            return  # just connected
        now = time.monotonic()
        if now - idle_since < PING_IDLE_SECONDS and now - suspect_since[0] > PING_AFTER_ERROR_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            if engine.dialect.is_disconnect(error, dbapi_connection, None):
                raise DisconnectionError("stale pooled connection") from error  # the pool connects anew
            raise


class MeasuredQueuePool(QueuePool):
    """SQLAlchemy's pool, that counts and times the checkouts that find every connection
    in use (all `pool_size + max_overflow` opened, none idle): they wait for one."""

    def _do_get(self) -> ConnectionPoolEntry:
        if self.checkedin() or self.overflow() < self._max_overflow:
            return super()._do_get()
        started = time.perf_counter()
        try:
            return super()._do_get()
        finally:
            metrics.db_pool_waits.inc()
            metrics.db_pool_wait_duration.observe(time.perf_counter() - started)


def _count_checkout(_dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    metrics.db_pool_checkouts.inc()


@dataclass
class _SharedReads:
    database: Database
    outer: _SharedReads | None
    connection: Connection | None = None
    locks: Counter[str] = field(default_factory=Counter)  # advisory locks held on `connection`, by name


def _advisory_key(name: str) -> int:
    """A signed 64-bit key for a name (a collision only makes two names wait for each other)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


# On PostgreSQL a request's reads share one pooled connection (one checkout a
# request, not one a read); see `Database.begin_request`.
_shared: ContextVar[_SharedReads | None] = ContextVar("shared_reads", default=None)


@dataclass(slots=True)
class _Told:
    """A statement the fast paths run on the driver's cursor (`fetch_columns`, `in_one_round_trip`),
    told to the engine's listeners as SQLAlchemy's execute tells them: before it runs (they may
    change its SQL: a comment), then after it, or of its error (statement counts, traces)."""

    cursor: Any
    sql: str
    params: Any
    context: Any  # what a listener keeps from before to after (a trace's span)

    @classmethod
    def before(cls, connection: Connection, cursor: Any, sql: str, params: Any) -> _Told:
        if not (connection._has_events or connection.engine._has_events):
            return cls(cursor, sql, params, None)
        context = SimpleNamespace()
        for before in connection.dispatch.before_cursor_execute:
            sql, params = before(connection, cursor, sql, params, context, False)
        return cls(cursor, sql, params, context)

    def after(self, connection: Connection) -> None:
        if self.context is not None:
            for after in connection.dispatch.after_cursor_execute:
                after(connection, self.cursor, self.sql, self.params, self.context, False)

    def failed(self, connection: Connection, error: Exception, wrapped: StatementError, cut: bool) -> None:
        if self.context is not None and connection.dialect._has_events:  # (SQLAlchemy 2: the dialect's)
            for handle in connection.dialect.dispatch.handle_error:
                handle(
                    ExceptionContextImpl(
                        error,
                        wrapped,
                        connection.engine,
                        connection.dialect,
                        connection,
                        self.cursor,
                        self.sql,
                        self.params,
                        self.context,
                        cut,
                        False,
                        False,
                    )
                )


class Database:
    """One engine per process; `read()` and `write()` hand out short sessions."""

    def __init__(self, url: str, *, pool_size: int = 8, max_overflow: int = 0) -> None:
        """`pool_size + max_overflow` is the most connections this process opens
        to PostgreSQL (README: Deploying to production sums them)."""
        self.url = normalize_database_url(url)
        self._suspect_since = [float("-inf")]  # monotonic time of the last database error
        kwargs: dict[str, Any] = {"future": True}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            # A pooled connection autocommits: the reads' way (no BEGIN/ROLLBACK, two round trips
            # fewer), and the most frequent checkout; a write's turns it off for its transaction
            # (`_write_engine`), and SQLAlchemy turns it back on when it is returned.
            kwargs.update(
                pool_size=pool_size,
                max_overflow=max_overflow,
                poolclass=MeasuredQueuePool,
                isolation_level="AUTOCOMMIT",
            )
        self.engine = create_engine(self.url, **kwargs)
        event.listen(self.engine, "checkout", _count_checkout)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        else:
            _ping_when_idle(self.engine, self._suspect_since)
        self._write_engine = self.engine.execution_options(
            write_lock=True, **({} if self.is_sqlite else {"isolation_level": "READ COMMITTED"})
        )
        self._compiled_statements: dict[Executable, Any] = {}  # in_one_round_trip's
        self._positional: Any = None
        self._layouts: dict[tuple[Any, ...], tuple[str, list[tuple[str, int | None, Any]]]] = {}
        self._result_processors: dict[Executable, list[Any] | None] = {}  # fetch_columns'
        # psycopg's pipeline needs libpq 14 or later (its binary package ships one).
        self.has_round_trip_transactions = not self.is_sqlite and psycopg.Pipeline.is_supported()

    def suspect_pooled(self) -> None:
        """A statement failed for the database's sake (down, restarting, cut off): for the next
        PING_AFTER_ERROR_SECONDS, ping each connection before its use, however recently used."""
        self._suspect_since[0] = time.monotonic()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads (each statement sees committed data; nothing is held)."""
        shared = _shared.get()
        if shared is None or shared.database is not self:
            with Session(self.engine, expire_on_commit=False) as session:
                yield session
            return
        if shared.connection is None:
            shared.connection = self.engine.connect()
        with Session(shared.connection, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def columns(self) -> Iterator[Connection]:
        """A connection for reads of columns, not ORM objects (each statement sees committed
        data): no Session to set up and tear down. Inside a request on PostgreSQL, the one
        its reads share."""
        shared = _shared.get()
        if shared is None or shared.database is not self:
            with self.engine.connect() as connection:
                yield connection
                connection.commit()
            return
        if shared.connection is None:
            shared.connection = self.engine.connect()
        try:
            yield shared.connection
        finally:
            shared.connection.commit()  # ends SQLAlchemy's own begin (the database has none)

    def fetch_columns(
        self, connection: Connection, statement: Executable, params: Mapping[str, Any]
    ) -> Sequence[Sequence[Any]]:
        """`connection.execute(statement, params).all()` (a read on a connection of `columns()`), for
        the reads every request makes (the access checks): on PostgreSQL the statement is compiled
        once and run on the driver's cursor, its parameters and columns processed as SQLAlchemy
        would (a third less Python than SQLAlchemy's execute, whose set-up is per statement), and
        told to the engine's listeners as SQLAlchemy's own are (`_Told`). SQLite's go through
        SQLAlchemy."""
        if self.is_sqlite:
            return connection.execute(statement, params).all()
        sql, values = self._expanded(statement, params)
        if statement not in self._result_processors:
            dialect = self.engine.dialect
            found = [column.type._cached_result_processor(dialect, None) for column in statement.selected_columns]  # type: ignore[attr-defined]
            self._result_processors[statement] = found if any(found) else None
        processors = self._result_processors[statement]
        driver = connection.connection.driver_connection
        assert driver is not None
        cursor = psycopg.RawCursor(driver)
        told = _Told.before(connection, cursor, sql, values)
        try:
            cursor.execute(told.sql, told.params)
            rows: list[Any] = cursor.fetchall()
        except self.engine.dialect.loaded_dbapi.Error as error:
            raise self._driver_error(error, connection, [told]) from error
        finally:
            cursor.close()
        told.after(connection)
        if processors is None:
            return rows
        return [
            tuple(value if process is None else process(value) for process, value in zip(processors, row, strict=True))
            for row in rows
        ]

    def begin_request(self) -> None:
        """From here until `end_request`, reads share one connection. PostgreSQL
        only: its reads autocommit, so the connection holds no snapshot or row
        lock between them (SQLite's would hold a read transaction open); the
        request's advisory locks live on it (`try_lock`). A request
        made inside a request (a webhook delivered in-process) gets its own."""
        if not self.is_sqlite:
            _shared.set(_SharedReads(self, outer=_shared.get()))

    def end_request(self) -> None:
        shared = _shared.get()
        if shared is not None and shared.database is self:
            _shared.set(shared.outer)
            if shared.connection is not None:
                if +shared.locks:  # a holder that never let go: only closing the connection frees its locks
                    log.warning("advisory locks still held at the end of a request; their connection is discarded")
                    shared.connection.invalidate()
                shared.connection.close()

    # -- advisory locks: held by the connection, so they die with the process --

    @contextmanager
    def lock_scope(self) -> Iterator[None]:
        """PostgreSQL: where `try_lock` may be used. A request is one; outside
        a request the block becomes one (its reads share the connection the
        locks live on, so it costs no connection more)."""
        shared = _shared.get()
        if shared is not None and shared.database is self:
            yield
            return
        self.begin_request()
        try:
            yield
        finally:
            self.end_request()

    def _scope(self) -> tuple[_SharedReads, Connection]:
        assert not self.is_sqlite, "SQLite has no advisory locks"
        shared = _shared.get()
        assert shared is not None and shared.database is self, "outside a lock scope"
        if shared.connection is None:
            shared.connection = self.engine.connect()
        return shared, shared.connection

    def try_lock(self, name: str) -> bool:
        """PostgreSQL, in a lock scope: take the session-level advisory lock
        `name` on the scope's connection if it is free. It is held until
        `unlock`, or until the connection ends: PostgreSQL releases it when the
        process dies, so no holder can leave it behind."""
        shared, connection = self._scope()
        taken = bool(connection.scalar(select(func.pg_try_advisory_lock(_advisory_key(name)))))
        connection.commit()  # ends SQLAlchemy's own begin (the connection autocommits)
        if taken:
            shared.locks[name] += 1
        return taken

    def unlock(self, name: str) -> None:
        shared, connection = self._scope()
        shared.locks[name] -= 1
        try:
            released = bool(connection.scalar(select(func.pg_advisory_unlock(_advisory_key(name)))))
            connection.commit()
        except DBAPIError:
            released = False
        if not released:
            # The connection broke (its locks went with it) or is in doubt:
            # never hand a connection that may still hold a lock back to the pool.
            log.warning("advisory lock %s: unlock failed; its connection is discarded", name)
            connection.invalidate()
            connection.close()
            shared.connection, shared.locks = None, Counter()

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """PostgreSQL only: a connection on which each statement commits alone; inside
        a request, the one its reads share (no pool checkout and ping). For one-statement
        writes that need no transaction (billing.budget's counters)."""
        assert not self.is_sqlite, "SQLite: use write()"
        with self.columns() as connection:  # on PostgreSQL its connection autocommits
            yield connection

    @contextmanager
    def write(self, *, wait_for_disk: bool = True) -> Iterator[Session]:
        """A session that holds the write lock and commits on a clean exit.

        `wait_for_disk=False` (PostgreSQL): the commit returns once the change is in
        PostgreSQL's memory, visible to every reader and safe from a crash of the
        service, not once it is on disk; PostgreSQL writes it there within a fraction
        of a second (`wal_writer_delay`, three times over at most), and a crash of
        PostgreSQL itself in that window loses it. For writes that hold a lock that
        others queue on, and whose loss the caller can tolerate (README: what a 200 means)."""
        with Session(self._write_engine, expire_on_commit=False) as session:
            with session.begin():
                if not wait_for_disk and not self.is_sqlite:
                    session.execute(_NO_WAIT_FOR_DISK)
                yield session

    def in_one_round_trip(
        self, statements: Sequence[tuple[Executable, Mapping[str, Any]]], *, wait_for_disk: bool = True
    ) -> list[tuple[list[tuple[Any, ...]], int]]:
        """PostgreSQL (`has_round_trip_transactions`): run `statements` in one transaction sent
        as one round trip, and answer each one's rows and rowcount. They go out as one pipeline
        on the connection (which autocommits) with no BEGIN or COMMIT: statements sent before a
        pipeline's sync are one implicit transaction, committed at the sync if all succeeded and
        rolled back if any failed (PostgreSQL's protocol, "Pipelining"). No statement can depend
        on an earlier one's answer, but each sees what the earlier ones did, and a row lock one
        takes is held by the server alone: no client round trip, no Python, runs while it is
        held. Each is compiled once, its parameters processed as SQLAlchemy would, and told to the
        engine's listeners as SQLAlchemy's own are (`_Told`); when the transaction fails, each
        of its statements is told of the error. `wait_for_disk` as in `write()`."""
        assert self.has_round_trip_transactions, "SQLite, or a libpq without pipelines: use write()"
        expanded = [self._expanded(statement, params) for statement, params in statements]
        if not wait_for_disk:
            expanded.insert(0, (_NO_WAIT_FOR_DISK_SQL, []))
        with self.columns() as connection:
            driver = connection.connection.driver_connection
            assert driver is not None
            cursors: list[psycopg.RawCursor[Any]] = []
            told: list[_Told] = []
            try:
                with driver.pipeline():
                    try:
                        for sql, params in expanded:
                            cursor = psycopg.RawCursor(driver)
                            told.append(_Told.before(connection, cursor, sql, params))
                            cursors.append(cursor.execute(told[-1].sql, told[-1].params))
                    except BaseException:
                        # Raised here, not by the server (a value psycopg can't send, a listener):
                        # the pipeline's exit still syncs, which would commit what went out before.
                        with suppress(Exception):  # a cut connection: nothing committed
                            driver.execute("ROLLBACK")  # (the server warns: no explicit transaction)
                        raise
            except self.engine.dialect.loaded_dbapi.Error as error:
                raise self._driver_error(error, connection, told) from error
            except BaseException:
                connection.invalidate()  # in doubt: its transaction may still be open
                raise
            for each in told:
                each.after(connection)
            if not wait_for_disk:
                cursors.pop(0)  # the setting's
            # (`description` would build its columns' descriptions, per statement)
            rows = pq.ExecStatus.TUPLES_OK
            return [
                (cursor.fetchall() if cursor.pgresult and cursor.pgresult.status == rows else [], cursor.rowcount)
                for cursor in cursors
            ]

    def _driver_error(self, error: Any, connection: Connection, told: Sequence[_Told]) -> StatementError:
        """A driver's error raised on its cursor, as SQLAlchemy raises it (the 503 handler knows its
        own); a connection the error cut is not handed back to the pool. `told`: the statements
        it failed (a round trip's all: its transaction failed whole), each told to the engine's
        `handle_error` listeners (a trace's span ends with the error)."""
        cut = self.engine.dialect.is_disconnect(error, connection.connection.driver_connection, None)
        if cut:
            connection.invalidate()
        wrapped: StatementError = DBAPIError.instance(
            "; ".join(each.sql for each in told),
            told[0].params if len(told) == 1 else None,
            error,
            self.engine.dialect.loaded_dbapi.Error,
            connection_invalidated=cut,
            dialect=self.engine.dialect,
        )
        for each in told:
            each.failed(connection, error, wrapped, cut)
        return wrapped

    def _expanded(self, statement: Executable, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """The SQL and parameters SQLAlchemy would hand the driver, compiled once a statement with
        PostgreSQL's own placeholders ($1) for a `psycopg.RawCursor` (psycopg converts a
        statement's `%(name)s` on each run unless it is under 4 KB, and a usage report's is not),
        and expanded once a shape (the lengths of its `IN` lists)."""
        compiled = self._compiled_statements.get(statement)
        if compiled is None:
            compiled = self._compiled_statements[statement] = statement.compile(dialect=self._positional_dialect())  # type: ignore[attr-defined]
        values = compiled.construct_params(params)
        lists = tuple(name for name, bind in compiled.binds.items() if bind.expanding)
        shape = (statement, *(len(values[name]) for name in lists))
        layout = self._layouts.get(shape)
        if layout is None:
            state = compiled.construct_expanded_state(params)
            # Each placeholder's value: a parameter, or an element of a list (`ids_2` is ids[1]).
            layout = self._layouts[shape] = (
                state.statement,
                [
                    (name, None, state.processors.get(name))
                    if name in values
                    else (name.rpartition("_")[0], int(name.rpartition("_")[2]) - 1, state.processors.get(name))
                    for name in state.positiontup
                ],
            )
        sql, places = layout
        out = []
        for name, index, processor in places:
            value = values[name] if index is None else values[name][index]
            out.append(processor(value) if processor is not None else value)
        return sql, out

    def _positional_dialect(self) -> Any:
        """The engine's dialect (as it was set up on connecting), with `$1` placeholders."""
        if self._positional is None:
            dialect = copy.copy(self.engine.dialect)
            dialect.paramstyle, dialect.positional = "numeric_dollar", True
            dialect.identifier_preparer = dialect.preparer(dialect)  # it doubles %s for `format` styles
            self._positional = dialect
        return self._positional

    def dispose(self) -> None:
        self.engine.dispose()
