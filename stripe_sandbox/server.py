"""The emulator as its own HTTP server (`python -m stripe_sandbox`), as stripe-mock runs.

A client points its `stripe` library at it (the service: STRIPE_API_BASE and any `sk_test_`
key). Each request goes to the same entry the in-process client uses
(`SandboxHTTPClient.request`), so both answer alike; what differs is only the transport, here
the library's own (requests over HTTP). Its events go, signed, to `webhook_url` when one is
given, as Stripe sends them; its hosted invoice pages are served here, on its own origin.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests
from requests.structures import CaseInsensitiveDict

from stripe_sandbox import hosted_invoices
from stripe_sandbox.clock import ClockAdvancing, SandboxClock
from stripe_sandbox.database import SessionSource, install
from stripe_sandbox.errors import SandboxError
from stripe_sandbox.http_client import SandboxHTTPClient, authenticate
from stripe_sandbox.invoice_engine import HOSTED_PATH
from stripe_sandbox.webhook_retries import DELIVERY_TIMEOUT_SECONDS
from stripe_sandbox.webhooks import WebhookSender

logger = logging.getLogger(__name__)

HOSTED_PREFIX = HOSTED_PATH.split("{", 1)[0]  # /sandbox/invoices/
CLOCK_PATH = "/sandbox/clock"
MAX_BODY_BYTES = 1024 * 1024
_CLOCK_UNITS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}


class SandboxServer:
    """Serves `database`'s emulator on `listener` (a bound, listening socket) until `shutdown()`."""

    def __init__(
        self,
        database: SessionSource,
        listener: socket.socket,
        *,
        webhook_url: str = "",
        webhook_secret: str = "",
        webhooks_before_answer: bool = False,
        rate_limits: str = "",
        request_log: str = "",
    ) -> None:
        """`webhooks_before_answer`: a write's events are delivered before it is answered, one run at a time
        (tests that read an event's effect as soon as the call returns), not in the background as Stripe does."""
        install(database)
        host, port = listener.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        self.webhooks: WebhookSender | None = None
        if webhook_url:
            self.webhooks = WebhookSender(
                database, webhook_secret, _post_to(webhook_url), background=not webhooks_before_answer
            )
        self.client = SandboxHTTPClient(
            database, webhooks=self.webhooks, rate_limits=rate_limits, request_log=request_log, public_url=self.url
        )
        self.clock = SandboxClock(database, webhooks=self.webhooks, public_url=self.url)
        self.database = database
        self._http = ThreadingHTTPServer((host, port), _handler(self), bind_and_activate=False)
        self._http.daemon_threads = True
        self._http.socket.close()
        self._http.socket = listener

    def serve_forever(self) -> None:
        if self.webhooks is not None and self.webhooks.background:
            self.webhooks.start()
        self._http.serve_forever(poll_interval=0.2)

    def start(self) -> threading.Thread:
        """Serve in a daemon thread (tests)."""
        thread = threading.Thread(target=self.serve_forever, name="stripe-sandbox-server", daemon=True)
        thread.start()
        return thread

    def shutdown(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        if self.webhooks is not None and self.webhooks.background:
            self.webhooks.stop()


def _post_to(url: str) -> Any:
    def post(payload: bytes, headers: Any) -> int:
        return requests.post(url, data=payload, headers=dict(headers), timeout=DELIVERY_TIMEOUT_SECONDS).status_code

    return post


def _advance_seconds(body: bytes) -> float:
    """The advance's length from its JSON body; Stripe's invalid_request_error (400) for anything else."""
    try:
        data = json.loads(body or b"{}")
        seconds = sum(float(data.get(unit) or 0) * size for unit, size in _CLOCK_UNITS.items())
    except (ValueError, TypeError, AttributeError):
        raise SandboxError(400, "Send a JSON object with seconds, minutes, hours or days.") from None
    if not seconds > 0:
        raise SandboxError(400, "Advance by a positive amount of time: seconds, minutes, hours or days.")
    return seconds


def _basic_user(authorization: str) -> str:
    if not authorization.startswith("Basic "):
        return ""
    try:
        return base64.b64decode(authorization[6:]).decode().partition(":")[0]
    except ValueError:
        return ""


def _handler(server: SandboxServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the library's requests session expects
        server_version = "stripe-sandbox"

        def do_GET(self) -> None:
            if self.path.startswith(HOSTED_PREFIX):
                self._hosted_invoice()
            elif self.path.split("?", 1)[0] == CLOCK_PATH:
                self._clock(advance=False)
            else:
                self._api("get")

        def do_POST(self) -> None:
            if self.path.split("?", 1)[0] == CLOCK_PATH + "/advance":
                self._clock(advance=True)
            else:
                self._api("post")

        def _clock(self, *, advance: bool) -> None:
            """The sandbox clock (GET /sandbox/clock, POST /sandbox/clock/advance with JSON
            `{"seconds"|"minutes"|"hours"|"days": n}`), for a service on STRIPE_API_BASE, whose own
            /sandbox routes don't exist. An advance answers at once, `advancing`; GET says `ready`
            once what came due has run and its events have been delivered (their effect in the
            service is the service's to say: its /readyz `events.pending`)."""
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if 0 < length <= MAX_BODY_BYTES else b""
            try:
                authenticate(CaseInsensitiveDict(self._headers()))
                if advance:
                    reading = server.clock.advance_in_background(_advance_seconds(body))
                else:
                    reading = server.clock.published()
            except SandboxError as error:
                answer = {"error": error.hash()}
                self._send(error.status, json.dumps(answer).encode(), {"Content-Type": "application/json"})
                return
            except ClockAdvancing:
                message = {"error": {"type": "invalid_request_error", "message": "The clock is still advancing."}}
                self._send(409, json.dumps(message).encode(), {"Content-Type": "application/json", "Retry-After": "1"})
                return
            shown = {"now": reading.now, "status": reading.status}
            self._send(200, json.dumps(shown).encode(), {"Content-Type": "application/json"})

        def do_DELETE(self) -> None:
            self._api("delete")

        def _api(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._send(
                    413,
                    b'{"error": {"type": "invalid_request_error", "message": "Request too large."}}',
                    {"Content-Type": "application/json"},
                    close=True,
                )
                return
            body = self.rfile.read(length) if length else None
            try:
                text, status, headers = server.client.request(method, server.url + self.path, self._headers(), body)
            except Exception:  # Stripe's answer to its own failure: a 500 api_error (logged here, not sent)
                logger.exception("sandbox server: %s %s failed", method.upper(), self.path.split("?", 1)[0])
                error = {"error": {"type": "api_error", "message": "An unknown error occurred in the sandbox."}}
                self._send(500, json.dumps(error).encode(), {"Content-Type": "application/json"})
                return
            self._send(status, text.encode(), dict(headers))

        def _headers(self) -> dict[str, str]:
            sent = dict(self.headers)
            basic = _basic_user(self.headers.get("Authorization", ""))
            if basic:  # `curl -u sk_test_...:`, which Stripe takes as the key too
                sent["Authorization"] = f"Bearer {basic}"
            return sent

        def _hosted_invoice(self) -> None:
            parts = self.path.split("?", 1)[0][len(HOSTED_PREFIX) :].split("/")
            invoice = hosted_invoices.find(server.database, parts[0], parts[1]) if len(parts) in (2, 3) else None
            if invoice is None or (len(parts) == 3 and parts[2] != "pdf"):
                self._send(404, b"Not found", {"Content-Type": "text/plain"})
            elif len(parts) == 3:
                self._send(200, hosted_invoices.pdf(invoice), {"Content-Type": "application/pdf"})
            else:
                self._send(200, hosted_invoices.html(invoice).encode(), {"Content-Type": "text/html; charset=utf-8"})

        def _send(self, status: int, body: bytes, headers: dict[str, str], close: bool = False) -> None:
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() not in ("content-length", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("sandbox server: " + format, *args)

    return Handler


def bind(host: str, port: int, port_range: str = "") -> socket.socket:
    """A listening socket on `port`; port 0: the first free one in `port_range` (`low-high`, a shared
    machine's share), or any free one. Bound here, so two servers never pick the same."""
    low, _, high = (port_range or "0-0").partition("-")
    candidates = [port] if port else range(int(low), int(high or low) + 1)
    for candidate in candidates:
        listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, candidate))
        except OSError:
            listener.close()
            continue
        listener.listen(128)
        return listener
    raise OSError(f"no free port on {host}" + (f" in {port_range}" if port_range else f": {port}"))
