"""Sandbox time: real time plus an offset kept in `sandbox_clock`, and what it makes happen.

Every emulated timestamp (created, trial ends, periods) comes from here, so
advancing the offset moves the whole sandbox into the future. The offset only
grows: lists are ordered by creation time. (Idempotency keys and webhook
deliveries' leases and signatures run on real time; their retries, like
Stripe's, come due in sandbox time.)

`SandboxClock.advance_and_process()` moves the clock and then runs every
transition that has come due (trial ends, renewals, cancellations, ...), one
at a time in time order, each at its own moment and in its own transaction:
objects store when they next change in the indexed `due_at` column, so only
due rows are visited. On PostgreSQL several threads share the work, each
taking its own customers' rows, so one customer's transitions still run in
time order. Time does nothing by itself otherwise: `process_due()` runs what
real time has made due.

`advance_in_background()` is the same advance as Stripe's test clocks do it
(POST /v1/test_helpers/test_clocks/:id/advance): it moves the clock, answers
at once with status `advancing`, and runs the transitions on a thread of this
process; `reading()` then says `advancing` until they have run, `ready`
after, `internal_failure` if they failed. The status lives in the clock's
row, so every process reads it; the running thread renews a lease on it, and
a run whose process died reads `internal_failure` once its lease runs out.
Like Stripe, a second advance while one is running is refused
(`ClockAdvancing`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic  # heartbeats run on real elapsed time, whatever sandbox time does
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from stripe_sandbox import dunning
from stripe_sandbox.api import build_router
from stripe_sandbox.database import SessionSource
from stripe_sandbox.models import SandboxClockState, SandboxObject, insert_if_absent
from stripe_sandbox.router import Router
from stripe_sandbox.store import DEFAULT_PUBLIC_URL, Store

if TYPE_CHECKING:  # webhooks.py reads sandbox time from here
    from stripe_sandbox.webhooks import WebhookSender

logger = logging.getLogger(__name__)

_ROW_ID = 1
# A transition that fails to move its object's due_at forward would loop forever.
MAX_TRANSITIONS = 100_000


# Stripe's test clock statuses (`status` of a test_helpers.test_clock).
ADVANCING = "advancing"
READY = "ready"
INTERNAL_FAILURE = "internal_failure"


class ClockAdvancing(Exception):
    """An advance was asked for while an earlier one is still running (Stripe refuses it too)."""


@dataclass(frozen=True)
class ClockReading:
    now: int
    status: str
    advanced_to: int | None = None  # where the last background advance moved the clock


def _run_status(row: SandboxClockState | None, real_now: float) -> str:
    if row is None:
        return READY
    if row.status == ADVANCING and (row.lease_until is None or row.lease_until <= real_now):
        return INTERNAL_FAILURE  # its process died (or hung) without saying how it ended
    return row.status


def _seconds(seconds: float, minutes: float, hours: float, days: float) -> int:
    delta = math.ceil(seconds + 60 * minutes + 3600 * hours + 86400 * days)
    if delta < 0:
        raise ValueError("the sandbox clock only moves forward")
    return delta


def read_offset(session: Session) -> int:
    row = session.get(SandboxClockState, _ROW_ID)
    return row.offset_seconds if row is not None else 0


def sandbox_time(session: Session) -> float:
    """Current sandbox time (unix seconds, fractional) as seen by `session`."""
    return time.time() + read_offset(session)


def _locked_row(session: Session) -> SandboxClockState:
    insert_if_absent(session, SandboxClockState, {"id": _ROW_ID, "offset_seconds": 0})
    row = session.get(SandboxClockState, _ROW_ID, with_for_update=True, populate_existing=True)
    assert row is not None
    return row


class _Count:
    """Transitions run so far, by all of one advance's worker threads."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self) -> int:
        with self._lock:
            self.value += 1
            return self.value


def _row_of_run(session: Session, run_id: str) -> SandboxClockState | None:
    """The clock's row, locked, while `run_id` is its run: once a run's lease has
    expired and a later advance took over, the late run's end or heartbeat is not its to write."""
    row = _locked_row(session)
    return row if row.run_id == run_id else None


class SandboxClock:
    """Read and advance the sandbox clock shared by every process using `database`."""

    def __init__(
        self,
        database: SessionSource,
        *,
        router: Router | None = None,
        webhooks: WebhookSender | None = None,
        lease_seconds: float = 30.0,
        workers: int = 4,
        public_url: str = DEFAULT_PUBLIC_URL,
    ) -> None:
        dunning.settings()  # a SANDBOX_RETRY_* the sandbox can't use stops it at start, not at a renewal
        self._database = database
        self._router = router
        self._public_url = public_url  # the host's origin (renewal invoices' hosted pages)
        # Told after processing, to deliver the events it recorded.
        self._webhooks = webhooks
        # A background run renews its lease every third of it (one transition takes milliseconds).
        self._lease_seconds = lease_seconds
        # Threads running transitions on PostgreSQL (SQLite runs one writer at a time anyway).
        self._workers = workers
        self._runs: list[threading.Thread] = []

    def offset(self) -> int:
        with self._database.read() as session:
            return read_offset(session)

    def now(self) -> int:
        with self._database.read() as session:
            return int(sandbox_time(session))

    def reading(self) -> ClockReading:
        """Sandbox time, and the status of the last background advance (any process's)."""
        with self._database.read() as session:
            row = session.get(SandboxClockState, _ROW_ID)
            real_now = time.time()
            return ClockReading(
                int(real_now + (row.offset_seconds if row else 0)),
                _run_status(row, real_now),
                row.advanced_to if row else None,
            )

    def published(self) -> ClockReading:
        """`reading()`, but `advancing` while an event it recorded is still to be delivered: what
        came due is not observable until its webhooks are out (as Stripe's test clock is `ready`
        only once what it ran is done)."""
        reading = self.reading()
        if reading.status == READY and self._webhooks is not None and self._webhooks.deliveries_due():
            return ClockReading(reading.now, ADVANCING, reading.advanced_to)
        return reading

    def advance(self, seconds: float = 0, *, minutes: float = 0, hours: float = 0, days: float = 0) -> int:
        """Move the clock forward; returns the new sandbox time."""
        delta = _seconds(seconds, minutes, hours, days)
        with self._database.write() as session:
            row = _locked_row(session)
            row.offset_seconds += delta
            return int(time.time()) + row.offset_seconds

    def advance_to(self, timestamp: int) -> int:
        """Move the clock forward so that it reads at least `timestamp`."""
        with self._database.write() as session:
            row = _locked_row(session)
            behind = timestamp - (time.time() + row.offset_seconds)
            if behind > 0:
                row.offset_seconds += math.ceil(behind)
            return int(time.time()) + row.offset_seconds

    def advance_and_process(self, seconds: float = 0, *, minutes: float = 0, hours: float = 0, days: float = 0) -> int:
        """Move the clock forward and run everything that came due; returns the new sandbox time."""
        now = self.advance(seconds, minutes=minutes, hours=hours, days=days)
        if not self.process_due() and self._webhooks is not None:
            self._webhooks.notify()  # nothing ran, but failed deliveries' retries may have come due
        return now

    def advance_in_background(
        self, seconds: float = 0, *, minutes: float = 0, hours: float = 0, days: float = 0
    ) -> ClockReading:
        """Move the clock forward now and run what came due on a thread; answers `advancing` at once.

        Raises `ClockAdvancing` while an earlier background advance is running.
        """
        delta = _seconds(seconds, minutes, hours, days)
        run_id = uuid.uuid4().hex
        with self._database.write() as session:
            row = _locked_row(session)
            real_now = time.time()
            if _run_status(row, real_now) == ADVANCING:
                raise ClockAdvancing("the sandbox clock is advancing: wait until it is ready")
            row.offset_seconds += delta
            row.status, row.run_id, row.lease_until = ADVANCING, run_id, real_now + self._lease_seconds
            now = int(real_now) + row.offset_seconds
            row.advanced_to = now
        thread = threading.Thread(target=self._run, args=(run_id,), name="sandbox-clock", daemon=True)
        self._runs = [run for run in self._runs if run.is_alive()] + [thread]
        thread.start()
        return ClockReading(now, ADVANCING, now)

    def wait_for_runs(self, timeout: float | None = None) -> None:
        """Wait for this process's background advances to end (tests, shutdown)."""
        for run in list(self._runs):
            run.join(timeout)

    def _run(self, run_id: str) -> None:
        try:
            self.process_due(heartbeat=lambda: self._renew(run_id))
        except Exception:
            logger.exception("sandbox clock: advancing failed")
            self._end_run(run_id, INTERNAL_FAILURE)
        else:
            self._end_run(run_id, READY)

    def _renew(self, run_id: str) -> None:
        with self._database.write() as session:
            row = _row_of_run(session, run_id)
            if row is not None:
                row.lease_until = time.time() + self._lease_seconds

    def _end_run(self, run_id: str, status: str) -> None:
        with self._database.write() as session:
            row = _row_of_run(session, run_id)
            if row is not None:
                row.status, row.lease_until = status, None

    def process_due(self, heartbeat: Callable[[], None] | None = None) -> int:
        """Run every transition due by now, earliest first; returns how many ran.

        On PostgreSQL `workers` threads share the work, each taking the customers
        whose id hashes to its share: one customer's transitions still run one at
        a time in time order, as before; different customers' never depended on
        each other. `heartbeat` is called every third of the lease while running.
        """
        router = self._router or build_router()
        self._router = router
        ran = _Count()
        try:
            if self._workers > 1 and self._dialect() == "postgresql":
                self._process_shared(router, heartbeat, ran)
            else:
                self._process_share(router, None, heartbeat, threading.Event(), ran)
        finally:
            if ran.value and self._webhooks is not None:
                self._webhooks.notify()
        return ran.value

    def _dialect(self) -> str:
        with self._database.read() as session:
            return session.get_bind().dialect.name

    def _process_shared(self, router: Router, heartbeat: Callable[[], None] | None, ran: _Count) -> None:
        stop = threading.Event()
        errors: list[BaseException] = []

        def work(share: tuple[int, int]) -> None:
            try:
                self._process_share(router, share, None, stop, ran)
            except BaseException as error:  # re-raised below; the other workers stop
                errors.append(error)
                stop.set()

        threads = [
            threading.Thread(target=work, args=((k, self._workers),), name=f"sandbox-clock-{k}", daemon=True)
            for k in range(1, self._workers)
        ]
        for thread in threads:
            thread.start()
        try:
            self._process_share(router, (0, self._workers), heartbeat, stop, ran)
        except BaseException:
            stop.set()
            raise
        finally:
            for thread in threads:
                thread.join()
        if errors:
            raise errors[0]

    def _process_share(
        self,
        router: Router,
        share: tuple[int, int] | None,
        heartbeat: Callable[[], None] | None,
        stop: threading.Event,
        ran: _Count,
    ) -> None:
        beaten = monotonic()
        while not stop.is_set() and self._process_next(router, share):
            if ran.add() >= MAX_TRANSITIONS:
                raise RuntimeError("sandbox clock: too many transitions; is something not moving its due_at?")
            if heartbeat is not None and monotonic() - beaten >= self._lease_seconds / 3:
                heartbeat()
                beaten = monotonic()

    def _process_next(self, router: Router, share: tuple[int, int] | None = None) -> bool:
        with self._database.write() as session:
            current = sandbox_time(session)
            until = int(current)
            o = SandboxObject
            due_rows = select(o).where(o.due_at <= until)
            if share is not None:  # PostgreSQL: this worker's customers (see process_due)
                index, workers = share
                due_rows = due_rows.where(
                    func.abs(func.mod(func.hashtext(func.coalesce(o.customer, "")), workers)) == index
                )
            row = session.scalars(
                due_rows.order_by(o.due_at, o.id)
                .limit(1)
                # Another process advancing at the same time takes other rows.
                .with_for_update(skip_locked=True)
            ).first()
            if row is None:
                return False
            due = row.due_at
            assert due is not None
            kind = router.kinds.get(row.object_type)
            if kind is None or kind.advance is None:
                row.due_at = None
                return True
            # The transition happens at its own moment: what it creates is dated then.
            kind.advance(Store(session, router.kinds, due, recorded_at=current, public_url=self._public_url), row)
            if row.due_at is not None and row.due_at <= due:
                raise RuntimeError(f"sandbox clock: {row.id} is still due at {row.due_at} after running")
            return True
