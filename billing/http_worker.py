"""gunicorn's threaded worker, safe from slow clients (`worker_class` in gunicorn.conf.py).

gunicorn's gthread worker gives a connection to a thread as soon as its first
byte arrives, and the thread then reads the rest of the request blocking: a
client that sends its headers or its body a byte a second holds a thread, and a
few such clients hold all of them (issue 19: 60 of them stopped the service).
Here the thread reads only what has come, without waiting. A request all in
(nearly all are: they come in one go) is served at once, as gthread would; one
that is not goes back to the worker's event loop (the poller gthread keeps for
kept-alive connections), which reads the rest as it comes, the head and then
the body by its Content-Length or chunked framing, and then gives it to a
thread again. The thread parses it from memory with gunicorn's own parser, so
the request limits stay gunicorn's (gunicorn.conf.py). The loop never blocks
either: it closes connections by lingering in the poller, not in gunicorn's
blocking `close_graceful`.

- A request must be all in within REQUEST_READ_SECONDS of its connection's
  accept (or of its first byte, on a kept-alive connection): else 408, or, if
  nothing of it came, the connection just closes.
- A request that cannot come whole is handed over as it is and its connection
  closes after the answer: a body announced over its route's limit (the app's
  BODY_LIMIT_FOR, else MAX_CONTENT_LENGTH: the app answers 413 without reading
  it), or a head past gunicorn's limits.
- The answers gunicorn makes itself (400 for a malformed request, 414, 431,
  417, 501) come in the contract's JSON envelope, not as gunicorn's HTML page.

Written against gunicorn 27.0.1 (pinned): it builds on gthread's internals (its
TConn, poller and parser's unreader). tests/test_http_worker.py runs it.
"""

from __future__ import annotations

import errno
import json
import re
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import TConn, ThreadWorker

from billing.errors import envelope, for_status
from billing.request_log import new_request_id

REQUEST_READ_SECONDS = 30.0
LINGER_SECONDS = 2.0  # gunicorn's own, for a closing connection's last bytes from the client
LINGER_BYTES = 64 * 1024
RECV_BYTES = 64 * 1024
CHUNK_LINE_BYTES = 4096
DEFAULT_BODY_LIMIT = 1024 * 1024  # for an app without MAX_CONTENT_LENGTH

# What to do with the bytes of a request read so far.
WAIT = "wait"  # more to come
WHOLE = "whole"  # the request is all in (bytes of the next one may follow)
CUT = "cut"  # it can't come whole: its answer needs no more of it (an error), and the connection closes after

_HEX = re.compile(rb"[0-9A-Fa-f]+")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def request_state(data: bytes | bytearray, *, line_limit: int, head_limit: int, body_limit: int) -> str:
    """Whether `data`, read from a connection, holds its next request whole.

    Only the framing is read here; gunicorn's parser does the real parsing, so
    anything it would refuse is handed to it (CUT) as soon as that shows."""
    start = 2 if data[:2] == b"\r\n" else 0  # one empty line may come first (RFC 9112 section 2.2)
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        line_end = data.find(b"\r\n", start)
        if data.count(b"\n") != data.count(b"\r\n"):
            return CUT  # a bare LF: gunicorn refuses it at once
        if line_end < 0 and len(data) - start > line_limit + 2:
            return CUT  # 414
        return CUT if len(data) > head_limit else WAIT  # 431
    length: int | None = None
    chunked = False
    for line in bytes(data[start:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name, value = name.lower(), value.strip(b" \t")
        if name == b"content-length":
            if length is not None or not value.isdigit():
                return CUT
            length = int(value)
        elif name == b"transfer-encoding":
            if chunked or value.lower() != b"chunked":
                return CUT  # gunicorn answers 400 or 501
            chunked = True
    if chunked:
        return CUT if length is not None else _chunked_state(data, end + 4, head_limit, body_limit)
    if length is None:
        return WHOLE  # a request without Content-Length or chunked framing has no body (RFC 9112 section 6.3)
    if length > body_limit:
        return CUT
    return WHOLE if len(data) - (end + 4) >= length else WAIT


def _chunked_state(data: bytes | bytearray, position: int, head_limit: int, body_limit: int) -> str:
    total = 0
    while True:
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            return CUT if len(data) - position > CHUNK_LINE_BYTES else WAIT
        size = bytes(data[position:line_end]).split(b";", 1)[0].strip(b" \t")
        if not _HEX.fullmatch(size):
            return CUT
        if int(size, 16) == 0:  # the last chunk; the trailer section ends with an empty line
            if data.find(b"\r\n\r\n", line_end) >= 0:
                return WHOLE
            return CUT if len(data) - line_end > head_limit else WAIT
        total += int(size, 16)
        if total > body_limit:
            return CUT
        position = line_end + 2 + int(size, 16) + 2
        if position > len(data):
            return WAIT
        if data[position - 2 : position] != b"\r\n":
            return CUT


def wants_continue(data: bytes | bytearray) -> bool:
    """An HTTP/1.1 head, all in, with `Expect: 100-continue`: the client waits for a 100 before its body."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    lines = bytes(data[:end]).lower().split(b"\r\n")
    return lines[0].endswith(b"http/1.1") and any(
        name.strip() == b"expect" and value.strip(b" \t") == b"100-continue"
        for name, _, value in (line.partition(b":") for line in lines[1:])
    )


def error_answer(status: int) -> bytes:
    """A whole HTTP answer for an error the server finds before the app is involved."""
    request_id = new_request_id()
    body = json.dumps(envelope(for_status(status), request_id)).encode()
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    return (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-Request-Id: {request_id}\r\n"
        "X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n\r\n"
    ).encode("latin-1") + body


@dataclass
class _Reading:
    """A connection's next request, as far as it came."""

    deadline: float
    data: bytearray = field(default_factory=bytearray)
    state: str | None = None  # WAIT, WHOLE or CUT once looked at
    continued: bool = False  # a 100 Continue went out
    body_limit: int | None = None  # its route's, once its head is in


@dataclass
class _Captured:
    """Stands in for the client socket while gunicorn writes its HTML error page: only its status is kept."""

    sent: bytearray = field(default_factory=bytearray)

    def gettimeout(self) -> float:
        return 0.0

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def status(self) -> int | None:
        parts = bytes(self.sent).split(b" ", 2)
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


class _Conn(TConn):  # type: ignore[misc]  # gunicorn ships no types
    def __init__(self, worker: BufferingThreadWorker, *args: Any) -> None:
        super().__init__(*args)
        self.worker = worker
        self.reading: _Reading | None = None
        self.cut_short = False
        self.continued = False

    def close(self, graceful: bool = False) -> None:
        if graceful:
            self.worker.linger(self)  # gunicorn's close_graceful would block the loop for up to 2 s
        else:
            super().close()


_READ_MORE = object()  # handle()'s answer for a request not all in: the loop reads the rest


def invite_body(conn: _Conn, reading: _Reading) -> None:
    """A client that expects 100-continue sends its body only once told to (once)."""
    if not reading.continued and wants_continue(reading.data):
        reading.continued = True
        try:
            conn.sock.send(_CONTINUE)  # 25 bytes on a socket that has sent nothing else yet
        except OSError:
            pass


class BufferingThreadWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn ships no types
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.cfg.is_ssl or list(self.cfg.http_protocols) != ["h1"]:
            # TLS handshakes and HTTP/2 would be read in the loop, blocking it: the platform ends TLS.
            raise RuntimeError("billing.http_worker serves plain HTTP/1.1 only (no certfile, http_protocols=h1)")
        self.waiting: dict[_Conn, _Reading] = {}  # connections whose request the loop is reading
        self.lingering: dict[Any, tuple[float, int]] = {}  # socket -> deadline, bytes drained
        self.line_limit = self.head_limit = self.body_limit = 0
        self.body_limit_for: Callable[[str, str], int] | None = None

    def load_wsgi(self) -> None:
        super().load_wsgi()
        config = getattr(self.wsgi, "config", None) or {}
        self.body_limit = config.get("MAX_CONTENT_LENGTH") or DEFAULT_BODY_LIMIT
        self.body_limit_for = config.get("BODY_LIMIT_FOR")  # (method, target) -> bytes: a route may take more
        # The longest head gunicorn's parser accepts (its own formula, plus the request line).
        fields = self.cfg.limit_request_fields or 32768
        field_size = self.cfg.limit_request_field_size or 8190
        self.line_limit = self.cfg.limit_request_line or 8190
        self.head_limit = self.line_limit + 4 + fields * (field_size + 2) + 4

    def state_of(self, reading: _Reading) -> str:
        if reading.body_limit is None and self.body_limit_for is not None and b"\r\n\r\n" in reading.data:
            reading.body_limit = self._route_body_limit(reading.data)
        return request_state(
            reading.data,
            line_limit=self.line_limit,
            head_limit=self.head_limit,
            body_limit=reading.body_limit or self.body_limit,
        )

    def _route_body_limit(self, data: bytes | bytearray) -> int:
        assert self.body_limit_for is not None
        start = 2 if data[:2] == b"\r\n" else 0
        parts = bytes(data[start : data.find(b"\r\n", start)]).split(b" ")
        if len(parts) != 3:
            return int(self.body_limit)  # gunicorn's parser refuses the line
        return self.body_limit_for(parts[0].decode("latin-1"), parts[1].decode("latin-1"))

    # -- reading a request: a thread reads what has come, the loop waits for the rest ----------
    #
    # A request that comes in one go (nearly all) costs what it costs under gthread: the thread
    # that gets the connection reads it, without waiting. Only a request that is not all in goes
    # back to the loop, which reads the rest as it comes and then gives it to a thread again.

    def accept(self, listener: Any) -> None:
        try:
            client, address = listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self.enqueue_req(_Conn(self, self.cfg, client, address, listener.getsockname()))

    def enqueue_req(self, conn: _Conn) -> None:
        """A new connection, or the next request on one (gthread calls this when it is readable,
        or holds bytes of it already read)."""
        if conn.reading is None:
            conn.reading = _Reading(time.monotonic() + REQUEST_READ_SECONDS)
        super().enqueue_req(conn)

    def handle(self, conn: _Conn) -> Any:
        """In a thread: read what has come of the request, without waiting; serve it if it is all in."""
        reading = conn.reading
        if reading is not None:
            if reading.state is None:
                if not self.read_available(conn, reading):
                    return False  # the client went away
                if reading.state == WAIT:
                    return _READ_MORE
            conn.reading = None
            conn.init()  # the parser, on a connection's first request (plain HTTP/1: no TLS, no HTTP/2 here)
            conn.parser.unreader.unread(bytes(reading.data))
            conn.cut_short, conn.continued = reading.state == CUT, reading.continued
        return super().handle(conn)

    def read_available(self, conn: _Conn, reading: _Reading) -> bool:
        if conn.parser is not None:  # bytes read ahead of the last request: the start of this one
            reading.data += conn.parser.unreader.take_buffered()
        conn.sock.setblocking(False)
        while (state := self.state_of(reading)) == WAIT:
            if (data := _receive(conn.sock)) is None:
                break
            if not data:
                return False
            reading.data += data
        reading.state = state
        if state == WAIT:
            invite_body(conn, reading)
        return True

    def finish_request(self, conn: _Conn, fs: Any) -> None:
        if not fs.cancelled() and fs.exception() is None and fs.result() is _READ_MORE:
            assert conn.reading is not None
            conn.reading.state = None
            self.waiting[conn] = conn.reading
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_request_bytes, conn))
            return
        super().finish_request(conn, fs)

    def on_request_bytes(self, conn: _Conn, _client: Any) -> None:
        """In the loop: more of a request that is not all in."""
        reading = self.waiting[conn]
        if (data := _receive(conn.sock)) is None:
            return
        if data:
            reading.data += data
            state = self.state_of(reading)
            if state == WAIT:
                invite_body(conn, reading)
                return
            reading.state = state
        self.poller.unregister(conn.sock)
        del self.waiting[conn]
        if not data:  # the client went away
            self.nr_conns -= 1
            conn.close()
            return
        self.enqueue_req(conn)

    def handle_request(self, req: Any, conn: _Conn) -> Any:
        if conn.cut_short:
            req.must_close = True  # the rest of its body is not read: the connection can't carry another request
        if conn.continued or conn.cut_short:
            req._expected_100_continue = False  # sent already, or no body wanted
        return super().handle_request(req, conn)

    # -- timeouts and closing, in the loop ----------------------------------------------

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c, r in self.waiting.items() if r.deadline <= now]:
            reading = self.waiting.pop(conn)
            self.poller.unregister(conn.sock)
            self.nr_conns -= 1
            if reading.data.strip():
                try:
                    conn.sock.send(error_answer(408))
                except OSError:
                    pass
                conn.close(graceful=True)
            else:
                conn.close()
        for sock in [s for s, (deadline, _) in self.lingering.items() if deadline <= now]:
            self.end_linger(sock)

    def _cap_keepalive(self, deadline: float) -> None:
        """Stopping: kept-alive connections, and connections that sent nothing yet, close soon."""
        super()._cap_keepalive(deadline)
        for reading in self.waiting.values():
            if not reading.data:
                reading.deadline = min(reading.deadline, deadline)

    def linger(self, conn: TConn) -> None:
        """Close after the answer, reading what the client still sends for a while, in the loop."""
        sock = conn.sock
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            util.close(sock)
            return
        self.lingering[sock] = (time.monotonic() + LINGER_SECONDS, 0)
        self.poller.register(sock, selectors.EVENT_READ, self.on_linger_bytes)

    def on_linger_bytes(self, sock: Any) -> None:
        try:
            data = sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        deadline, drained = self.lingering[sock]
        if not data or drained + len(data) >= LINGER_BYTES:
            self.end_linger(sock)
        else:
            self.lingering[sock] = (deadline, drained + len(data))

    def end_linger(self, sock: Any) -> None:
        del self.lingering[sock]
        self.poller.unregister(sock)
        util.close(sock)

    # -- gunicorn's own error answers, in the contract's envelope -----------------------------

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        captured = _Captured()
        super().handle_error(req, captured, addr, exc)  # gunicorn's log line and its choice of status
        status = captured.status()
        if status is not None:
            try:
                util.write_nonblock(client, error_answer(status))
            except Exception:
                self.log.debug("Failed to send error message.")


def _receive(sock: Any) -> bytes | None:
    """What has arrived on a non-blocking socket: None if nothing yet, b"" once it is closed (or broken)."""
    try:
        data: bytes = sock.recv(RECV_BYTES)
        return data
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""
