"""A TCP proxy in front of PostgreSQL that a test can cut, as an outage or a restart does."""

from __future__ import annotations

import os
import socket
import threading


def bind_local(port: int | None = None) -> socket.socket:
    """A listening loopback socket: on `port`, or the first free one in LOCAL_PORT_RANGE
    (a shared machine), or any. Bound at once, so two test processes never pick the same."""
    low, _, high = os.environ.get("LOCAL_PORT_RANGE", "0-0").partition("-")
    candidates = [port] if port is not None else range(int(low), int(high or low) + 1)
    for candidate in candidates:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", candidate))
        except OSError:
            listener.close()
            continue
        listener.listen(64)
        return listener
    raise RuntimeError(f"no free port in LOCAL_PORT_RANGE={os.environ.get('LOCAL_PORT_RANGE')}")


class DatabaseProxy:
    """Forwards 127.0.0.1:<port> to the database. `cut()`: connections are dropped and new
    ones refused (the database is down); `restore()`: it is back."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = bind_local()
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def restore(self) -> None:
        if self._listener is not None:
            return
        self._listener = bind_local(self.port)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            dropped, self._open = self._open, set()
        if listener is not None:
            # Stops listening now: a close alone waits for the accepting thread's accept() to
            # return, which only a new connection makes it do (the port stays taken until then).
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        for sock in dropped:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._open.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.difference_update((source, sink))
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def __enter__(self) -> DatabaseProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()
