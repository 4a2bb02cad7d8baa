"""The renewal storm: Stripe renews N subscriptions at once; how does the service cope?

    BENCH_ONLY=storm python3 dev.py bench

On PostgreSQL, from an empty database for each N (BENCH_STORM_N, default "200,1000"):
1. build N billing accounts (pooled workspaces of 10, so no trial), each with a card and a
   monthly subscription, through the API under the Procfile's processes, rate limits off;
2. the bench is Stripe's webhook delivery: the emulator posts its events to a relay here
   (SANDBOX_WEBHOOK_URL), which answers 200 at once; the bench delivers them to
   POST /webhooks/stripe itself, 32 at a time, in random order, re-signed just before
   sending, a failed delivery retried once, 60 s later. The build's events are delivered
   before the storm;
3. restart with Stripe's live rate limits, measure a user's writes in a quiet window, then
   advance the sandbox clock 32 days (every subscription renews) and measure deliveries,
   the service's Stripe requests (SANDBOX_REQUEST_LOG), when each renewal is readable
   through the API, and the same user's writes during the storm.

Stripe is the emulator in its own process by default (BENCH_STORM_EMULATOR=process:
`python -m stripe_sandbox` on a database of its own, <BENCH_DATABASE_URL>_stripe, the service
reaching it at STRIPE_API_BASE with an sk_test_ key, as it reaches Stripe): the service's processes
then do only the service's work. BENCH_STORM_EMULATOR=inprocess: the built-in sandbox, inside the
service's processes (STRIPE_SANDBOX=1), on the service's database.

Env: BENCH_STORM_N, BENCH_STORM_EMULATOR, BENCH_WEB (web processes, default 1), BENCH_WORKERS (copies of the
Procfile's `worker:` command, if it has one; default 1), BENCH_DATABASE_URL (default
postgresql://postgres@127.0.0.1:5432/billing_bench, created if absent: its schema is dropped
for each N, so never point it at a database holding anything else), BENCH_QUIET_SECONDS
(default 15), BENCH_STORM_TIMEOUT (seconds, default 900), BENCH_WORKDIR (keep the processes'
logs there). Prints figures; asserts nothing.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import http.client
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from sqlalchemy import create_engine, func, make_url, select, text
from sqlalchemy.exc import SQLAlchemyError

from bench.run import JWT_SECRET, ROOT, TIMING, drain_webhooks, free_port, pct
from billing.cli import run_migrations
from billing.config import Config
from billing.db import Database, normalize_database_url
from billing.tokens import mint_token
from billing.webhooks import inbox
from stripe_sandbox.models import SandboxWebhookDelivery
from stripe_sandbox.request_log import read_requests
from stripe_sandbox.webhooks import signature_header

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/billing_bench"
WEBHOOK_SECRET = "whsec_bench_storm_0123456789"
FAKE_KEY = "sk_test_bench_storm"  # the emulator's server takes any sk_test_ key
EMULATOR_NICE = 15  # below the service's queue worker (WORKER_NICE, 10)
ACCOUNTS_PER_WORKSPACE = 10  # pooled mode's limit: several accounts, so no trial
BUILD_CLIENTS = 16
DELIVERY_CONCURRENCY = 32  # Stripe's concurrent deliveries to one endpoint (the brief's figure)
DELIVERY_TIMEOUT = 20.0  # the bench's wait for an answer; Stripe publishes no exact figure
RETRY_AFTER = 60.0
WRITES_PER_SECOND = 5.0
START_QUANTITY = 50  # the user's writes lower it, one by one: decreases charge nothing
STALE_AFTER = 75.0
POLL_CLIENTS = 4


# -- the service, as the Procfile runs it ---------------------------------------------------


def procfile() -> dict[str, str]:
    commands = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not name.startswith("#"):
            commands[name.strip()] = command.strip()
    return commands


@dataclass
class Service:
    bases: list[str]
    processes: list[subprocess.Popen[bytes]]
    stripe: Emulator | None = None  # the emulator's own process; None: the sandbox in the service's
    _next: int = 0

    def base(self) -> str:
        """Round robin over the web processes (the router's part)."""
        self._next = (self._next + 1) % len(self.bases)
        return self.bases[self._next]


@dataclass
class Emulator:
    """`python -m stripe_sandbox`, serving at `url`."""

    url: str
    process: subprocess.Popen[str]


@contextmanager
def emulator(database_url: str, webhook_url: str, request_log: Path, rate_limits: str, log: Path) -> Iterator[Emulator]:
    """The emulator on its own: its own process, its own database, Stripe's rate limits of `rate_limits`."""
    with log.open("a") as err:
        process = subprocess.Popen(
            [
                # Stripe is not on the service's machine: here it takes the CPU the service leaves.
                "nice",
                "-n",
                str(EMULATOR_NICE),
                sys.executable,
                "-m",
                "stripe_sandbox",
                "--port",
                str(free_port()),
                "--database",
                database_url,
                "--webhook-url",
                webhook_url,
                "--webhook-secret",
                WEBHOOK_SECRET,
                "--rate-limits",
                rate_limits,
                "--request-log",
                str(request_log),
            ],
            cwd=ROOT,
            env={**os.environ, "LOG_LEVEL": "WARNING"},
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if "serving on " not in line:
            raise RuntimeError(f"python -m stripe_sandbox did not start (log in {log})")
        yield Emulator(line.split("serving on ", 1)[1].strip(), process)
    finally:
        process.terminate()
        process.wait(timeout=30)


def fake_env(database_url: str, stripe_url: str, **extra: str) -> dict[str, str]:
    """The service's environment against the emulator's own server, as against Stripe: a key and
    STRIPE_API_BASE (SANDBOX_RATE_LIMITS in `extra`: the fake's limits, the budget's)."""
    env = sandbox_env(database_url, STRIPE_API_KEY=FAKE_KEY, STRIPE_API_BASE=stripe_url, **extra)
    env.pop("STRIPE_SANDBOX", None)
    return env


def _start(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        # A session of its own: the shell, gunicorn's master and its workers end together.
        return subprocess.Popen(
            ["sh", "-c", command], cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def service(
    env: dict[str, str], web: int, workers: int, logs: Path, stripe: Emulator | None = None
) -> Iterator[Service]:
    commands = procfile()
    env = {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    processes: list[subprocess.Popen[bytes]] = []
    bases = []
    try:
        ports = [free_port() for _ in range(web)]
        # The sandbox's events go to the first web process, from every process that makes them
        # (the worker's too: without this it would post them to its own default PORT).
        env.setdefault("SANDBOX_WEBHOOK_URL", f"http://127.0.0.1:{ports[0]}/webhooks/stripe")
        for i, port in enumerate(ports):
            processes.append(_start(commands["web"], {**env, "PORT": str(port)}, logs / f"web-{i}.log"))
            bases.append(f"http://127.0.0.1:{port}")
        if "worker" in commands:
            for i in range(workers):
                processes.append(_start(commands["worker"], env, logs / f"worker-{i}.log"))
        deadline = time.monotonic() + 120
        for base in bases:
            while True:
                if any(p.poll() is not None for p in processes):
                    raise RuntimeError(f"a service process exited at start (logs in {logs})")
                try:
                    if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the service did not start within 120 s (logs in {logs})")
                time.sleep(0.2)
        yield Service(bases, processes, stripe)
    finally:
        for process in processes:
            _stop(process)


def sandbox_env(database_url: str, **extra: str) -> dict[str, str]:
    """The service's environment in the benches: the sandbox on `database_url`, no Stripe key,
    warnings only in the logs (BENCH_LOG_LEVEL=INFO: each request's line), then `extra`."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "JWT_SECRET": JWT_SECRET,
        "STRIPE_SANDBOX": "1",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL") or "WARNING",
        **extra,
    }
    if "STRIPE_API_KEY" not in extra:
        env.pop("STRIPE_API_KEY", None)
    return env


def empty_database(url: str, migrate: bool = True) -> None:
    """Create the database if absent; drop everything in it; migrate (the service's)."""
    base = make_url(normalize_database_url(url))
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": base.database}).first():
            conn.execute(text(f'CREATE DATABASE "{base.database}"'))
    admin.dispose()
    engine = create_engine(base)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    if migrate:
        run_migrations(url)


# -- Stripe's side of the webhooks ------------------------------------------------------------


@dataclass
class Attempt:
    event_type: str
    first: bool
    status: int | None  # None: no answer (timeout, refused)
    latency: float  # seconds
    at: float


class Delivery:
    """Stripe's webhook delivery: what the emulator posted to the relay, delivered to the
    service concurrently, in random order, re-signed at each attempt, one retry a minute later."""

    def __init__(self, target: Callable[[], str]) -> None:
        self._target = target
        self._cond = threading.Condition()
        self._ready: list[tuple[str, bytes, bool]] = []  # (type, payload, first attempt)
        self._retries: list[tuple[float, int, str, bytes]] = []  # heap: (due, seq, type, payload)
        self._in_flight = 0
        self._seq = 0
        self._stopping = False
        self._held = False
        self.received = 0
        self.attempts: list[Attempt] = []
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(DELIVERY_CONCURRENCY)]
        for thread in self._threads:
            thread.start()

    def receive(self, payload: bytes) -> None:
        event_type = str(json.loads(payload).get("type"))
        with self._cond:
            self.received += 1
            self._ready.append((event_type, payload, True))
            self._cond.notify()

    def idle(self) -> bool:
        with self._cond:
            return not self._ready and not self._retries and not self._in_flight

    def hold(self) -> None:
        """Keep what arrives until `release`: Stripe has done its work, its events go out at once."""
        with self._cond:
            self._held = True

    def pending(self) -> int:
        with self._cond:
            return len(self._ready)

    def release(self) -> int:
        with self._cond:
            self._held = False
            self._cond.notify_all()
            return len(self._ready)

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.idle():
                return True
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def _take(self) -> tuple[str, bytes, bool] | None:
        with self._cond:
            while not self._stopping:
                if self._held:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                if self._retries and self._retries[0][0] <= now:
                    _, _, event_type, payload = heapq.heappop(self._retries)
                    self._in_flight += 1
                    return event_type, payload, False
                if self._ready:
                    # Shuffled: any of the waiting events, as Stripe guarantees no order.
                    index = random.randrange(len(self._ready))
                    self._ready[index], self._ready[-1] = self._ready[-1], self._ready[index]
                    self._in_flight += 1
                    return self._ready.pop()
                wait = self._retries[0][0] - now if self._retries else None
                self._cond.wait(wait)
            return None

    def _run(self) -> None:
        while (item := self._take()) is not None:
            event_type, payload, first = item
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": signature_header(payload, WEBHOOK_SECRET, int(time.time())),
            }
            started = time.monotonic()
            status = deliver_once(self._target(), payload, headers)
            ended = time.monotonic()
            with self._cond:
                self._in_flight -= 1
                self.attempts.append(Attempt(event_type, first, status, ended - started, ended))
                if first and not (status is not None and 200 <= status < 300):
                    self._seq += 1
                    heapq.heappush(self._retries, (ended + RETRY_AFTER, self._seq, event_type, payload))
                    self._cond.notify()


def deliver_once(base: str, payload: bytes, headers: dict[str, str]) -> int | None:
    """POST one event on a connection of its own (a kept-alive one gunicorn closed meanwhile
    would fail it); None when nothing answered. http.client, not requests: requests' own CPU,
    on the two cores the service shares, was in every latency this bench measured."""
    url = urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=DELIVERY_TIMEOUT)
    try:
        connection.request("POST", "/webhooks/stripe", body=payload, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


class _RelayServer(ThreadingHTTPServer):
    # The emulator sends up to 32 at once, as Stripe does: the default backlog (5)
    # would refuse connections, and a refused delivery waits for Stripe's retry.
    request_queue_size = 256


@contextmanager
def relay(receive: Callable[[bytes], None]) -> Iterator[str]:
    """SANDBOX_WEBHOOK_URL: answers the emulator 200 at once and hands the event on."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            payload = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            receive(payload)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = _RelayServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/stripe-events"
    finally:
        server.shutdown()
        server.server_close()


# -- the accounts ---------------------------------------------------------------------------------


@dataclass
class Account:
    token: str
    path: str  # /workspaces/{ws}/billing-accounts/{id}
    subscription: str
    period_start: str
    period_end: str
    first_invoice: str
    renewed_at: float | None = None


def _session(token: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def _call(session: requests.Session, method: str, url: str, timeout: float = 120, **kwargs: Any) -> Any:
    response = session.request(method, url, timeout=timeout, **kwargs)
    if response.status_code >= 400:
        raise RuntimeError(f"{method} {url}: {response.status_code} {response.text[:300]}")
    return response.json() if response.content else None


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def token_for(user: str) -> str:
    config = Config.from_env({"JWT_SECRET": JWT_SECRET, "STRIPE_SANDBOX": "1"})
    return mint_token(config, user, ttl_seconds=6 * 3600)


def build_workspace(svc: Service, index: int, accounts: int) -> list[Account]:
    """One company: a pooled workspace with `accounts` accounts, each with a card and a subscription.
    The accounts exist before any subscription, so none gets the once-per-workspace trial."""
    token = token_for(f"storm-owner-{index}")
    session = _session(token)
    base = svc.base()
    ws = _call(session, "POST", f"{base}/workspaces", json={"name": f"Storm {index}", "billing_mode": "pooled"})["id"]
    ids = [
        _call(
            session,
            "POST",
            f"{base}/workspaces/{ws}/billing-accounts",
            json={"name": f"Account {index}-{i}", "email": f"a{index}-{i}@storm.test", "address": {"country": "US"}},
        )["id"]
        for i in range(accounts)
    ]
    built = []
    for account_id in ids:
        path = f"/workspaces/{ws}/billing-accounts/{account_id}"
        add_card(svc, session, base, path)
        sub = _call(
            session, "POST", f"{base}{path}/subscriptions", json={"product_quantities": {"users": START_QUANTITY}}
        )
        if sub["status"] != "active":
            raise RuntimeError(f"subscription {sub['id']} is {sub['status']}, not active (a trial?)")
        invoices = _call(session, "GET", f"{base}{path}/invoices", params={"limit": 1})["data"]
        built.append(
            Account(
                token,
                path,
                sub["id"],
                sub["current_period_start"],
                sub["current_period_end"],
                invoices[0]["id"] if invoices else "",
            )
        )
    return built


def add_card(svc: Service, session: requests.Session, base: str, path: str) -> None:
    """A card on the account: through the sandbox's route, or as Stripe.js adds one (a SetupIntent
    from the service, confirmed at Stripe with a test card)."""
    if svc.stripe is None:
        _call(session, "POST", f"{base}/sandbox{path}/payment-methods", json={"payment_method": "pm_card_visa"})
        return
    intent = _call(session, "POST", f"{base}{path}/payment-methods")
    _call(
        _session(FAKE_KEY),
        "POST",
        f"{svc.stripe.url}/v1/setup_intents/{intent['id']}/confirm",
        data={"payment_method": "pm_card_visa"},
    )
    # As a front end after Stripe.js: the card is the service's once Stripe's webhook has been applied.
    deadline = time.monotonic() + 120
    while not _call(session, "GET", f"{base}{path}/payment-methods")["data"]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path}: the confirmed card never reached the service")
        time.sleep(0.2)


def build(svc: Service, n: int) -> list[Account]:
    sizes = [min(ACCOUNTS_PER_WORKSPACE, n - start) for start in range(0, n, ACCOUNTS_PER_WORKSPACE)]
    with ThreadPoolExecutor(BUILD_CLIENTS) as pool:
        return [
            a for accounts in pool.map(lambda args: build_workspace(svc, *args), enumerate(sizes)) for a in accounts
        ]


def renewed(session: requests.Session, base: str, account: Account) -> bool:
    """Readable through the API: the newest invoice (not the first) is paid, and the period moved
    on. The invoice first: until it is paid that one GET answers (the poller loads the service too)."""
    invoices = session.get(f"{base}{account.path}/invoices", params={"limit": 1}, timeout=60)
    if invoices.status_code != 200 or not invoices.json()["data"]:
        return False
    newest = invoices.json()["data"][0]
    if newest["id"] == account.first_invoice or newest["status"] != "paid":
        return False
    sub = session.get(f"{base}{account.path}/subscriptions/{account.subscription}", timeout=60)
    return sub.status_code == 200 and sub.json()["current_period_start"] != account.period_start


def poll_renewals(svc: Service, accounts: list[Account], stop: threading.Event, sweeps: list[float]) -> None:
    """Sweep the accounts not yet renewed, a few clients at a time, until all are or `stop`."""
    sessions = {a.token: _session(a.token) for a in accounts}

    def check(account: Account) -> None:
        try:
            if renewed(sessions[account.token], svc.base(), account):
                account.renewed_at = time.monotonic()
        except requests.RequestException:
            pass

    with ThreadPoolExecutor(POLL_CLIENTS) as pool:
        while not stop.is_set():
            waiting = [a for a in accounts if a.renewed_at is None]
            if not waiting:
                return
            started = time.monotonic()
            list(pool.map(check, waiting))
            sweeps.append(time.monotonic() - started)
            stop.wait(1.0)


# -- a user's writes ------------------------------------------------------------------------------


@dataclass
class Writes:
    latency: dict[str, list[float]] = field(default_factory=lambda: {"PATCH subscription": [], "POST account": []})
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    stripe_requests: int = 0  # what the writes cost at Stripe (Server-Timing)
    # Each write's latency less the time its Stripe requests took (Server-Timing's `stripe`): the
    # service's part, queueing included; Stripe's part is the emulator's, on this machine's cores.
    ours: list[float] = field(default_factory=list)


class UserWrites:
    """5 writes a second in all, open loop (each at its time, whatever the last one took):
    PATCH a subscription's quantity (down by one: no invoice) and create a billing account."""

    def __init__(self, svc: Service, accounts: list[Account]) -> None:
        self._svc = svc
        self._targets = accounts
        self._quantity: dict[str, int] = {}
        self._count = 0
        self._lock = threading.Lock()
        self._token = token_for("storm-user")
        self._slots: list[str] = []  # workspaces with room for accounts

    def _slot(self) -> str:
        with self._lock:
            if not self._slots:
                ws = _call(
                    _session(self._token),
                    "POST",
                    f"{self._svc.base()}/workspaces",
                    json={"name": "Growing", "billing_mode": "pooled"},
                )["id"]
                self._slots = [ws] * ACCOUNTS_PER_WORKSPACE
            return self._slots.pop()

    def _one(self, writes: Writes, number: int) -> None:
        if number % 2:
            session = _session(self._token)
            name, ws = "POST account", self._slot()
            method, url, body = (
                "POST",
                f"{self._svc.base()}/workspaces/{ws}/billing-accounts",
                {"name": f"New {number}", "email": f"n{number}@storm.test", "address": {"country": "US"}},
            )
        else:
            account = self._targets[(number // 2) % len(self._targets)]
            session = _session(account.token)
            with self._lock:
                quantity = self._quantity[account.subscription] = max(
                    1, self._quantity.get(account.subscription, START_QUANTITY) - 1
                )
            name, method, body = "PATCH subscription", "PATCH", {"product_quantities": {"users": quantity}}
            url = f"{self._svc.base()}{account.path}/subscriptions/{account.subscription}"
        started = time.monotonic()
        try:
            response = session.request(method, url, json=body, timeout=60)
            status = response.status_code
            timings = {m.group(1): m.group(3) for m in TIMING.finditer(response.headers.get("Server-Timing", ""))}
            calls = int(timings.get("stripe") or 0)
            stripe_ms = float(_durations(response.headers.get("Server-Timing", "")).get("stripe") or 0.0)
        except requests.RequestException:
            status, calls, stripe_ms = 0, 0, 0.0
        elapsed = time.monotonic() - started
        with self._lock:
            writes.latency[name].append(elapsed * 1000)
            writes.ours.append(elapsed * 1000 - stripe_ms)
            writes.statuses[(name, status)] += 1
            writes.stripe_requests += calls

    def run(self, stop: threading.Event, seconds: float | None = None) -> Writes:
        writes = Writes()
        started = time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            number = 0
            while not stop.is_set() and (seconds is None or time.monotonic() - started < seconds):
                pool.submit(self._one, writes, self._count)
                self._count += 1
                number += 1
                stop.wait(max(0.0, started + number / WRITES_PER_SECOND - time.monotonic()))
        return writes


def in_app_acks(since: dict[Path, int]) -> list[float]:
    """The deliveries' durations in the app (request log lines, BENCH_LOG_LEVEL=INFO; else none),
    from each web log's offset in `since` on."""
    durations = []
    for log, offset in since.items():
        with log.open("rb") as lines:
            lines.seek(offset)
            for line in lines:
                if b'"/webhooks/stripe"' in line and b'"duration_ms"' in line:
                    with contextlib.suppress(ValueError):
                        durations.append(float(json.loads(line)["duration_ms"]))
    return durations


def _durations(header: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in TIMING.finditer(header)}


def _write_figures(writes: Writes) -> dict[str, Any]:
    all_latency = [x for values in writes.latency.values() for x in values]
    total = sum(writes.statuses.values())
    return {
        "writes": total,
        "429": sum(c for (_, s), c in writes.statuses.items() if s == 429),
        "other non-2xx": sum(c for (_, s), c in writes.statuses.items() if not 200 <= s < 300 and s != 429),
        "p50 ms": pct(all_latency, 0.5),
        "p99 ms": pct(all_latency, 0.99),
        "ours p50 ms": pct(writes.ours, 0.5),
        "ours p99 ms": pct(writes.ours, 0.99),
        "by kind": {name: (len(v), pct(v, 0.5), pct(v, 0.99)) for name, v in writes.latency.items()},
        "statuses": dict(writes.statuses),
    }


# -- one storm --------------------------------------------------------------------------------------


@functools.cache
def _database(database_url: str) -> Database:
    return Database(database_url)


def emulator_pending(database_url: str) -> int:
    """Events the emulator recorded and has not yet posted to the relay."""
    with _database(database_url).read() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(SandboxWebhookDelivery).where(SandboxWebhookDelivery.pending.is_(True))
            )
            or 0
        )


def _wait_for_emulator(database_url: str, delivery: Delivery, timeout: float) -> None:
    """Every event the emulator recorded has reached the relay, and the bench has delivered it."""
    drain_webhooks(database_url, timeout)
    delivery.wait_idle(timeout)


def advance(base: str, token: str, body: dict[str, Any] | None = None) -> tuple[float, int]:
    """POST /sandbox/clock/advance (default 32 days); waits for it whether it answers when done
    or at once with "status": "advancing" (then GET /sandbox/clock until "ready"). Returns how
    long it took and the sandbox time it moved to."""
    session = _session(token)
    started = time.monotonic()
    # Today the answer comes when every renewal has run: minutes for a thousand.
    answer = _call(session, "POST", f"{base}/sandbox/clock/advance", timeout=3600, json=body or {"days": 32})
    if answer.get("status") == "advancing":
        while (status := _clock_status(session, base)) != "ready":
            if status == "internal_failure":  # e.g. the database restarted under it: the next advance resumes
                progress("the advance failed; advancing 1 s more resumes what is left")
                _call(session, "POST", f"{base}/sandbox/clock/advance", json={"seconds": 1})
            time.sleep(0.5)
    return time.monotonic() - started, int(answer["now"])


def _clock_status(session: requests.Session, base: str) -> str | None:
    """The clock's status; None while the service can't say (503: its database is restarting)."""
    response = session.get(f"{base}/sandbox/clock", timeout=120)
    if response.status_code == 503:
        return None
    if response.status_code >= 400:
        raise RuntimeError(f"GET {base}/sandbox/clock: {response.status_code} {response.text[:300]}")
    return str(response.json()["status"])


def clock(svc: Service, token: str) -> tuple[str, str]:
    """Where the sandbox clock is, and the token it takes: the service's /sandbox routes, or the
    emulator's own (its API key)."""
    return (svc.stripe.url, FAKE_KEY) if svc.stripe is not None else (svc.base(), token)


def _applied(svc: Service, token: str, database_url: str, moved_to: int) -> bool:
    """Every event of the last advance is applied: the sandbox clock's `ready` (the user's
    writes meanwhile make events of their own, which don't count); on the emulator's own
    clock, `ready` (every event posted) and none of the service's pending events dated at or
    before the time the advance moved to (what the sandbox's clock asks the service itself)."""
    try:
        base, key = clock(svc, token)
        if _clock_status(_session(key), base) != "ready":
            return False
        return svc.stripe is None or not inbox.pending_created_by(_database(database_url), moved_to)
    except (requests.RequestException, RuntimeError, OSError, SQLAlchemyError):
        return False


@dataclass
class Phase:
    """What one way of running the storm hands to the figures."""

    writes: Writes
    started: float  # readable times count from here
    advanced: float  # "stale at 75 s" counts from here
    figures: dict[str, Any] = field(default_factory=dict)


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    return pct(values, 0.5), pct(values, 0.9), pct(values, 0.99)


def _merge(parts: list[Writes]) -> Writes:
    merged = Writes()
    for part in parts:
        for name, values in part.latency.items():
            merged.latency[name].extend(values)
        merged.ours.extend(part.ours)
        merged.statuses.update(part.statuses)
        merged.stripe_requests += part.stripe_requests
    return merged


def live_storm(
    svc: Service, accounts: list[Account], delivery: Delivery, user: UserWrites, database_url: str, timeout: float
) -> Phase:
    """The advance and the deliveries together: events go out as the emulator makes them
    (at the emulator's pace, on the same cores as the service)."""
    stop_writes, stop_polls = threading.Event(), threading.Event()
    storm_writes: list[Writes] = []
    sweeps: list[float] = []
    writer = threading.Thread(target=lambda: storm_writes.append(user.run(stop_writes)))
    poller = threading.Thread(target=poll_renewals, args=(svc, accounts, stop_polls, sweeps))
    storm_started = time.monotonic()
    writer.start()
    poller.start()
    figures: dict[str, Any] = {}
    try:
        figures["advance s"] = advance(*clock(svc, accounts[0].token))[0]
    except BaseException:
        stop_writes.set()
        stop_polls.set()
        raise
    advanced = time.monotonic()
    # Until every event is delivered (retries included) and every renewal readable; an
    # event lost after its retry may leave an account stale for good: 15 s of grace then.
    deadline = storm_started + timeout
    drained_at: float | None = None
    while time.monotonic() < deadline:
        time.sleep(1)
        all_readable = all(a.renewed_at is not None for a in accounts)
        if time.monotonic() - advanced < 5 or not delivery.idle() or emulator_pending(database_url):
            drained_at = None
            continue
        drained_at = drained_at or time.monotonic()
        if all_readable or time.monotonic() - drained_at > 15:
            break
    figures["storm s"] = time.monotonic() - storm_started
    stop_writes.set()
    stop_polls.set()
    writer.join()
    poller.join()
    figures["poll sweep s"] = (pct(sweeps, 0.5), max(sweeps) if sweeps else float("nan"))
    return Phase(storm_writes[0] if storm_writes else Writes(), storm_started, advanced, figures)


def _burst(
    svc: Service,
    accounts: list[Account],
    delivery: Delivery,
    user: UserWrites,
    timeout: float,
    poll: bool,
    applied: Callable[[], bool],
) -> tuple[Writes, float, float, int, list[float]]:
    """Release what the emulator made meanwhile, all at once, with the user's writes (and the
    renewals' poller): until every event is delivered and applied (and every renewal readable).
    Returns the writes, when it began, how long it took, the events released, the poll sweeps."""
    stop = threading.Event()
    box: list[Writes] = []
    sweeps: list[float] = []
    threads = [threading.Thread(target=lambda: box.append(user.run(stop)))]
    if poll:
        threads.append(threading.Thread(target=poll_renewals, args=(svc, accounts, stop, sweeps)))
    started = time.monotonic()
    released = delivery.release()
    for thread in threads:
        thread.start()
    deadline = started + timeout
    drained_at: float | None = None
    try:
        while time.monotonic() < deadline:
            time.sleep(1)
            if not delivery.idle() or not applied():
                drained_at = None
                continue
            drained_at = drained_at or time.monotonic()
            if not poll or all(a.renewed_at is not None for a in accounts) or time.monotonic() - drained_at > 15:
                break
    finally:
        ended = time.monotonic()
        stop.set()
        for thread in threads:
            thread.join()
    return box[0] if box else Writes(), started, ended - started, released, sweeps


def burst_storm(
    svc: Service, accounts: list[Account], delivery: Delivery, user: UserWrites, timeout: float, database_url: str
) -> Phase:
    """As Stripe's renewals reach a webhook endpoint: the subscriptions renew at their period's
    end, each with a draft invoice (burst 1: the subscriptions' and the drafts' events, at once);
    about an hour later Stripe finalizes and charges the drafts (burst 2: the invoices' and the
    payments' events, at once). The emulator does Stripe's work while the deliveries are held,
    so the bursts measure the service alone (with the emulator answering its reads)."""
    token = accounts[0].token
    figures: dict[str, Any] = {}
    ends = [datetime.fromisoformat(a.period_end.replace("Z", "+00:00")).timestamp() for a in accounts]
    clock_base, clock_token = clock(svc, token)
    now = int(_call(_session(clock_token), "GET", f"{clock_base}/sandbox/clock")["now"])
    delivery.hold()
    figures["emulator 1 s"], moved_to = advance(
        clock_base, clock_token, {"seconds": max(1, int(max(ends)) + 120 - now)}
    )
    progress(f"burst 1: {delivery.pending()} events")
    writes_1, started_1, figures["burst 1 s"], figures["burst 1 events"], _ = _burst(
        svc, accounts, delivery, user, timeout, False, lambda: _applied(svc, token, database_url, moved_to)
    )
    delivery.hold()
    figures["emulator 2 s"], moved_to = advance(clock_base, clock_token, {"hours": 2})
    progress(f"burst 2: {delivery.pending()} events")
    writes_2, started, figures["burst 2 s"], figures["burst 2 events"], sweeps = _burst(
        svc, accounts, delivery, user, timeout, True, lambda: _applied(svc, token, database_url, moved_to)
    )
    figures["bursts"] = [(started_1, started_1 + figures["burst 1 s"]), (started, started + figures["burst 2 s"])]
    figures["advance s"] = figures["emulator 1 s"] + figures["emulator 2 s"]
    figures["storm s"] = figures["burst 1 s"] + figures["burst 2 s"]
    figures["poll sweep s"] = (pct(sweeps, 0.5), max(sweeps) if sweeps else float("nan"))
    return Phase(_merge([writes_1, writes_2]), started, started, figures)


def stripe_database(database_url: str) -> str:
    """The emulator's own database beside the service's: <name>_stripe."""
    url = make_url(normalize_database_url(database_url))
    return url.set(database=f"{url.database}_stripe").render_as_string(hide_password=False)


@contextmanager
def stripe_side(
    own: bool, database_url: str, relay_url: str, request_log: Path, rate_limits: str, workdir: Path
) -> Iterator[tuple[dict[str, str], Emulator | None]]:
    """The service's environment and, when `own`, the emulator's process (events to the relay;
    the service's Stripe requests counted in `request_log` either way)."""
    if not own:
        yield (
            sandbox_env(
                database_url,
                SANDBOX_WEBHOOK_URL=relay_url,
                SANDBOX_REQUEST_LOG=str(request_log),
                SANDBOX_RATE_LIMITS=rate_limits,
            ),
            None,
        )
        return
    with emulator(stripe_database(database_url), relay_url, request_log, rate_limits, workdir / "emulator.log") as fake:
        yield fake_env(database_url, fake.url, SANDBOX_RATE_LIMITS=rate_limits), fake


def storm(
    n: int,
    database_url: str,
    web: int,
    workers: int,
    quiet_seconds: float,
    timeout: float,
    workdir: Path,
    mode: str,
    own_emulator: bool,
) -> dict[str, Any]:
    figures: dict[str, Any] = {"N": n, "mode": mode, "emulator": "own process" if own_emulator else "in process"}
    empty_database(database_url)
    events_db = database_url  # where the emulator keeps its events
    if own_emulator:
        events_db = stripe_database(database_url)
        empty_database(events_db, migrate=False)
    request_log = workdir / f"requests-{n}"
    request_log.mkdir()
    delivery_box = _Box()
    with relay(delivery_box.receive) as relay_url:
        started = time.monotonic()
        with (
            # Build with no limits; on the emulator's own server the service's sk_test_ key alone would
            # mean test mode's 25/s budget, so the build keeps live mode's.
            stripe_side(
                own_emulator, database_url, relay_url, request_log, "live" if own_emulator else "", workdir
            ) as (
                env,
                fake,
            ),
            service(_with_catalog(env, fake), web, workers, workdir, fake) as svc,
        ):
            delivery = delivery_box.delivery = Delivery(svc.base)
            progress(f"N={n}: building")
            accounts = build(svc, n)
            figures["build s"] = time.monotonic() - started
            progress(f"N={n}: built in {figures['build s']:.0f} s; delivering the build's {delivery.received} events")
            _wait_for_emulator(events_db, delivery, 600)
            figures["build+deliver s"] = time.monotonic() - started
            figures["build events"] = delivery.received
        delivery.stop()

        with (
            stripe_side(own_emulator, database_url, relay_url, request_log, "live", workdir) as (env, fake),
            service(env, web, workers, workdir, fake) as svc,
        ):
            delivery = delivery_box.delivery = Delivery(svc.base)
            user = UserWrites(svc, accounts)
            before = read_requests(request_log)
            quiet = user.run(threading.Event(), quiet_seconds)
            figures["quiet"] = _write_figures(quiet)
            _wait_for_emulator(events_db, delivery, 600)
            # What one write costs at Stripe, its webhooks' re-reads included: the storm's
            # requests less the user's writes' are the renewals'.
            quiet_requests = read_requests(request_log) - before
            writes_done = max(1, sum(quiet.statuses.values()))
            figures["stripe per write"] = sum(quiet_requests.values()) / writes_done
            figures["stripe GETs per write"] = (
                sum(c for line, c in quiet_requests.items() if line.startswith("GET ")) / writes_done
            )
            delivery.stop()
            delivery = delivery_box.delivery = Delivery(svc.base)

            before = read_requests(request_log)
            logs_before = {log: log.stat().st_size for log in workdir.glob("web-*.log")}
            cpu_before = cpu_snapshot(svc, database_url)
            progress(f"N={n}: the storm ({mode})")
            if mode == "burst":
                phase = burst_storm(svc, accounts, delivery, user, timeout, database_url)
            else:
                phase = live_storm(svc, accounts, delivery, user, events_db, timeout)
            figures.update(phase.figures)
            figures["cpu s"] = cpu_used(cpu_before, cpu_snapshot(svc, database_url))
            figures["ack in app"] = _percentiles(in_app_acks(logs_before))
            delivery.stop()
            requests_made = read_requests(request_log) - before

    attempts = delivery.attempts
    first = [a for a in attempts if a.first]
    ok = [a for a in first if a.status is not None and 200 <= a.status < 300]
    renewed_times = [a.renewed_at - phase.started for a in accounts if a.renewed_at is not None]
    writes = phase.writes
    stripe_total = sum(requests_made.values())
    stripe_gets = sum(c for line, c in requests_made.items() if line.startswith("GET "))
    figures.update(
        {
            "events": delivery.received,
            "deliveries": len(attempts),
            "first 2xx %": 100 * len(ok) / len(first) if first else float("nan"),
            "first statuses": Counter(str(a.status) for a in first),
            "retries 2xx": sum(1 for a in attempts if not a.first and a.status is not None and 200 <= a.status < 300),
            "retries": sum(1 for a in attempts if not a.first),
            "ack p50 ms": pct([a.latency * 1000 for a in attempts], 0.5),
            "ack p99 ms": pct([a.latency * 1000 for a in attempts], 0.99),
            "ack by burst": [
                _percentiles([a.latency * 1000 for a in attempts if began <= a.at - a.latency <= ended])
                for began, ended in phase.figures.get("bursts", [])
            ],
            "event types": Counter(a.event_type for a in first),
            "stripe requests": stripe_total,
            "stripe GETs": stripe_gets,
            "stripe 429s": sum(c for line, c in requests_made.items() if line.endswith(" 429")),
            "stripe requests of the writes": writes.stripe_requests,
            "writes share": sum(writes.statuses.values()) * figures["stripe per write"],
            "per renewal": (stripe_total - sum(writes.statuses.values()) * figures["stripe per write"]) / n,
            "GETs per renewal": (stripe_gets - sum(writes.statuses.values()) * figures["stripe GETs per write"]) / n,
            "stripe by endpoint": requests_made.most_common(12),
            "all readable s": max(renewed_times) if len(renewed_times) == n else None,
            "readable": len(renewed_times),
            "stale at 75 s": sum(
                1 for a in accounts if a.renewed_at is None or a.renewed_at > phase.advanced + STALE_AFTER
            ),
            "storm writes": _write_figures(writes),
        }
    )
    return figures


# -- where the CPU goes ---------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds used so far) for every process on the machine."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it exited meanwhile
        table[int(stat.parent.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK)
    return table


def cpu_snapshot(svc: Service, database_url: str) -> dict[str, dict[int, float]]:
    """CPU seconds so far of each web process tree, each worker tree, this database's
    PostgreSQL backends and this bench, by pid (a process that exits in between is lost)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)

    def tree(root: int) -> dict[int, float]:
        found, todo = {}, [root]
        while todo:
            pid = todo.pop()
            if pid in table:
                found[pid] = table[pid][1]
            todo.extend(children.get(pid, []))
        return found

    snapshot: dict[str, dict[int, float]] = {"web": {}, "worker": {}, "emulator": {}, "postgres": {}}
    for index, process in enumerate(svc.processes):  # the web processes first (service())
        snapshot["web" if index < len(svc.bases) else "worker"].update(tree(process.pid))
    if svc.stripe is not None:
        snapshot["emulator"] = tree(svc.stripe.process.pid)
    databases = [database_url] + ([stripe_database(database_url)] if svc.stripe is not None else [])
    for url in databases:  # the emulator's own database's backends count as PostgreSQL's too
        engine = create_engine(normalize_database_url(url))
        try:
            with engine.connect() as conn:
                backends = conn.execute(
                    text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
                ).scalars()
                snapshot["postgres"].update({pid: table[pid][1] for pid in backends if pid in table})
        finally:
            engine.dispose()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    snapshot["bench"] = {os.getpid(): usage.ru_utime + usage.ru_stime}
    return snapshot


def cpu_used(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
    return {kind: sum(seconds - before[kind].get(pid, 0.0) for pid, seconds in after[kind].items()) for kind in after}


@dataclass
class _Box:
    """The relay outlives each service start; it hands events to the current Delivery."""

    delivery: Delivery | None = None

    def receive(self, payload: bytes) -> None:
        if self.delivery is not None:
            self.delivery.receive(payload)


# -- the report -----------------------------------------------------------------------------------------


def report(results: list[dict[str, Any]], web: int, workers: int, database_url: str) -> str:
    worker_line = "worker: " + (procfile().get("worker") or "none in the Procfile")
    lines = [
        f"renewal storm: {database_url.split('@')[-1]}, web processes {web} "
        f"(gunicorn.conf.py: WEB_CONCURRENCY={os.environ.get('WEB_CONCURRENCY', '2')} x 4 threads), "
        f"{worker_line} x {workers if 'worker' in procfile() else 0}, live rate limits during the storm",
        "",
        "| figure | " + " | ".join(f"N={r['N']}" for r in results) + " |",
        "|---|" + "---:|" * len(results),
    ]

    def row(label: str, render: Callable[[dict[str, Any]], str]) -> None:
        lines.append(f"| {label} | " + " | ".join(render(r) for r in results) + " |")

    def ms(value: float) -> str:
        return f"{value:,.0f}"

    row(
        "build (accounts+cards+subs), s",
        lambda r: (
            f"{r['build s']:.0f} (+{r['build+deliver s'] - r['build s']:.0f} to deliver {r['build events']:,} events)"
        ),
    )
    row("delivery", lambda r: r["mode"])
    row("Stripe (the emulator)", lambda r: r["emulator"])
    row(
        "clock advance took, s",
        lambda r: (
            f"{r['advance s']:.1f}"
            + (
                f" (the emulator's work, deliveries held: {r['emulator 1 s']:.0f} + {r['emulator 2 s']:.0f})"
                if r["mode"] == "burst"
                else ""
            )
        ),
    )
    if any(r["mode"] == "burst" for r in results):
        row(
            "burst 1 (period ends) / burst 2 (an hour later): events, until delivered and applied, s",
            lambda r: (
                f"{r['burst 1 events']:,}, {r['burst 1 s']:.0f} / {r['burst 2 events']:,}, {r['burst 2 s']:.0f}"
                if r["mode"] == "burst"
                else ""
            ),
        )
    row("events delivered", lambda r: f"{r['events']:,}")
    row("first attempts answered 2xx", lambda r: f"{r['first 2xx %']:.1f}%")
    row("first attempts by status", lambda r: ", ".join(f"{k}: {v}" for k, v in sorted(r["first statuses"].items())))
    row("retries (60 s later), 2xx", lambda r: f"{r['retries']} ({r['retries 2xx']} 2xx)")
    row("ack latency p50 / p99, ms", lambda r: f"{ms(r['ack p50 ms'])} / {ms(r['ack p99 ms'])}")
    row(
        "ack latency by burst: p50 / p90 / p99, ms",
        lambda r: " and ".join(" / ".join(ms(v) for v in burst) for burst in r.get("ack by burst", [])) or "-",
    )
    row(
        "ack in the app (request log, BENCH_LOG_LEVEL=INFO): p50 / p90 / p99, ms",
        lambda r: " / ".join(ms(v) for v in r["ack in app"]),
    )
    row(
        "Stripe requests during the storm",
        lambda r: f"{r['stripe requests']:,} ({r['stripe GETs']:,} GETs, {r['stripe 429s']:,} refused 429)",
    )
    row(
        "of which the user's writes: in their requests / with their webhooks (est.)",
        lambda r: (
            f"{r['stripe requests of the writes']:,} / {r['writes share']:,.0f} "
            f"({r['stripe per write']:.1f} a write, quiet window)"
        ),
    )
    row(
        "Stripe requests per renewal, writes' share removed (GETs)",
        lambda r: f"{r['per renewal']:.1f} ({r['GETs per renewal']:.1f})",
    )
    row(
        "every renewal readable after (burst: after burst 2 began), s",
        lambda r: (
            f"{r['all readable s']:.0f}"
            if r["all readable s"] is not None
            else f"never ({r['readable']} of {r['N']} in {r['storm s']:.0f} s)"
        ),
    )
    row("accounts without the paid renewal 75 s after the advance", lambda r: f"{r['stale at 75 s']}")
    row(
        "CPU s in the storm: web / worker / emulator (in web when in process) / PostgreSQL / bench",
        lambda r: " / ".join(f"{r['cpu s'][k]:.0f}" for k in ("web", "worker", "emulator", "postgres", "bench")),
    )
    row("poll sweep p50 / max, s (resolution)", lambda r: f"{r['poll sweep s'][0]:.1f} / {r['poll sweep s'][1]:.1f}")

    def write_rows(phase: str, label: str) -> None:
        row(
            f"user writes, {label}: count, 429, other non-2xx",
            lambda r: f"{r[phase]['writes']}, {r[phase]['429']}, {r[phase]['other non-2xx']}",
        )
        row(f"user writes, {label}: p50 / p99 ms", lambda r: f"{ms(r[phase]['p50 ms'])} / {ms(r[phase]['p99 ms'])}")
        row(
            f"user writes, {label}, less their Stripe requests' time (Server-Timing): p50 / p99 ms",
            lambda r: f"{ms(r[phase]['ours p50 ms'])} / {ms(r[phase]['ours p99 ms'])}",
        )

    write_rows("quiet", "quiet")
    write_rows("storm writes", "storm")
    lines.append("")
    for r in results:
        lines.append(f"N={r['N']}: event types {dict(r['event types'].most_common())}")
        lines.append(f"N={r['N']}: Stripe requests by endpoint {r['stripe by endpoint']}")
        for phase in ("quiet", "storm writes"):
            lines.append(
                f"N={r['N']}: {phase}: by kind (count, p50, p99 ms) "
                f"{ {k: (c, round(a), round(b)) for k, (c, a, b) in r[phase]['by kind'].items()} }; "
                f"statuses {r[phase]['statuses']}"
            )
    return "\n".join(lines)


def _with_catalog(env: dict[str, str], fake: Emulator | None) -> dict[str, str]:
    """On the emulator's own server the catalog is loaded as at Stripe: `flask sync-catalog` (the
    sandbox loads its own); the service is not ready without it."""
    if fake is not None:
        subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app", "sync-catalog"],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return env


def storm_section() -> None:
    sizes = [int(x) for x in os.environ.get("BENCH_STORM_N", "200,1000").split(",") if x.strip()]
    web = int(os.environ.get("BENCH_WEB", "1"))
    workers = int(os.environ.get("BENCH_WORKERS", "1"))
    database_url = os.environ.get("BENCH_DATABASE_URL") or DEFAULT_DATABASE_URL
    quiet = float(os.environ.get("BENCH_QUIET_SECONDS", "15"))
    timeout = float(os.environ.get("BENCH_STORM_TIMEOUT", "900"))
    mode = os.environ.get("BENCH_STORM_DELIVERY", "burst")
    emulator_mode = os.environ.get("BENCH_STORM_EMULATOR", "process")
    if emulator_mode not in ("process", "inprocess"):
        raise SystemExit(f"BENCH_STORM_EMULATOR must be process or inprocess, not {emulator_mode!r}")
    if mode not in ("burst", "live"):
        raise SystemExit(f"BENCH_STORM_DELIVERY must be burst or live, not {mode!r}")
    results = []
    # BENCH_WORKDIR keeps the processes' logs (else a temporary directory, removed after).
    kept = os.environ.get("BENCH_WORKDIR")
    with contextlib.nullcontext(kept) if kept else tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            workdir = Path(tmp) / f"n{n}"
            workdir.mkdir()
            results.append(
                storm(n, database_url, web, workers, quiet, timeout, workdir, mode, emulator_mode == "process")
            )
            print(report(results[-1:], web, workers, database_url), flush=True)
            print(flush=True)
    if len(results) > 1:
        print(report(results, web, workers, database_url))
