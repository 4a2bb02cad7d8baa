"""Background work, on Huey: applying Stripe's events, the sweep, reconcile.

Huey keeps its queue in the service's own database engine, so there is no new
service to run: PostgreSQL in production (`PostgresHuey`, woken by LISTEN/
NOTIFY), a SQLite file beside the service's in development (`SqliteHuey`).
Workers are `flask --app app worker` processes (the Procfile's `worker:`),
as many as wanted, on any machines that reach the database.

A task is only a nudge: what must happen is in the inbox of events
(`billing.webhooks.inbox`), so a task lost with a killed worker, or a queue
that was wiped, loses nothing: the sweep, every minute, queues again whatever
has waited unclaimed for a minute. Periodic tasks run wherever a worker runs;
each is safe to run twice at once (reconcile holds a lease).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import psycopg
from flask import Flask
from huey import Huey, PostgresHuey, SqliteHuey, crontab
from huey.api import TaskWrapper
from sqlalchemy import make_url

from billing.config import Config
from billing.errors import ApiError
from billing.webhooks.inbox import Backlog

log = logging.getLogger("billing.jobs")

RECONCILE_LEASE = "reconcile"
BACKLOG_TTL_SECONDS = 5.0


def queue_storage(config: Config) -> Huey:
    """The Huey instance on the service's database."""
    url = make_url(config.database_url)
    if url.get_backend_name() == "sqlite":
        database = Path(url.database or "billing.sqlite3")
        filename = database.with_name(database.stem + "-queue.sqlite3")
        return SqliteHuey("billing", filename=str(filename), results=False, utc=True)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    # A task is a nudge, not the record (the inbox is): its commit needn't wait for
    # the disk. One lost in a crash of PostgreSQL is queued again by the sweep.
    huey = PostgresHuey(
        "billing",
        dsn=dsn,
        results=False,
        utc=True,
        read_timeout=1,
        options="-c synchronous_commit=off",
        create_tables=False,
    )
    _create_queue_tables(huey, dsn)
    return huey


# Any constant: the advisory lock under which a process creates Huey's tables.
_QUEUE_TABLES_LOCK = 0x6875657900


def _create_queue_tables(huey: Huey, dsn: str) -> None:
    """Huey's tables, created (if absent) by one process at a time. PostgreSQL refuses a
    CREATE TABLE IF NOT EXISTS to all but one of the processes that run it at once on a new
    database (a duplicate row in pg_type), and the Procfile's web and worker processes start
    together: on a first deploy one of them crashed at start."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("SELECT pg_advisory_lock(%s)", (_QUEUE_TABLES_LOCK,))
        huey.storage.initialize_schema()  # its own connection; the lock is released with ours


class JobQueue:
    """The service's tasks on one Huey instance, each run in the app's context."""

    def __init__(self, app: Flask, huey: Huey, *, reconcile_every_minutes: int = 60) -> None:
        self.app = app
        self.huey = huey
        self._backlog: tuple[float, Backlog] | None = None
        self._apply: TaskWrapper = huey.task(name="apply_stripe_events")(self._apply_task)
        huey.periodic_task(crontab(minute="*"), name="sweep")(self._sweep_task)
        if reconcile_every_minutes > 0:
            huey.periodic_task(crontab(minute=f"*/{reconcile_every_minutes}"), name="reconcile")(self._reconcile_task)

    # -- asking -------------------------------------------------------------

    def apply_later(self, object_key: str, delay: float = 0.0) -> None:
        """Have a worker apply the events waiting about this object (after `delay` seconds)."""
        if delay > 0:
            # Straight onto Huey's schedule: one insert. (`schedule()` queues the task, for a
            # worker to take it and put it on the schedule: four round trips here, three there.)
            self.huey.add_schedule(self._apply.s(object_key, delay=delay))
        else:
            self._apply(object_key)

    def backlog(self, max_age: float = BACKLOG_TTL_SECONDS) -> Backlog:
        """How far the copy lags behind Stripe, read at most every `max_age`
        seconds per process (every request's log line carries it)."""
        from billing.state import current
        from billing.webhooks import inbox

        now = time.monotonic()
        if self._backlog is None or now - self._backlog[0] > max_age:
            self._backlog = (now, inbox.backlog(current().db))
        return self._backlog[1]

    # -- the tasks ------------------------------------------------------------

    def _apply_task(self, object_key: str) -> None:
        from billing.state import current
        from billing.webhooks.service import apply_object

        with self.app.app_context():
            state = current()
            db = state.db
            db.begin_request()  # the task's reads share one connection, as a request's do
            try:
                retry_in = apply_object(state, object_key)
            finally:
                db.end_request()
        if retry_in is not None:
            self.apply_later(object_key, retry_in)

    def _sweep_task(self) -> None:
        with self.app.app_context():
            for key in sweep():
                self.apply_later(key)

    def _reconcile_task(self) -> None:
        from billing.leases import lease
        from billing.reconcile import reconcile
        from billing.state import current

        with self.app.app_context():
            try:
                state = current()
                with lease(state.db, RECONCILE_LEASE, ttl=3600, wait=0):
                    report = reconcile(state)
            except ApiError:  # another worker is reconciling
                return
        (log.warning if report.failed else log.info)("reconcile", extra={"event": "reconcile", **report.__dict__})

    # -- running --------------------------------------------------------------

    def run_queued(self) -> int:
        """Run the tasks queued now, here (not the scheduled ones); returns how many."""
        ran = 0
        # Counted first: on PostgreSQL an empty queue's dequeue waits (LISTEN) for a second.
        while self.huey.pending_count() and (task := self.huey.dequeue()) is not None:
            self.huey.execute(task)
            ran += 1
        return ran

    def consumer(self, workers: int) -> Any:
        # TERM is Heroku's (and systemd's) stop signal: finish the tasks in hand first.
        return self.huey.create_consumer(
            workers=workers,
            worker_type="thread",
            periodic=True,
            max_delay=1.0,
            check_worker_health=True,
            graceful_signal="TERM",
        )


def sweep() -> list[str]:
    """Clean up what has outlived its guarantee, and return the objects whose
    events wait unclaimed (their task was lost): the caller queues them."""
    from billing import idempotency, leases
    from billing.audit import service as audit
    from billing.organizations import capacity
    from billing.state import current
    from billing.webhooks import inbox

    state = current()
    db = state.db
    removed = {
        "events": inbox.delete_applied(db),
        "idempotency_keys": idempotency.delete_expired(db),
        "leases": leases.delete_expired(db),
        "capacity_holds": capacity.delete_expired_holds(db),
        "audit_events": audit.delete_expired(db, state.config.audit_retention_days),
    }
    if any(removed.values()):
        log.info("clean-up", extra={"event": "cleanup", **removed})
    return inbox.due_keys(db, idle_for=inbox.STRANDED_AFTER)


def apply_due() -> int:
    """Apply, here and now, every event that may run (tests, `worker --burst`,
    reconcile); returns how many objects were worked."""
    from billing.state import current
    from billing.webhooks import inbox
    from billing.webhooks.service import apply_object

    state = current()
    worked = 0
    while keys := inbox.due_keys(state.db):
        for key in keys:
            apply_object(state, key)
        worked += len(keys)
    return worked
