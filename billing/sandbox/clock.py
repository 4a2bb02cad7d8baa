"""Sandbox time: real time plus an offset kept in `sandbox_clock`.

Every emulated timestamp (created, trial ends, periods, idempotency expiry)
comes from here, so advancing the offset moves the whole sandbox into the
future. The offset only grows: lists are ordered by creation time.
"""

from __future__ import annotations

import math
import time

from sqlalchemy.orm import Session

from billing.db import Database
from billing.sandbox.models import SandboxClockState, insert_if_absent

_ROW_ID = 1


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

    def __init__(self, database: Database) -> None:
        self._database = database

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
