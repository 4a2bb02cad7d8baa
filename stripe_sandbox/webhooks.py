"""Webhook delivery of sandbox events, signed as Stripe signs them, and as Stripe delivers them.

    sender = WebhookSender(database, "whsec_...", transport, background=True)
    http_client = SandboxHTTPClient(database, webhooks=sender)

`transport(payload, headers) -> HTTP status` does the POST (to the service's
webhook endpoint, or straight into a test). A 2xx within the timeout marks
an event delivered; anything else (another status, an exception, a slower
answer) is a failed attempt.

By default deliveries go out as Stripe's do: up to `concurrency` at once, in
no particular order (what is due is shuffled; pass `rng` to reproduce an
order), each event retried on its own on Stripe's test-mode schedule in
sandbox time and given up (failed) after the last retry (`webhook_retries`),
so a failing event holds back no other. `ordered=True` keeps the emulator's
first behaviour for tests that need it: one at a time, in the order recorded,
a failure stopping the run (and retried on the next one, never given up).

Several senders (processes) may share a database: a sender leases the events
it is about to send (in ordered mode it never starts while another holds the
oldest pending one). Nothing is held open while sending, so a receiver may
call the sandbox: the `notify()` that follows, on a thread delivering for this
sender, is a no-op, since the run it belongs to loops until nothing is due.

With `background=True` a single thread runs the deliveries; `notify()` (called
by `SandboxHTTPClient` after each committed write and by `SandboxClock` after
advancing) wakes it, starting it on first use (so it also starts in forked
worker processes), and it polls now and then for events other processes
recorded and for retries the clock brought due. Otherwise `notify()` delivers
synchronously, and `deliver_pending()` can always be called by hand.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from stripe_sandbox import events
from stripe_sandbox.clock import sandbox_time
from stripe_sandbox.database import SessionSource
from stripe_sandbox.models import SandboxObject, SandboxWebhookDelivery
from stripe_sandbox.store import Store
from stripe_sandbox.webhook_retries import DELIVERY_TIMEOUT_SECONDS, TEST_MODE_RETRY_DELAYS, next_attempt_at

logger = logging.getLogger(__name__)

Transport = Callable[[bytes, Mapping[str, str]], int]

USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"


def signature_header(payload: bytes, secret: str, timestamp: int) -> str:
    """`Stripe-Signature`: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<payload>" keyed by the secret>."""
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


@dataclass(frozen=True)
class _Claimed:
    event_id: str
    payload: bytes


class WebhookSender:
    def __init__(
        self,
        database: SessionSource,
        secret: str,
        transport: Transport,
        *,
        background: bool = False,
        concurrency: int = 32,
        ordered: bool = False,
        rng: random.Random | int | None = None,
        timeout_seconds: float = DELIVERY_TIMEOUT_SECONDS,
        retry_delays: Sequence[float] = TEST_MODE_RETRY_DELAYS,
        after_run: Callable[[], None] | None = None,
        lease_seconds: float = 60.0,
        poll_seconds: float = 1.0,
        retry_seconds: float = 2.0,
        batch_size: int = 500,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._database = database
        self._secret = secret
        self._transport = transport
        self.background = background
        self.concurrency = concurrency
        self.ordered = ordered
        self.timeout_seconds = timeout_seconds
        # Called after each top-level synchronous run (e.g. to run the jobs the deliveries queued).
        self.after_run = after_run
        self._rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        self._retry_delays = tuple(retry_delays)
        self._lease_seconds = lease_seconds
        self._poll_seconds = poll_seconds
        self._retry_seconds = retry_seconds
        self._batch_size = batch_size
        self._kinds = {events.OBJECT_TYPE: events.KIND}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._stopped_by_request = False
        self._thread: threading.Thread | None = None
        self._last_run_failed = False
        # Set on threads taking part in a run (its caller, its workers): a run they start is nested.
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0

    # -- delivery ---------------------------------------------------------------------

    def deliver_pending(self) -> int:
        """Deliver what is due until nothing is; returns how many were delivered.

        Concurrent and shuffled, or (ordered) one at a time in order until one
        fails. A call from within a run (a receiver's Stripe call) returns 0 at
        once: the run loops and sends what that call recorded.
        """
        if self._in_run():
            return 0
        self._local.in_run = True
        try:
            delivered = self._deliver_in_order() if self.ordered else self._deliver_due()
        finally:
            self._local.in_run = False
        if self.after_run is not None and not self.background and not getattr(self._local, "in_after_run", False):
            # Not re-entered: runs its own Stripe calls start deliver, and it goes on until done.
            self._local.in_after_run = True
            try:
                self.after_run()
            finally:
                self._local.in_after_run = False
        return delivered

    def _in_run(self) -> bool:
        return bool(getattr(self._local, "in_run", False))

    def _deliver_due(self) -> int:
        delivered = 0
        self._last_run_failed = False
        while True:
            claimed = self._claim_due()
            if not claimed:
                return delivered
            self._rng.shuffle(claimed)
            pool = self._executor()
            for done in [pool.submit(self._deliver_one, item) for item in claimed]:
                if done.result():
                    delivered += 1
                else:
                    self._last_run_failed = True

    def _deliver_in_order(self) -> int:
        delivered = 0
        self._last_run_failed = False
        while True:
            claimed = self._claim_in_order()
            if not claimed:
                return delivered
            for index, item in enumerate(claimed):
                if not self._attempt(item):
                    self._release([c.event_id for c in claimed[index + 1 :]])
                    self._last_run_failed = True
                    return delivered
                delivered += 1

    def deliveries_due(self) -> bool:
        """Whether an event recorded is still to be delivered (now, or at its retry after a
        failure; one given up is not). The sandbox clock is not `ready` until none is: the
        API can't show what the service was not told."""
        with self._database.read() as session:
            d = SandboxWebhookDelivery
            return session.scalars(select(d.event_id).where(d.pending.is_(True)).limit(1)).first() is not None

    def _deliver_one(self, item: _Claimed) -> bool:
        """One delivery on a pool thread, which is then part of the run."""
        self._local.in_run = True
        try:
            return self._attempt(item)
        except Exception:  # the database failed us: the lease runs out and the event is sent again
            logger.exception("sandbox webhooks: delivery of %s failed", item.event_id)
            return False
        finally:
            self._local.in_run = False

    def _attempt(self, item: _Claimed) -> bool:
        started = time.monotonic()
        status = self._send(item.payload)
        if status is not None and time.monotonic() - started > self.timeout_seconds:
            # Stripe hung up at the timeout: whatever the receiver did, the attempt failed.
            logger.warning("sandbox webhooks: %s timed out", item.event_id)
            status = None
        ok = status is not None and 200 <= status < 300
        self._finish(item.event_id, status, ok)
        return ok

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            # A forked worker process inherits the object but not the threads.
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="sandbox-webhook")
                self._pool_pid = os.getpid()
            return self._pool

    def _claim_due(self) -> list[_Claimed]:
        now = time.time()
        with self._database.write() as session:
            d = SandboxWebhookDelivery
            due = or_(d.next_attempt_at.is_(None), d.next_attempt_at <= sandbox_time(session))
            free = or_(d.lease_until.is_(None), d.lease_until <= now)
            rows = list(
                session.scalars(
                    select(d)
                    .where(d.pending.is_(True), due, free)
                    .order_by(d.seq, d.event_id)
                    .limit(self._batch_size)
                    .with_for_update(skip_locked=True)
                )
            )
            # Long enough for every one to time out, `concurrency` at a time.
            lease = self._lease_seconds + math.ceil(len(rows) / self.concurrency) * self.timeout_seconds
            return self._lease(session, rows, now + lease)

    def _claim_in_order(self) -> list[_Claimed]:
        now = time.time()
        with self._database.write() as session:
            d = SandboxWebhookDelivery
            rows = list(
                session.scalars(
                    select(d)
                    .where(d.pending.is_(True))
                    .order_by(d.seq, d.event_id)
                    .limit(self._batch_size)
                    .with_for_update()
                )
            )
            taken = []
            for row in rows:
                if row.lease_until is not None and row.lease_until > now:
                    break  # another sender is delivering from here on: keep the order
                taken.append(row)
            return self._lease(session, taken, now + self._lease_seconds)

    def _lease(self, session: Session, rows: list[SandboxWebhookDelivery], until: float) -> list[_Claimed]:
        if not rows:
            return []
        store = Store(session, self._kinds, time.time())
        claimed = []
        for row in rows:
            row.lease_until = until
            event = session.get(SandboxObject, row.event_id)
            assert event is not None, f"delivery of missing event {row.event_id}"
            body = store.present(event)
            claimed.append(_Claimed(row.event_id, json.dumps(body, indent=2).encode()))
        return claimed

    def _send(self, payload: bytes) -> int | None:
        # Real time, not sandbox time: the receiver checks the timestamp against its own clock.
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            "Stripe-Signature": signature_header(payload, self._secret, int(time.time())),
        }
        try:
            return int(self._transport(payload, headers))
        except Exception as error:  # the service is not listening (yet): retried, one line is enough
            logger.warning("sandbox webhooks: delivery failed (%s)", type(error).__name__)
            return None

    def _finish(self, event_id: str, status: int | None, ok: bool) -> None:
        with self._database.write() as session:
            row = session.get(SandboxWebhookDelivery, event_id, with_for_update=True)
            if row is None:  # tables wiped meanwhile (tests)
                return
            now = time.time()
            row.attempts += 1
            row.last_attempt_at = now
            row.last_status = status
            row.lease_until = None
            if ok:
                row.pending = False
                row.delivered_at = now
                row.next_attempt_at = None
            elif row.pending and not self.ordered:
                row.next_attempt_at = next_attempt_at(row.attempts, sandbox_time(session), self._retry_delays)
                if row.next_attempt_at is None:
                    row.pending = False  # given up: the event's delivery failed

    def _release(self, event_ids: list[str]) -> None:
        if not event_ids:
            return
        with self._database.write() as session:
            for row in session.scalars(
                select(SandboxWebhookDelivery).where(SandboxWebhookDelivery.event_id.in_(event_ids)).with_for_update()
            ):
                row.lease_until = None

    # -- triggering -------------------------------------------------------------------

    def notify(self) -> None:
        """Something was recorded: deliver now, or wake the background thread."""
        if not self.background:
            try:
                self.deliver_pending()
            except Exception:  # delivery must never fail the API request that triggered it
                logger.exception("sandbox webhooks: delivery run failed")
            return
        if not self._stopped_by_request:
            self.start()
        self._wake.set()

    def start(self) -> None:
        """Start the background thread (idempotent)."""
        if not self.background:
            raise RuntimeError("this WebhookSender delivers synchronously (background=False)")
        with self._lock:
            self._stopped_by_request = False
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="sandbox-webhooks", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the background thread after its current delivery."""
        with self._lock:
            self._stopped_by_request = True
            thread = self._thread
            self._stopping.set()
            self._wake.set()
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.deliver_pending()
            except Exception:
                logger.exception("sandbox webhooks: delivery run failed")
                self._last_run_failed = True
            # Ordered mode retries the event it stopped at soon; otherwise retries are scheduled.
            wait = self._retry_seconds if self.ordered and self._last_run_failed else self._poll_seconds
            self._wake.wait(wait)
            self._wake.clear()
