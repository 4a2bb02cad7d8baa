"""Webhook delivery of sandbox events, signed as Stripe signs them.

    sender = WebhookSender(database, "whsec_...", transport, background=True)
    http_client = SandboxHTTPClient(database, webhooks=sender)

`transport(payload, headers) -> HTTP status` does the POST (to the service's
webhook endpoint, or straight into a test). Events go out one at a time in
the order they were recorded; a 2xx marks one delivered, anything else (or an
exception) leaves it pending, with the attempt counted, and stops the run so
that order holds: the next run starts again from it.

Several senders (processes) may share a database: a sender leases the events
it is about to send, and never starts while another holds the oldest pending
one. Nothing is held open while sending, so a receiver may call the sandbox
(which may start a nested, empty, run).

With `background=True` a single thread delivers; `notify()` (called by
`SandboxHTTPClient` after each committed write and by `SandboxClock` after
processing) wakes it, starting it on first use (so it also starts in forked
worker processes), and it polls now and then for events other processes
recorded. Otherwise `notify()` delivers synchronously, and `deliver_pending()`
can always be called by hand.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import select

from stripe_sandbox import events
from stripe_sandbox.models import SandboxObject, SandboxWebhookDelivery
from stripe_sandbox.storage import SessionSource
from stripe_sandbox.store import Store

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
    def __init__(self, database: SessionSource, secret: str, transport: Transport, *, background: bool = False,
                 lease_seconds: float = 60.0, poll_seconds: float = 1.0, retry_seconds: float = 2.0,
                 batch_size: int = 50) -> None:
        self._database = database
        self._secret = secret
        self._transport = transport
        self.background = background
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

    # -- delivery ---------------------------------------------------------------------

    def deliver_pending(self) -> int:
        """Deliver pending events in order until none is left or one fails; returns how many were delivered."""
        delivered = 0
        self._last_run_failed = False
        while True:
            claimed = self._claim()
            if not claimed:
                return delivered
            for index, item in enumerate(claimed):
                status = self._send(item.payload)
                ok = status is not None and 200 <= status < 300
                self._finish(item.event_id, status, ok)
                if not ok:
                    self._release([c.event_id for c in claimed[index + 1:]])
                    self._last_run_failed = True
                    return delivered
                delivered += 1

    def deliveries_due(self) -> bool:
        """Whether an event recorded is still waiting for its delivery (due now: a pending
        event is retried every `retry_seconds`). The sandbox clock is not `ready` until none is."""
        with self._database.read() as session:
            d = SandboxWebhookDelivery
            return session.scalars(select(d.event_id).where(d.pending.is_(True)).limit(1)).first() is not None

    def _claim(self) -> list[_Claimed]:
        now = time.time()
        with self._database.write() as session:
            d = SandboxWebhookDelivery
            rows = list(session.scalars(
                select(d).where(d.pending.is_(True)).order_by(d.seq, d.event_id).limit(self._batch_size)
                .with_for_update()))
            taken = []
            for row in rows:
                if row.lease_until is not None and row.lease_until > now:
                    break  # another sender is delivering from here on: keep the order
                taken.append(row)
            if not taken:
                return []
            store = Store(session, self._kinds, now)
            claimed = []
            for row in taken:
                row.lease_until = now + self._lease_seconds
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

    def _release(self, event_ids: list[str]) -> None:
        if not event_ids:
            return
        with self._database.write() as session:
            for row in session.scalars(select(SandboxWebhookDelivery)
                                       .where(SandboxWebhookDelivery.event_id.in_(event_ids)).with_for_update()):
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
            wait = self._retry_seconds if self._last_run_failed else self._poll_seconds
            self._wake.wait(wait)
            self._wake.clear()
