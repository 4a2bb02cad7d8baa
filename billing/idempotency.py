"""Idempotency-Key for POST/PUT/PATCH/DELETE.

The same key with the same request within 24 h replays the first outcome
(header `Idempotent-Replayed: true`; `is_outcome` says which answers are one)
and does nothing twice; the same key with a different request is 409
`idempotency_key_reused`; a key whose first request is still running is 409
`idempotency_key_in_use` (once that request's worker is dead, a retry takes
over: see `begin`). Keys live in the database, so a replay survives restarts
and is shared by every worker. The idempotency keys sent to Stripe derive from
it, so a retry through us is a retry at Stripe too.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from flask import Response, g, request
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from billing import metrics
from billing.db import Database
from billing.errors import ApiError
from billing.models import IDEMPOTENCY_SCOPE_LENGTH, IdempotencyRecord, utcnow
from billing.state import current

HEADER = "Idempotency-Key"
KEEP_FOR = timedelta(hours=24)
# SQLite: a first request still "running" after this is taken to have died
# with its worker (PostgreSQL knows at once: see `begin`).
RUNNING_LOCK = timedelta(seconds=90)
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def stripe_key() -> str:
    """The base of the idempotency keys this request sends to Stripe."""
    return str(getattr(g, "stripe_key", None) or g.request_id)


def claimed_key() -> str | None:
    """The Stripe key base when the client sent an Idempotency-Key, else None."""
    return getattr(g, "stripe_key", None)


def _scope() -> str:
    """Keys belong to one caller (and one workspace): nobody else can replay,
    squat or even detect another caller's key."""
    workspace_id = (request.view_args or {}).get("workspaceId")
    scope = f"user:{g.user_id}:workspace:{workspace_id}" if workspace_id else f"user:{g.user_id}"
    # The path's id is not checked yet (the access check answers after): one too
    # long for the column is kept as its digest, so it still gets that 404.
    if len(scope) > IDEMPOTENCY_SCOPE_LENGTH:
        return "sha256:" + hashlib.sha256(scope.encode()).hexdigest()
    return scope


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for part in (request.method, request.path, g.user_id):
        digest.update(part.encode() + b"\0")
    digest.update(request.get_data(cache=True))
    return digest.hexdigest()


def begin() -> Response | None:
    """Claim the request's key, or answer for it (a replay or a 409)."""
    key = request.headers.get(HEADER)
    if key is None or request.method not in WRITES:
        return None
    if not key.strip() or len(key) > 255:
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key must be 1 to 255 characters.")
    scope, fingerprint = _scope(), _fingerprint()
    db = current().db
    # PostgreSQL: the request that runs a key holds an advisory lock on it, which
    # dies with its process: a running key whose lock is free lost its request.
    lock = lock_name(scope, key) if not db.is_sqlite else None
    locked = lock is not None and db.try_lock(lock)
    claimed = False
    try:
        replay = _claim(db, scope, key, fingerprint, locked)
        claimed = replay is None
    finally:
        if lock is not None and locked and not claimed:
            db.unlock(lock)
    if replay is not None:
        return replay
    g.idempotency = (scope, key, lock)
    g.stripe_key = "idem_" + hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()[:40]
    return None


def lock_name(scope: str, key: str) -> str:
    """PostgreSQL: the advisory lock its request holds while it runs a key."""
    return "idempotency:" + hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()


def _claim(db: Database, scope: str, key: str, fingerprint: str, locked: bool) -> Response | None:
    """The key's record: claimed for this request (None), or the answer instead."""
    now = utcnow()
    try:
        with db.write() as session:
            record = session.get(IdempotencyRecord, (scope, key), with_for_update=True)
            if record is not None and record.created_at < now - KEEP_FOR:
                session.delete(record)
                session.flush()
                record = None
            # Is the key's request alive elsewhere? Its lock says (PostgreSQL); its record's
            # lock lapsing after RUNNING_LOCK is the sign it died (SQLite).
            running_elsewhere = (not locked) if not db.is_sqlite else record is not None and record.locked_until > now
            if record is None:
                if running_elsewhere:  # its first request is starting, or letting go of a retryable answer
                    raise _in_use()
                session.add(
                    IdempotencyRecord(
                        scope=scope,
                        key=key,
                        fingerprint=fingerprint,
                        state="running",
                        created_at=now,
                        locked_until=now + RUNNING_LOCK,
                    )
                )
            elif record.fingerprint != fingerprint:
                raise ApiError(409, "idempotency_key_reused", "This Idempotency-Key was used with a different request.")
            elif record.state == "done":
                return _replay(record)
            elif running_elsewhere:
                raise _in_use()
            else:  # its first request died mid-way: this retry takes over
                record.locked_until = now + RUNNING_LOCK
    except IntegrityError:  # a concurrent first request inserted it
        raise _in_use() from None
    return None


def _in_use() -> ApiError:
    return ApiError(
        409,
        "idempotency_key_in_use",
        "A request with this Idempotency-Key is still being processed.",
        headers={"Retry-After": "1"},
    )


def _replay(record: IdempotencyRecord) -> Response:
    response = Response(
        record.response_body or "",
        status=record.response_status or 200,
        mimetype=record.response_type or "application/json",
    )
    response.headers["Idempotent-Replayed"] = "true"
    metrics.idempotent_replays.inc()
    return response


def is_outcome(response: Response) -> bool:
    """Whether an answer is the request's outcome, kept and replayed for its key:
    a 2xx, or a 4xx that a retry would earn again (422, 402 card_declined, 409
    capacity_exceeded...). An answer that says "not now" is no outcome: a 5xx
    (database or Stripe unavailable, an error of ours), a 429, or any answer with
    `Retry-After` (409 operation_in_progress: the object was busy). Its key is
    released, so a retry with it runs again."""
    status = response.status_code
    return status < 500 and status != 429 and "Retry-After" not in response.headers


def finish(response: Response) -> Response:
    """Store the response of a claimed key if it is an outcome; else release the key."""
    claimed = getattr(g, "idempotency", None)
    if claimed is None:
        return response
    scope, key, lock = claimed
    condition = (IdempotencyRecord.scope == scope) & (IdempotencyRecord.key == key)
    db = current().db
    with db.write() as session:
        if not is_outcome(response):
            session.execute(delete(IdempotencyRecord).where(condition))
        else:
            session.execute(
                update(IdempotencyRecord)
                .where(condition)
                .values(
                    state="done",
                    response_status=response.status_code,
                    response_body=response.get_data(as_text=True),
                    response_type=response.mimetype,
                )
            )
    if lock is not None:
        # After the record: a retry that gets the lock finds the outcome. (Should this
        # fail first, the lock goes with the request's connection: Database.end_request.)
        db.unlock(lock)
    return response


def delete_expired(db: Database) -> int:
    """Forget keys past their 24 hours (the clean-up job; a late replay would
    find the record expired anyway)."""
    with db.write() as session:
        result = session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < utcnow() - KEEP_FOR))
        return int(getattr(result, "rowcount", 0) or 0)
