"""Stripe's API rate limits, counted in the database so that every process shares them.

Stripe counts requests per second per account (here: per API key). In live
mode an account may make 100 requests a second in all and 25 a second to any
one endpoint; in a sandbox (test mode) 25 a second in all. An endpoint is the
operation, method and path template: `GET /v1/customers/{customer}` whatever
the id. Past a limit Stripe answers HTTP 429 with a `rate_limit_error` (no `code`), and
the `stripe` library raises `RateLimitError`. Stripe does not ask for a retry
(no `Stripe-Should-Retry`), so the library does not retry it: only the 429s of
lock timeouts are retried; backing off is the integration's business.

Counting is a fixed window of one second of real time (not sandbox time:
advancing the clock must not refill anyone's quota) per bucket: a row of
`sandbox_rate_windows` per (bucket, second), incremented by an atomic upsert
in a short transaction of its own before the request runs. Service processes
sharing the database therefore share the count. A rejected request rolls its
increments back: like Stripe's limiter, it uses up nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from stripe_sandbox.database import SessionSource
from stripe_sandbox.errors import SandboxError
from stripe_sandbox.idempotency import api_key_hash
from stripe_sandbox.models import SandboxRateWindow

MESSAGE = "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests."


@dataclass(frozen=True)
class Limits:
    total: int  # requests a second per API key
    per_endpoint: int | None  # requests a second per API key and endpoint


# In test mode the per-endpoint limit (25) equals the total, so only the total is counted.
MODES = {"live": Limits(total=100, per_endpoint=25), "test": Limits(total=25, per_endpoint=None)}


def limits_for(mode: str) -> Limits | None:
    """The limits of `mode` ("live", "test"), or None for "" (no limit)."""
    if not mode:
        return None
    if mode not in MODES:
        raise ValueError(f"rate limits must be 'live', 'test' or '' (none), not {mode!r}")
    return MODES[mode]


def now() -> float:
    """Real time; tests replace it to pin requests to one window."""
    return time.time()


def rate_limited() -> SandboxError:
    # Stripe's API errors doc: type `rate_limit_error` "Too many requests hit the API too quickly";
    # a 429 carries no `code` (https://docs.stripe.com/api/errors#errors-type, /rate-limits).
    return SandboxError(429, MESSAGE, type="rate_limit_error")


def admit(database: SessionSource, limits: Limits, api_key: str, endpoint: str | None) -> None:
    """Count a request of `api_key` to `endpoint` ("POST /v1/customers"; None: no such route).

    Raises Stripe's 429 when it is one too many for this second.
    """
    window = int(now())
    scope = api_key_hash(api_key)
    # Always in this order: concurrent requests lock the rows alike, so they never deadlock.
    buckets = [(scope, limits.total)]
    if endpoint is not None and limits.per_endpoint is not None:
        buckets.append((f"{scope} {endpoint}", limits.per_endpoint))
    with database.write() as session:
        counts = [(_increment(session, bucket, window), limit) for bucket, limit in buckets]
        if any(count > limit for count, limit in counts):
            raise rate_limited()  # leaving the transaction rolls the increments back


def _increment(session: Session, bucket: str, window: int) -> int:
    """The bucket's count for this window, this request included; earlier windows go."""
    w = SandboxRateWindow
    session.execute(delete(w).where(w.bucket == bucket, w.window_start_second < window))
    values = {"bucket": bucket, "window_start_second": window, "count": 1}
    # Both dialects' inserts have the same upsert, under different types.
    insert: Any = (postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert)(w)
    upsert = insert.values(**values).on_conflict_do_update(
        index_elements=[w.bucket, w.window_start_second], set_={"count": w.count + 1}
    )
    count = session.execute(upsert.returning(w.count)).scalar_one()
    return int(count)
