"""Issue 19, item 4: slow clients must not stop the service.

    BENCH_ONLY=slow python3 dev.py bench
    # BENCH_SLOW_CONNECTIONS (60), BENCH_SLOW_SECONDS (each phase, 60), BENCH_SLOW_INTERVAL (s between
    # an attacker's bytes, 1), BENCH_WORKER_CLASS (another gunicorn worker class, e.g. gthread, to see
    # the attack succeed), BENCH_COMPARE_ROUNDS (the throughput comparison's turns, 8; 0: none)

The service runs as `bench/run.py` serves it (gunicorn, gunicorn.conf.py's worker class, 2 workers).
Two normal clients make authenticated GETs of a billing account back to back, 10 s timeout: one
over a kept-alive connection, one on a new connection each time; a quiet phase, then the same
while the attack holds BENCH_SLOW_CONNECTIONS connections open: half send their headers one
byte every BENCH_SLOW_INTERVAL seconds, half send whole headers announcing a 100,000-byte JSON body
and then the body one byte at a time. An attacker the server hangs up on connects again at once.
Prints each client's p50/p99 (a timed-out request counts as 10 s) and timeouts in both phases,
and what the server did to the attackers. Then the throughput of 16 kept-alive clients without
an attack (`dev.py bench`'s measure), gunicorn.conf.py's worker against plain gthread, with the
servers' CPU time per request. Asserts nothing.
"""

from __future__ import annotations

import os
import socket
import statistics
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench.run import Client, pct, serve, setup_workspace, throughput
from billing.cli import run_migrations

TIMEOUT = 10.0
BODY_BYTES = 100_000


@dataclass
class Figures:
    latency: list[float] = field(default_factory=list)
    timeouts: int = 0
    errors: int = 0


def normal_client(url: str, token: str, fresh: bool, stop: threading.Event, out: Figures) -> None:
    session = requests.Session()
    session.headers["Authorization"] = token
    while not stop.is_set():
        if fresh:
            session.close()  # a new connection for each request, as a new visitor would open
        started = time.perf_counter()
        try:
            response = session.get(url, timeout=TIMEOUT)
            out.latency.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                out.errors += 1
        except requests.Timeout:
            out.latency.append(TIMEOUT * 1000)
            out.timeouts += 1
            session.close()
        except requests.RequestException:
            out.errors += 1
            session.close()


@dataclass
class Attacker:
    """One slow connection; it reopens whenever the server closes it."""

    address: tuple[str, int]
    body: bool
    sock: socket.socket | None = None
    header: bytes = b""
    sent: int = 0
    closed_by_server: int = 0
    answers: dict[str, int] = field(default_factory=dict)

    def opening(self) -> bytes:
        if self.body:
            return (
                f"POST /workspaces HTTP/1.1\r\nHost: {self.address[0]}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {BODY_BYTES}\r\n\r\n"
            ).encode()
        return b""  # the request line and headers come a byte at a time too

    def next_byte(self) -> bytes:
        return b" " if self.body else b"X"

    def connect(self) -> None:
        self.sock = socket.create_connection(self.address, timeout=5)
        self.sock.setblocking(False)
        self.sent = 0
        self.header = f"GET /healthz HTTP/1.1\r\nHost: {self.address[0]}\r\nX-Slow: ".encode()
        if opening := self.opening():
            self.sock.sendall(opening)

    def tick(self) -> None:
        if self.sock is None:
            self.connect()
            return
        try:
            answer = self.sock.recv(4096)  # anything readable means the server answered or hung up
            self.hung_up(answer)
            return
        except BlockingIOError:
            pass
        except OSError:
            self.hung_up(b"")
            return
        try:
            if not self.body and self.sent < len(self.header):
                self.sock.send(self.header[self.sent : self.sent + 1])
            else:
                self.sock.send(self.next_byte())
            self.sent += 1
        except OSError:
            self.hung_up(b"")

    def hung_up(self, answer: bytes) -> None:
        status = answer.split(b"\r\n", 1)[0].decode("latin-1")[9:12] if answer.startswith(b"HTTP/") else "none"
        self.answers[status] = self.answers.get(status, 0) + 1
        self.closed_by_server += 1
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.connect()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def attack(
    address: tuple[str, int], count: int, interval: float, stop: threading.Event, attackers: list[Attacker]
) -> None:
    attackers.extend(Attacker(address, body=i % 2 == 1) for i in range(count))
    for attacker in attackers:
        attacker.connect()
    while not stop.wait(interval / count):
        # One attacker at a time, so each sends a byte every `interval` seconds.
        attacker = attackers[0]
        attackers.append(attackers.pop(0))
        try:
            attacker.tick()
        except OSError:  # could not even connect: the listen queue is full
            attacker.answers["connect failed"] = attacker.answers.get("connect failed", 0) + 1
            attacker.sock = None
    for attacker in attackers:
        attacker.close()


def phase(url: str, token: str, seconds: float) -> dict[str, Figures]:
    stop = threading.Event()
    figures = {"kept-alive": Figures(), "new connection": Figures()}
    threads = [
        threading.Thread(target=normal_client, args=(url, token, name == "new connection", stop, out))
        for name, out in figures.items()
    ]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return figures


def report(label: str, figures: dict[str, Figures]) -> None:
    for name, f in figures.items():
        print(
            f"  {label:7} {name:15} {len(f.latency):6d} requests   p50 {pct(f.latency, 0.5):8.1f} ms   "
            f"p99 {pct(f.latency, 0.99):8.1f} ms   timeouts {f.timeouts}   other errors {f.errors}"
        )


def slow_clients_section(database_url: str) -> None:
    count = int(os.environ.get("BENCH_SLOW_CONNECTIONS", "60"))
    seconds = float(os.environ.get("BENCH_SLOW_SECONDS", "60"))
    interval = float(os.environ.get("BENCH_SLOW_INTERVAL", "1"))
    worker_class = os.environ.get("BENCH_WORKER_CLASS")  # None: gunicorn.conf.py's
    with serve(database_url, worker_class=worker_class) as server:
        client = Client(server.base, "bench-slow-clients")
        world = setup_workspace(client, accounts=1)
        url = f"{server.base}/workspaces/{world['ws']}/billing-accounts/{world['accounts'][0]}"
        token = str(client.session.headers["Authorization"])
        phase(url, token, 2)  # warm-up
        quiet = phase(url, token, seconds)
        stop = threading.Event()
        attackers: list[Attacker] = []
        host, port = server.base.removeprefix("http://").split(":")
        attack_thread = threading.Thread(target=attack, args=((host, int(port)), count, interval, stop, attackers))
        attack_thread.start()
        time.sleep(min(5.0, interval * 3))  # every attacker has sent something
        attacked = phase(url, token, seconds)
        stop.set()
        attack_thread.join()
    print(
        f"slow clients: gunicorn worker class {worker_class or 'from gunicorn.conf.py'}, 2 workers; "
        f"{count} slow connections (half headers, half body), a byte every {interval:g} s each; "
        f"{seconds:g} s per phase"
    )
    report("quiet", quiet)
    report("attack", attacked)
    answers: dict[str, int] = {}
    for attacker in attackers:
        for status, n in attacker.answers.items():
            answers[status] = answers.get(status, 0) + n
    print(
        f"  the server closed attackers' connections {sum(a.closed_by_server for a in attackers)} times "
        f"(answers: {', '.join(f'{k}: {v}' for k, v in sorted(answers.items())) or 'none'})"
    )


def server_cpu_seconds(pid: int) -> float:
    """The gunicorn arbiter's and its workers' CPU time so far (Linux's /proc)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        fields = [Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split() for p in [str(pid), *children]]
    except OSError:
        return float("nan")
    return sum(int(f[11]) + int(f[12]) for f in fields) / os.sysconf("SC_CLK_TCK")


def throughput_section(tmp: str) -> None:
    """Normal clients' throughput, gthread vs the configured worker, both running at once and
    measured in turns: on a shared machine, runs minutes apart differ more than the workers do."""
    rounds, seconds = int(os.environ.get("BENCH_COMPARE_ROUNDS", "8")), 4.0
    classes: list[str | None] = [os.environ.get("BENCH_WORKER_CLASS"), "gthread"]  # None: gunicorn.conf.py's
    figures: dict[str | None, tuple[list[float], list[float], list[float]]] = {c: ([], [], []) for c in classes}
    with ExitStack() as stack:
        servers = []
        for i, worker_class in enumerate(classes):
            database_url = f"sqlite:///{tmp}/throughput{i}.sqlite3"
            run_migrations(database_url)
            servers.append(stack.enter_context(serve(database_url, worker_class=worker_class)))
        for server in servers:
            throughput(server, 2, 16)  # warm-up
        for _ in range(rounds):
            for worker_class, server in zip(classes, servers, strict=True):
                cpu = server_cpu_seconds(server.process.pid)
                rps, n, _, load = throughput(server, seconds, 16)
                rates, cpu_ms, latency = figures[worker_class]
                rates.append(rps)
                cpu_ms.append((server_cpu_seconds(server.process.pid) - cpu) * 1000 / max(n, 1))
                latency += load.latency
    print(f"throughput GET billing-account, 16 kept-alive clients, no attack ({rounds} turns of {seconds:g} s each):")
    for worker_class, (rates, cpu_ms, latency) in figures.items():
        label = worker_class or "gunicorn.conf.py's worker"
        print(
            f"  {label:26} median {statistics.median(rates):5.0f} req/s (min {min(rates):.0f}, max "
            f"{max(rates):.0f})   server CPU {statistics.median(cpu_ms):.2f} ms/request   "
            f"p50 {pct(latency, 0.5):.1f} ms   p99 {pct(latency, 0.99):.1f} ms"
        )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        database_url = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{tmp}/slow.sqlite3"
        run_migrations(database_url)
        slow_clients_section(database_url)
        if os.environ.get("BENCH_COMPARE_ROUNDS") != "0":
            throughput_section(tmp)
