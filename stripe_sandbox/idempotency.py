"""Idempotency keys, as Stripe implements them for POST requests.

A key is scoped to the API key that sent it (the same key sent with another
secret key is another key) and forgotten 24 hours after first use, in real
time: the sandbox clock can be advanced by days, retries cannot.

The key row is inserted first in the request's write transaction; the
response is stored in the same transaction. A concurrent request with the same
key therefore either waits for that transaction (PostgreSQL: the conflicting
insert blocks; SQLite: the write lock is taken up front) and then replays the
committed response, or never sees a half-done request. Requests rejected by
parameter validation never get here, so, as on Stripe, they save nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from stripe_sandbox.errors import SandboxError, idempotency_error
from stripe_sandbox.models import SandboxIdempotencyKey, insert_if_absent

KEY_TTL_SECONDS = 24 * 60 * 60
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: str
    request_id: str


def fingerprint(params: dict[str, Any]) -> str:
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def api_key_hash(api_key: str) -> str:
    """The scope of the keys an API key sends (its secret is not stored)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def claim(
    session: Session, scope: str, key: str, method: str, path: str, params_fingerprint: str, request_id: str
) -> StoredResponse | None:
    """Reserve `key` (of API key hash `scope`) for this request, or return the response to replay."""
    if len(key) > MAX_KEY_LENGTH:
        raise SandboxError(
            400, f"Idempotency-Key must be at most {MAX_KEY_LENGTH} characters long.", param="Idempotency-Key"
        )
    now = time.time()
    # Expired keys are forgotten (an index range on `created_real`, usually empty).
    expired = SandboxIdempotencyKey.created_real < now - KEY_TTL_SECONDS
    session.execute(delete(SandboxIdempotencyKey).where(expired))
    values = {
        "api_key_hash": scope,
        "key": key,
        "method": method,
        "path": path,
        "fingerprint": params_fingerprint,
        "status": None,
        "body": None,
        "request_id": request_id,
        "created_real": now,
    }
    if insert_if_absent(session, SandboxIdempotencyKey, values):
        return None
    row = session.get(SandboxIdempotencyKey, (scope, key), with_for_update=True, populate_existing=True)
    if row is None:  # expired and purged by a concurrent request meanwhile
        insert_if_absent(session, SandboxIdempotencyKey, values)
        return None
    if (row.method, row.path) != (method, path):
        raise idempotency_error(
            "Keys for idempotent requests can only be used for the same endpoint they were first "
            f"used for ('{row.method.upper()} {row.path}' vs '{method.upper()} {path}'). Try using a "
            f"key other than '{key}' if you meant to execute a different request."
        )
    if row.fingerprint != params_fingerprint:
        raise idempotency_error(
            "Keys for idempotent requests can only be used with the same parameters they were first "
            f"used with. Try using a key other than '{key}' if you meant to execute a different request."
        )
    if row.status is None or row.body is None:
        # Only reachable if a transaction committed the key without its response.
        raise SandboxError(
            409,
            "There is currently another in-progress request using this Idempotent Key (that "
            "probably means you submitted twice, and the other request is still going through): "
            f"{key}. Please try again later.",
            type="idempotency_error",
        )
    return StoredResponse(row.status, row.body, row.request_id)


def record(session: Session, scope: str, key: str, status: int, body: str) -> None:
    row = session.get(SandboxIdempotencyKey, (scope, key))
    assert row is not None, "record() without claim()"
    row.status = status
    row.body = body
