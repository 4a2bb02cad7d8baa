"""Leases: serialise work on one object across Stripe calls.

A database lock can't be held across a Stripe call (on SQLite the sandbox
writes to the same file), so a lease row is claimed in one short transaction
and released in another. It expires, so a crashed holder never blocks forever.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from billing.db import Database
from billing.errors import ApiError
from billing.models import Lease, utcnow


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
def lease(db: Database, name: str, *, ttl: float = 120.0, wait: float = 15.0) -> Iterator[None]:
    """Hold `name` for the block; wait up to `wait` seconds for another holder,
    then answer 409 `operation_in_progress`."""
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait
    delay = 0.01
    while not _try_claim(db, name, token, ttl):
        if time.monotonic() >= deadline:
            raise ApiError(409, "operation_in_progress", "Another change to this object is in progress; retry shortly.")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
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
    """Remove leases whose holder is long gone (the clean-up job)."""
    with db.write() as session:
        result = session.execute(delete(Lease).where(Lease.expires_at < utcnow()))
        return int(getattr(result, "rowcount", 0) or 0)
