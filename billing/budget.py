"""One Stripe request budget per Stripe account, shared by every process.

Stripe counts an account's API requests per second: in live mode 100 in all and
25 to any one endpoint (an endpoint is an operation: `GET /v1/customers/{id}`
whatever the id), in test mode 25 in all. Past them it answers 429 `rate_limit`
and the `stripe` library does not retry. Every attempt the service makes is
counted here first, in the service's database, so web workers, queue workers
and `reconcile` share one count: one atomic upsert of a row per (bucket,
second), a fixed window of real time, like the sandbox's own limiter.

Priority. Requests made for a user (the default) are always counted and sent;
only when the second is full do they wait for the next one rather than earn a
429. Background work (`with background("webhook"):`) is admitted only while
the second has room below its share (the limits less `user_reserve`), and
otherwise sleeps until the next second, up to a deadline after which it raises
`BudgetExhausted`. Any rate-limit 429 (a user request's too: it says the
second is over-full) pauses every process's background work for Stripe's
`Retry-After` (1 s without one), then it retries; user requests are not paused.

Old windows are deleted by `cleanup()`, which each process runs at most once a
minute while it counts (and which may be scheduled).
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, delete, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from billing import metrics
from billing.config import is_live_key
from billing.db import Database
from billing.models import StripeBudgetWindow

log = logging.getLogger("billing.budget")


@dataclass(frozen=True)
class Limits:
    total: int  # requests a second per account
    per_endpoint: int | None  # requests a second per account and endpoint; None: only the total counts


# Stripe's documented limits (docs.stripe.com/rate-limits). In test mode an
# endpoint's 25 equals the total, so only the total is counted.
LIVE = Limits(total=100, per_endpoint=25)
TEST = Limits(total=25, per_endpoint=None)
# The budget plans for a little less than Stripe allows: a request counted at the
# end of our second may reach Stripe in its next one, and Stripe may lower limits.
PLANNED_SHARE = 0.95
# What is left for users while background work runs flat out (a fraction of the limits).
DEFAULT_USER_RESERVE = 0.2
# Background work waits at most this long for room by default, then raises.
DEFAULT_DEADLINE_SECONDS = 60.0
# Windows are kept this long (seconds), then deleted by `cleanup()`.
KEEP_SECONDS = 60
MAX_COOL_DOWN_SECONDS = 60.0


def limits_for_key(api_key: str) -> Limits:
    """Live keys have live mode's limits; any other, test mode's."""
    return LIVE if is_live_key(api_key) else TEST


def limits_for_sandbox(mode: str) -> Limits | None:
    """The sandbox's SANDBOX_RATE_LIMITS ("live", "test"), or None ("": no limits, no budget)."""
    return {"live": LIVE, "test": TEST, "": None}[mode]


def key_hash(api_key: str) -> str:
    """What the database holds instead of the key."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:32]


def endpoint(method: str, url: str) -> str:
    """Stripe's endpoint of a request: `GET /v1/customers/{id}` for any customer.

    Stripe's paths alternate collection and id (`/v1/customers/{id}/payment_methods/{id}`);
    an id's place may instead hold an action (`/v1/customers/search`), told apart by
    having no digit or capital, which Stripe's ids always have.
    """
    segments = urlsplit(url).path.strip("/").split("/")
    start = 2 if segments[1:2] == ["test_helpers"] else 1  # /v1/test_helpers/test_clocks/{id}
    for index in range(start + 1, len(segments), 2):
        if not (segments[index].islower() and segments[index].replace("_", "").isalpha()):
            segments[index] = "{id}"
    return f"{method.upper()} /{'/'.join(segments)}"


class BudgetExhausted(Exception):
    """Background work found no room in Stripe's budget before its deadline: retry it later."""

    def __init__(self, kind: str, waited: float) -> None:
        super().__init__(f"Stripe request budget: no room for background work {kind!r} after {waited:.1f} s")
        self.kind = kind
        self.waited = waited


@dataclass(frozen=True)
class Background:
    kind: str
    deadline_seconds: float | None


_background: ContextVar[Background | None] = ContextVar("stripe_budget_background", default=None)


@contextmanager
def background(kind: str, *, deadline_seconds: float | None = DEFAULT_DEADLINE_SECONDS) -> Iterator[None]:
    """Stripe requests made inside are background work (`kind` names it in errors and logs).

    Each request waits at most `deadline_seconds` for room (None: as long as it takes).
    A context variable: threads started inside must enter it again.
    """
    token = _background.set(Background(kind, deadline_seconds))
    try:
        yield
    finally:
        _background.reset(token)


def current_background() -> Background | None:
    return _background.get()


def now() -> float:
    """Real time; tests replace it (with the sandbox's) to pin requests to one second."""
    return time.time()


def sleep(seconds: float) -> None:
    time.sleep(seconds)


# One statement a request. User requests: count in every bucket, whatever the count.
_COUNT = """
INSERT INTO stripe_budget_windows (bucket, window_start_second, count)
SELECT buckets.column1, :window, 1 FROM (VALUES {values}) AS buckets
{condition}
ON CONFLICT (bucket, window_start_second) DO UPDATE SET count = stripe_budget_windows.count + 1
{update_condition}
RETURNING bucket, count
"""
# Background requests: only below each bucket's background cap, and not while cooling down
# (checked for a first row of the second too, which is inserted rather than updated).
_COOLING_DOWN = (
    "EXISTS (SELECT 1 FROM stripe_budget_windows AS cool "
    "WHERE cool.bucket = :cool_down AND cool.window_start_second > :window)"
)


def _statement(buckets: int, *, capped: bool) -> Any:
    values = ", ".join(f"(:bucket{i})" for i in range(buckets))
    if not capped:
        # WHERE true: SQLite needs a WHERE before ON CONFLICT in an INSERT ... SELECT.
        return text(_COUNT.format(values=values, condition="WHERE true", update_condition=""))
    caps = " ".join(f"WHEN :bucket{i} THEN :cap{i}" for i in range(buckets))
    update = f"WHERE stripe_budget_windows.count < CASE stripe_budget_windows.bucket {caps} END AND NOT {_COOLING_DOWN}"
    return text(_COUNT.format(values=values, condition=f"WHERE NOT {_COOLING_DOWN}", update_condition=update))


_STATEMENTS = {(n, capped): _statement(n, capped=capped) for n in (1, 2) for capped in (False, True)}


class StripeBudget:
    """The budget of one Stripe account (one API key), kept in `db`."""

    def __init__(
        self, db: Database, api_key: str, limits: Limits, *, user_reserve: float = DEFAULT_USER_RESERVE
    ) -> None:
        if not 0 <= user_reserve < 1:
            raise ValueError("user_reserve is a fraction of the limits, from 0 to below 1")
        self.limits = limits
        self.scope = key_hash(api_key)
        self.cool_down_bucket = f"{self.scope} cool-down"
        self.total = int(limits.total * PLANNED_SHARE)
        self.per_endpoint = int(limits.per_endpoint * PLANNED_SHARE) if limits.per_endpoint else None
        # Background may fill the second up to this; the rest is the users' reserve.
        self.background_total = max(1, math.floor(self.total * (1 - user_reserve)))
        self.background_per_endpoint = (
            max(1, math.floor(self.per_endpoint * (1 - user_reserve))) if self.per_endpoint else None
        )
        self._db = db
        # SQLite: BEGIN IMMEDIATE (billing.db), so concurrent writers queue instead of failing.
        self._sqlite_engine = db.engine.execution_options(write_lock=True) if db.is_sqlite else None
        self._cleaned_at = 0.0

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """One short transaction. PostgreSQL: each statement commits alone (inside a
        request on the connection its reads share: no pool checkout and ping)."""
        if self._sqlite_engine is not None:
            with self._sqlite_engine.begin() as connection:
                yield connection
            return
        with self._db.autocommit() as connection:
            yield connection

    # -- counting --------------------------------------------------------------

    def admit(self, method: str, url: str) -> None:
        """Count one attempt of a request; return when it may be sent.

        A user request waits only when the second is full; background work waits
        for room below its share (raising `BudgetExhausted` past its deadline).
        """
        buckets = [self.scope]
        caps = [self.background_total]
        limits = [self.total]
        if self.per_endpoint is not None and self.background_per_endpoint is not None:
            buckets.append(f"{self.scope} {endpoint(method, url)}")
            caps.append(self.background_per_endpoint)
            limits.append(self.per_endpoint)
        work = _background.get()
        priority = "user" if work is None else "background"
        started = now()
        waits = 0
        while True:
            window = int(now())
            if work is None:
                counts = self._count(buckets, window, None)
                if all(counts[bucket] <= limit for bucket, limit in zip(buckets, limits, strict=True)):
                    break
            elif self._count_background(buckets, caps, window):
                break
            wait = window + 1 - now()
            if work is not None:
                wait += random.uniform(0, 0.05)  # waiting workers don't all wake at once
                waited = now() - started
                if work.deadline_seconds is not None and waited + wait > work.deadline_seconds:
                    metrics.stripe_budget_exhausted.inc()
                    raise BudgetExhausted(work.kind, waited)
            waits += 1
            sleep(max(wait, 0.001))
        metrics.stripe_budget_admitted.labels(priority).inc()
        if waits:
            metrics.stripe_budget_waits.labels(priority).inc()
            metrics.stripe_budget_wait_duration.labels(priority).observe(max(now() - started, 0.0))
        if started - self._cleaned_at > KEEP_SECONDS:
            self._cleaned_at = started
            self.cleanup()

    def _count(self, buckets: list[str], window: int, caps: list[int] | None) -> dict[str, int]:
        params: dict[str, Any] = {"window": window, "cool_down": self.cool_down_bucket}
        for i, bucket in enumerate(buckets):
            params[f"bucket{i}"] = bucket
            if caps is not None:
                params[f"cap{i}"] = caps[i]
        with self._connection() as connection:
            rows = connection.execute(_STATEMENTS[len(buckets), caps is not None], params)
            return {str(bucket): int(count) for bucket, count in rows}

    def _count_background(self, buckets: list[str], caps: list[int], window: int) -> bool:
        counted = self._count(buckets, window, caps)
        if len(counted) == len(buckets):
            return True
        if counted:  # room in one bucket but not the other: give back what was taken
            with self._connection() as connection:
                self._give_back(connection, list(counted), window)
        return False

    def _give_back(self, connection: Connection, buckets: list[str], window: int) -> None:
        w = StripeBudgetWindow
        connection.execute(
            update(w).where(w.bucket.in_(buckets), w.window_start_second == window).values(count=w.count - 1)
        )

    # -- Stripe's answers --------------------------------------------------------

    def answered(self, status: int, headers: Mapping[str, str] | None) -> bool:
        """Note Stripe's answer to an attempt; True when background work should send it again.

        A 429 of the rate limiter (not a lock timeout, which Stripe asks to retry with
        `Stripe-Should-Retry: true` and the library retries) pauses all background work.
        """
        if status != 429 or _header(headers, "Stripe-Should-Retry") == "true":
            return False
        self.cool_down(_retry_after(headers))
        metrics.stripe_budget_cool_downs.inc()
        work = _background.get()
        if work is not None:
            log.info("stripe budget: 429 for background work %s; cooling down", work.kind)
        return work is not None

    def cool_down(self, seconds: float) -> None:
        """Hold every process's background work for `seconds` (whole seconds, rounded up)."""
        until = math.ceil(now() + min(seconds, MAX_COOL_DOWN_SECONDS))
        insert: Any = sqlite_insert if self._db.is_sqlite else postgresql_insert
        statement = (
            insert(StripeBudgetWindow)
            .values(bucket=self.cool_down_bucket, window_start_second=until, count=0)
            .on_conflict_do_nothing()
        )
        with self._connection() as connection:
            connection.execute(statement)

    def cleanup(self) -> int:
        """Delete windows (and cool-downs) that ended more than a minute ago; how many went."""
        w = StripeBudgetWindow
        with self._connection() as connection:
            result = connection.execute(delete(w).where(w.window_start_second < int(now()) - KEEP_SECONDS))
            return int(result.rowcount)


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


def _retry_after(headers: Mapping[str, str] | None) -> float:
    """Stripe's `Retry-After` in seconds when it sends one; else a second (its limits are per second)."""
    value = _header(headers, "Retry-After")
    try:
        return max(float(value), 0.0) if value is not None else 1.0
    except ValueError:
        return 1.0
