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
due rows are visited. Time does nothing by itself otherwise: `process_due()`
runs what real time has made due.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from stripe_sandbox.api import build_router
from stripe_sandbox.models import SandboxClockState, SandboxObject, insert_if_absent
from stripe_sandbox.router import Router
from stripe_sandbox.storage import SessionSource
from stripe_sandbox.store import Store

if TYPE_CHECKING:  # webhooks.py reads sandbox time from here
    from stripe_sandbox.webhooks import WebhookSender

_ROW_ID = 1
# A transition that fails to move its object's due_at forward would loop forever.
MAX_TRANSITIONS = 100_000


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


class SandboxClock:
    """Read and advance the sandbox clock shared by every process using `database`."""

    def __init__(self, database: SessionSource, *, router: Router | None = None,
                 webhooks: WebhookSender | None = None) -> None:
        self._database = database
        self._router = router
        # Told after processing, to deliver the events it recorded.
        self._webhooks = webhooks

    def offset(self) -> int:
        with self._database.read() as session:
            return read_offset(session)

    def now(self) -> int:
        with self._database.read() as session:
            return int(sandbox_time(session))

    def advance(self, seconds: float = 0, *, minutes: float = 0, hours: float = 0, days: float = 0) -> int:
        """Move the clock forward; returns the new sandbox time."""
        delta = math.ceil(seconds + 60 * minutes + 3600 * hours + 86400 * days)
        if delta < 0:
            raise ValueError("the sandbox clock only moves forward")
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

    def advance_and_process(self, seconds: float = 0, *, minutes: float = 0, hours: float = 0,
                            days: float = 0) -> int:
        """Move the clock forward and run everything that came due; returns the new sandbox time."""
        now = self.advance(seconds, minutes=minutes, hours=hours, days=days)
        if not self.process_due() and self._webhooks is not None:
            self._webhooks.notify()  # nothing ran, but failed deliveries' retries may have come due
        return now

    def process_due(self) -> int:
        """Run every transition due by now, earliest first; returns how many ran."""
        router = self._router or build_router()
        self._router = router
        ran = 0
        try:
            while self._process_next(router):
                ran += 1
                if ran >= MAX_TRANSITIONS:
                    raise RuntimeError("sandbox clock: too many transitions; is something not moving its due_at?")
        finally:
            if ran and self._webhooks is not None:
                self._webhooks.notify()
        return ran

    def _process_next(self, router: Router) -> bool:
        with self._database.write() as session:
            current = sandbox_time(session)
            until = int(current)
            o = SandboxObject
            row = session.scalars(
                select(o).where(o.due_at <= until).order_by(o.due_at, o.id).limit(1)
                # Another process advancing at the same time takes other rows.
                .with_for_update(skip_locked=True)).first()
            if row is None:
                return False
            due = row.due_at
            assert due is not None
            kind = router.kinds.get(row.object_type)
            if kind is None or kind.advance is None:
                row.due_at = None
                return True
            # The transition happens at its own moment: what it creates is dated then.
            kind.advance(Store(session, router.kinds, due, recorded_at=current), row)
            if row.due_at is not None and row.due_at <= due:
                raise RuntimeError(f"sandbox clock: {row.id} is still due at {row.due_at} after running")
            return True
