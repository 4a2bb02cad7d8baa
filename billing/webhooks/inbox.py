"""The inbox of Stripe events: stored when delivered, applied later on workers.

The webhook route only stores (`store`): one insert, deduplicated by event id,
so Stripe's delivery is acknowledged at once whatever the load. A queue task
then claims every pending event about one object (`claim`): the events that
waited together are applied together, with one Stripe read. A claim lapses
after `CLAIM_SECONDS`, so a worker killed mid-batch loses nothing: the sweep
finds its events pending again. A failed attempt is retried with exponential
backoff (`fail`); after `MAX_ATTEMPTS`, or at once when retrying can't help,
the event is parked until an operator replays it, and blocks nothing else.

Times here are the service's own (UTC): they are about retries and claims.
`created` is Stripe's clock, and is compared only with the copy's stamps.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, bindparam, delete, exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import aliased

from billing.db import Database
from billing.models import StripeEvent, stamp_of, utcnow

PENDING, APPLIED, PARKED = "pending", "applied", "parked"
CLAIM_SECONDS = 120
MAX_ATTEMPTS = 12
FIRST_RETRY_SECONDS = 5
MAX_RETRY_SECONDS = 3600
# Stripe redelivers an event for up to 3 days: until then its id must still be known.
KEEP_APPLIED = timedelta(days=3)
# A pending event nobody has claimed for this long has lost its task (or the
# queue lost it): the sweep queues it again.
STRANDED_AFTER = timedelta(seconds=60)


@dataclass(frozen=True)
class Claimed:
    id: str
    type: str
    created: int  # Stripe's clock, seconds
    received_at: int  # ours, microseconds (as the copy's stamps)
    payload: dict[str, Any]


@dataclass(frozen=True)
class Backlog:
    """How far the copy may lag behind Stripe."""

    pending: int
    oldest_pending_seconds: float  # 0 when nothing waits
    parked: int


def backoff(attempts: int) -> float:
    """Seconds before attempt `attempts + 1`: 5 s, 10 s, 20 s, ... up to an hour."""
    return float(min(FIRST_RETRY_SECONDS * 2 ** max(attempts - 1, 0), MAX_RETRY_SECONDS))


@dataclass(frozen=True)
class Stored:
    """What `store` did with an event."""

    new: bool  # False: a redelivery of a stored event
    task_waiting: bool  # an untried event about the same object waits for its task already


def _untried(events: Any, object_key: Any) -> Any:
    """An event about the object waits and was never tried: its task is on its way."""
    return exists().where(
        events.state == PENDING, events.object_key == object_key, events.attempts == 0, events.claimed_until.is_(None)
    )


def _store_statement(dialect: str) -> Any:
    """The insert, built once per dialect: one statement stores the event and
    says whether an earlier event about the same object still waits untried
    (its task, due within seconds, will take this one too)."""
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    event_id, key = bindparam("event_id", type_=String), bindparam("object_key", type_=String)
    earlier = aliased(StripeEvent)
    waiting = _untried(earlier, key).where(earlier.id != event_id)
    return (
        insert(StripeEvent)
        .values(
            id=event_id,
            object_key=key,
            type=bindparam("type"),
            created=bindparam("created"),
            received_at=bindparam("received_at"),
            state=bindparam("state"),
            attempts=0,
            next_attempt_at=bindparam("received_at"),
            applied_at=bindparam("applied_at"),
            payload=bindparam("payload", type_=StripeEvent.payload.type),
        )
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(StripeEvent.id, waiting.label("task_waiting"))
    )


_STORE = {dialect: _store_statement(dialect) for dialect in ("postgresql", "sqlite")}


def store(db: Database, event: dict[str, Any], object_key: str | None) -> Stored:
    """Store a verified event unless its id is already stored. An event about
    nothing the service copies is stored as applied (so a redelivery is still
    a duplicate) and needs no task."""
    now = utcnow()
    params = {
        "event_id": str(event["id"]),
        "object_key": object_key,
        "type": str(event["type"]),
        "created": int(event.get("created") or 0),
        "received_at": now,
        "state": PENDING if object_key else APPLIED,
        "applied_at": None if object_key else now,
        "payload": event,
    }
    if db.is_sqlite:
        with db.write() as session:
            row = session.execute(_STORE["sqlite"], params).first()
    else:  # one statement, committed alone: no BEGIN, no COMMIT round trip
        with db.autocommit() as connection:
            row = connection.execute(_STORE["postgresql"], params).first()
    if row is None:
        return Stored(new=False, task_waiting=True)
    return Stored(new=True, task_waiting=object_key is None or bool(row.task_waiting))


def untried(db: Database, object_key: str) -> bool:
    """Whether an event about the object waits, never tried: its task is on its way."""
    with db.read() as session:
        return session.scalar(select(_untried(StripeEvent, object_key))) is True


def _claimable(now: datetime) -> Any:
    return (
        (StripeEvent.state == PENDING)
        & (StripeEvent.next_attempt_at <= now)
        & or_(StripeEvent.claimed_until.is_(None), StripeEvent.claimed_until < now)
    )


def claim(db: Database, object_key: str) -> list[Claimed]:
    """Take every event about the object that may run now (none if another
    worker holds them): they are this caller's for `CLAIM_SECONDS`."""
    now = utcnow()
    with db.write() as session:
        rows = session.execute(
            update(StripeEvent)
            .where(StripeEvent.object_key == object_key, _claimable(now))
            .values(claimed_until=now + timedelta(seconds=CLAIM_SECONDS), attempts=StripeEvent.attempts + 1)
            .returning(
                StripeEvent.id, StripeEvent.type, StripeEvent.created, StripeEvent.received_at, StripeEvent.payload
            )
        ).all()
    return [Claimed(str(i), str(t), int(c), stamp_of(r.timestamp()), dict(p)) for i, t, c, r, p in rows]


def finish(db: Database, ids: Sequence[str], object_key: str) -> bool:
    """Mark the claimed events applied. True when an untried event about the
    object waits: one stored while they were being claimed, which saw them
    untried and so queued no task of its own (`store`)."""
    now = utcnow()
    with db.write() as session:
        if ids:
            session.execute(
                update(StripeEvent)
                .where(StripeEvent.id.in_(ids))
                .values(state=APPLIED, applied_at=now, claimed_until=None, last_error=None)
            )
        return session.scalar(select(_untried(StripeEvent, object_key))) is True


def fail(db: Database, ids: Sequence[str], error: str, *, permanent: bool) -> float | None:
    """Release the claimed events after a failed attempt. Returns the delay
    before the retry, or None when they are parked (permanent, or out of tries)."""
    if not ids:
        return None
    now = utcnow()
    error = error[:500]
    with db.write() as session:
        attempts = max(session.scalars(select(StripeEvent.attempts).where(StripeEvent.id.in_(ids))), default=0)
        if permanent or attempts >= MAX_ATTEMPTS:
            session.execute(
                update(StripeEvent)
                .where(StripeEvent.id.in_(ids))
                .values(state=PARKED, claimed_until=None, last_error=error)
            )
            return None
        delay = backoff(attempts)
        session.execute(
            update(StripeEvent)
            .where(StripeEvent.id.in_(ids))
            .values(claimed_until=None, last_error=error, next_attempt_at=now + timedelta(seconds=delay))
        )
        return delay


def put_off(db: Database, ids: Sequence[str], delay: float) -> float:
    """Release claimed events untried (no room for them now): the attempt doesn't count."""
    with db.write() as session:
        session.execute(
            update(StripeEvent)
            .where(StripeEvent.id.in_(ids))
            .values(
                claimed_until=None,
                attempts=StripeEvent.attempts - 1,
                next_attempt_at=utcnow() + timedelta(seconds=delay),
            )
        )
    return delay


def backlog(db: Database) -> Backlog:
    with db.read() as session:
        pending, oldest = session.execute(
            select(func.count(), func.min(StripeEvent.received_at)).where(StripeEvent.state == PENDING)
        ).one()
        parked = session.scalar(select(func.count()).where(StripeEvent.state == PARKED)) or 0
    age = 0.0
    if oldest is not None:
        oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=utcnow().tzinfo)
        age = max((utcnow() - oldest).total_seconds(), 0.0)
    return Backlog(pending=int(pending), oldest_pending_seconds=round(age, 3), parked=int(parked))


def pending_created_by(db: Database, created: int | None) -> bool:
    """Whether an event created at or before `created` (Stripe's clock; None:
    any) waits to be applied."""
    query = select(StripeEvent.id).where(StripeEvent.state == PENDING)
    if created is not None:
        query = query.where(StripeEvent.created <= created)
    with db.read() as session:
        return session.scalars(query.limit(1)).first() is not None


def parked(db: Database, limit: int = 100) -> list[StripeEvent]:
    with db.read() as session:
        return list(
            session.scalars(
                select(StripeEvent)
                .where(StripeEvent.state == PARKED)
                .order_by(StripeEvent.received_at, StripeEvent.id)
                .limit(limit)
            )
        )


def replay(db: Database, ids: Iterable[str] | None) -> list[str]:
    """Make parked events (these, or all with None) pending again, with fresh
    tries; returns the object keys to queue."""
    now = utcnow()
    query = update(StripeEvent).where(StripeEvent.state == PARKED)
    if ids is not None:
        query = query.where(StripeEvent.id.in_(list(ids)))
    with db.write() as session:
        keys = (
            session.execute(
                query.values(state=PENDING, attempts=0, next_attempt_at=now, claimed_until=None).returning(
                    StripeEvent.object_key
                )
            )
            .scalars()
            .all()
        )
    return sorted({str(key) for key in keys if key})


def due_keys(db: Database, *, idle_for: timedelta = timedelta(0), limit: int = 10_000) -> list[str]:
    """Objects with events that may run now and were received at least
    `idle_for` ago: the sweep's (stranded work) and a drain's (everything)."""
    now = utcnow()
    with db.read() as session:
        return [
            str(key)
            for key in session.scalars(
                select(StripeEvent.object_key)
                .where(_claimable(now), StripeEvent.received_at <= now - idle_for)
                .group_by(StripeEvent.object_key)
                .order_by(func.min(StripeEvent.received_at))
                .limit(limit)
            )
        ]


def delete_applied(db: Database) -> int:
    """Forget applied events once Stripe can no longer redeliver them."""
    with db.write() as session:
        result = session.execute(
            delete(StripeEvent).where(StripeEvent.state == APPLIED, StripeEvent.received_at < utcnow() - KEEP_APPLIED)
        )
        return int(getattr(result, "rowcount", 0) or 0)
