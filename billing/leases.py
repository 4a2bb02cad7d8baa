"""Leases: serialise work on one object across Stripe calls.

A lease is held across Stripe calls, so it can't be a lock of the transaction
(on SQLite the sandbox writes to the same file, and a transaction held open
would block it). How it is held, by database:

- PostgreSQL: a session-level advisory lock on a connection the holder keeps
  for the lease (the request's shared connection, `Database.try_lock`).
  The database releases it with the connection, so the lease of a holder that
  died (a killed worker) is free as soon as PostgreSQL sees its connection
  close, not after a timeout; a live holder keeps it however long it takes.
- SQLite (one process, in development): a row claimed in one short transaction
  and released in another. It expires after `ttl`, so a crashed holder never
  blocks forever.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from datetime import timedelta

from flask import has_request_context, request
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from billing.db import Database
from billing.errors import ApiError
from billing.models import Lease, utcnow

WAIT_SECONDS = 15.0  # how long a request waits for another holder before 409 operation_in_progress


def busy() -> ApiError:
    """The refusal when the object stays busy: a retry shortly (same key) runs again."""
    return ApiError(
        409,
        "operation_in_progress",
        "Another change to this object is in progress; retry shortly.",
        headers={"Retry-After": "1"},
    )


# The leases the request running here holds. Taking one again within that
# request is a no-op, as re-taking a PostgreSQL advisory lock on its connection
# is: the sandbox's webhooks, applied in-process while their request waits on
# Stripe (tests), run inside that request. Another request, even on this
# thread, and work outside any request wait as usual.
_held: ContextVar[tuple[object, frozenset[str]] | None] = ContextVar("leases_held", default=None)


def _request() -> object | None:
    """The request running here (its WSGI environ, one object per request), if any."""
    return request.environ if has_request_context() else None


@contextmanager
def lease(db: Database, name: str, *, ttl: float = 120.0, wait: float | None = None) -> Iterator[None]:
    """Hold `name` for the block; wait up to `wait` seconds (default
    WAIT_SECONDS) for another holder, then answer 409 `operation_in_progress`.
    `ttl` bounds a holder that died, on SQLite only (see the module)."""
    scope, held = _request(), _held.get()
    names = held[1] if scope is not None and held is not None and held[0] is scope else frozenset()
    if name in names:
        yield
        return
    take = _advisory_lease if not db.is_sqlite else _row_lease
    with take(db, name, ttl, WAIT_SECONDS if wait is None else wait):
        token = _held.set((scope, names | {name}) if scope is not None else None)
        try:
            yield
        finally:
            _held.reset(token)


def _until_claimed(claim: Callable[[], bool], wait: float) -> None:
    deadline = time.monotonic() + wait
    delay = 0.01
    while not claim():
        if time.monotonic() >= deadline:
            raise busy()
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


@contextmanager
def _advisory_lease(db: Database, name: str, _ttl: float, wait: float) -> Iterator[None]:
    lock = f"lease:{name}"
    with db.lock_scope():
        _until_claimed(lambda: db.try_lock(lock), wait)
        try:
            yield
        finally:
            db.unlock(lock)


def _try_claim(db: Database, name: str, token: str, ttl: float) -> bool:
    try:
        with db.write() as session:
            now = utcnow()
            lease = session.get(Lease, name, with_for_update=True)
            if lease is None:
                session.add(Lease(name=name, token=token, expires_at=now + timedelta(seconds=ttl)))
                return True
            if lease.expires_at < now:
                lease.token, lease.expires_at = token, now + timedelta(seconds=ttl)
                return True
            return False
    except IntegrityError:  # another claimant inserted it first
        return False


@contextmanager
def _row_lease(db: Database, name: str, ttl: float, wait: float) -> Iterator[None]:
    token = uuid.uuid4().hex
    _until_claimed(lambda: _try_claim(db, name, token, ttl), wait)
    try:
        yield
    finally:
        with db.write() as session:
            session.execute(delete(Lease).where(Lease.name == name, Lease.token == token))


def account_lease_name(customer_id: str) -> str:
    """The lease held while a billing account's subscriptions are counted and
    changed: subscription creation, account deletion and workspace archiving
    take it, so none of them acts on a count another is about to change."""
    return f"billing-account:{customer_id}"


def subscription_lease_name(subscription_id: str) -> str:
    """The lease held while one subscription is changed: each change applies to
    the state the previous one left (no lost increments)."""
    return f"subscription:{subscription_id}"


@contextmanager
def leases(db: Database, names: Iterable[str], **kwargs: float) -> Iterator[None]:
    """Several leases, taken in a fixed order (no two holders wait on each other)."""
    with ExitStack() as stack:
        for name in sorted(set(names)):
            stack.enter_context(lease(db, name, **kwargs))
        yield


def delete_expired(db: Database) -> int:
    """Remove lease rows whose holder is long gone (the clean-up job; SQLite's leases)."""
    with db.write() as session:
        result = session.execute(delete(Lease).where(Lease.expires_at < utcnow()))
        return int(getattr(result, "rowcount", 0) or 0)
