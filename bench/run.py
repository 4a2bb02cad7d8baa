#!/usr/bin/env python3
"""The benchmark: the service under gunicorn on the Stripe sandbox, measured
from outside. Prints a table of figures; asserts nothing.

    python3 dev.py bench            (or: .venv/bin/python -m bench.run)

Figures:
- per endpoint: latency p50/p99, the service's own overhead (latency minus the
  time spent in Stripe calls, which the service reports in Server-Timing), and
  Stripe requests per call;
- listing 10 accounts with 100 ms of artificial Stripe latency per request;
- GET of one billing account under gunicorn with concurrent clients (req/s, errors);
- the list call with 10 and with 10,000 customers in the Stripe account.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from billing.cli import run_migrations  # noqa: E402
from billing.config import Config  # noqa: E402
from billing.tokens import mint_token  # noqa: E402

JWT_SECRET = "bench-secret-0123456789-0123456789-0123456789"
TIMING = re.compile(r'(\w+);dur=([\d.]+)(?:;desc="(\d+)")?')


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port; LOCAL_PORT_RANGE="18100-18199" keeps to a range (a shared machine).
    Never one already handed out by this process: two asked before either is bound would
    otherwise be the same (the first free one of the range)."""
    low, _, high = os.environ.get("LOCAL_PORT_RANGE", "0-0").partition("-")
    candidates = range(int(low), int(high or low) + 1) if int(low) else [0] * 20  # 0: the system's choice
    for port in candidates:
        if port and port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            found = int(s.getsockname()[1])
            if found in _HANDED_OUT:  # the system's choice (port 0) may repeat too
                continue
            _HANDED_OUT.add(found)
            return found
    raise RuntimeError(f"no free port (LOCAL_PORT_RANGE={os.environ.get('LOCAL_PORT_RANGE', '')})")


@dataclass
class Server:
    base: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]


@contextmanager
def serve(
    database_url: str,
    *,
    workers: int = 2,
    threads: int = 4,
    extra: dict[str, str] | None = None,
    port: int | None = None,
    worker_class: str | None = None,
) -> Iterator[Server]:
    """gunicorn as the Procfile runs it (gunicorn.conf.py's worker class unless `worker_class` says)."""
    port = port or free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "JWT_SECRET": JWT_SECRET,
        "LOG_LEVEL": "WARNING",
        "STRIPE_SANDBOX": "1",
        "PORT": str(port),
        **(extra or {}),
    }
    env.pop("STRIPE_API_KEY", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "app:app",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            *(["--worker-class", worker_class] if worker_class else []),
            "--log-level",
            "warning",
            "--limit-request-line",
            "8190",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        # Generous: on a busy machine (CI, parallel tests) booting the workers takes a while.
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the service exited at start (status {process.returncode})")
            try:
                if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not start within 90 s")
            time.sleep(0.1)
        yield Server(base, env, process)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


@dataclass
class Sample:
    latency: list[float] = field(default_factory=list)
    app: list[float] = field(default_factory=list)
    in_app: list[float] = field(default_factory=list)
    stripe: list[float] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    errors: int = 0


def timed(session: requests.Session, method: str, url: str, sample: Sample, **kwargs: Any) -> requests.Response:
    started = time.perf_counter()
    response = session.request(method, url, **kwargs)
    latency = (time.perf_counter() - started) * 1000
    timings = {
        m.group(1): (float(m.group(2)), m.group(3)) for m in TIMING.finditer(response.headers.get("Server-Timing", ""))
    }
    stripe_ms, count = timings.get("stripe", (0.0, "0"))
    sample.in_app.append(timings.get("app", (0.0, None))[0])
    sample.latency.append(latency)
    sample.stripe.append(stripe_ms)
    sample.app.append(latency - stripe_ms)
    sample.calls.append(int(count or 0))
    if response.status_code >= 400:
        sample.errors += 1
    return response


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Client:
    def __init__(self, base: str, user: str) -> None:
        self.base = base
        self.session = requests.Session()
        config = Config.from_env({"JWT_SECRET": JWT_SECRET, "STRIPE_SANDBOX": "1"})
        self.session.headers["Authorization"] = f"Bearer {mint_token(config, user)}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.session.request(method, self.base + path, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else None


def setup_workspace(client: Client, accounts: int = 10) -> dict[str, Any]:
    ws = client.call("POST", "/workspaces", json={"name": "Bench", "billing_mode": "pooled"})["id"]
    ids = [
        client.call(
            "POST",
            f"/workspaces/{ws}/billing-accounts",
            json={"name": f"Account {i}", "email": f"a{i}@bench.test", "address": {"country": "US"}},
        )["id"]
        for i in range(accounts)
    ]
    return {"ws": ws, "accounts": ids}


def endpoint_table(server: Server, rounds: int, database_url: str) -> list[tuple[str, Sample]]:
    client = Client(server.base, "bench-user")
    world = setup_workspace(client)
    ws, account = world["ws"], world["accounts"][0]
    acc = f"/workspaces/{ws}/billing-accounts/{account}"
    scratch = client.call("POST", "/workspaces", json={"name": "Scratch", "billing_mode": "pooled"})["id"]
    extra = sandbox_extras(client, ws, account)
    drain_webhooks(database_url)  # set-up's webhook deliveries are not what we measure

    plan: list[tuple[str, Callable[[Sample], Any]]] = [
        ("GET /workspaces", lambda s: timed(client.session, "GET", f"{server.base}/workspaces", s)),
        ("GET /workspaces/{id}", lambda s: timed(client.session, "GET", f"{server.base}/workspaces/{ws}", s)),
        (
            "GET billing-accounts (10)",
            lambda s: timed(client.session, "GET", f"{server.base}/workspaces/{ws}/billing-accounts", s),
        ),
        ("GET billing-account", lambda s: timed(client.session, "GET", server.base + acc, s)),
        (
            "PATCH billing-account",
            lambda s: timed(client.session, "PATCH", server.base + acc, s, json={"name": "Renamed"}),
        ),
        ("POST+DELETE billing-account", lambda s: create_delete(client, server.base, scratch, s)),
        ("GET subscriptions", lambda s: timed(client.session, "GET", server.base + acc + "/subscriptions", s)),
        ("GET trial-eligibility", lambda s: timed(client.session, "GET", server.base + acc + "/trial-eligibility", s)),
        *extra,
    ]
    results = []
    for name, run in plan:
        sample = Sample()
        for _ in range(3):  # warm-up (caches, connections)
            run(Sample())
        for _ in range(rounds):
            run(sample)
        results.append((name, sample))
    return results


def create_delete(client: Client, base: str, ws: str, sample: Sample) -> None:
    created = timed(
        client.session,
        "POST",
        f"{base}/workspaces/{ws}/billing-accounts",
        sample,
        json={"name": "Temp", "email": "t@bench.test", "address": {"country": "US"}},
    )
    if created.status_code == 201:
        timed(client.session, "DELETE", f"{base}/workspaces/{ws}/billing-accounts/{created.json()['id']}", sample)


def sandbox_extras(client: Client, ws: str, account: str) -> list[tuple[str, Callable[[Sample], Any]]]:
    """Payment methods, subscriptions and invoices, where the sandbox can make them."""
    acc = f"/workspaces/{ws}/billing-accounts/{account}"
    base = client.base
    try:
        client.call("POST", f"/sandbox{acc}/payment-methods", json={"payment_method": "pm_card_visa"})
        sub = client.call("POST", acc + "/subscriptions", json={"product_quantities": {"users": 3}})["id"]
    except RuntimeError as error:
        print(f"(payment-method, subscription and invoice endpoints skipped: {error})")
        return []
    return [
        ("GET subscription", lambda s: timed(client.session, "GET", f"{base}{acc}/subscriptions/{sub}", s)),
        (
            "PATCH subscription (metadata)",
            lambda s: timed(
                client.session, "PATCH", f"{base}{acc}/subscriptions/{sub}", s, json={"metadata": {"k": "v"}}
            ),
        ),
        ("GET payment-methods", lambda s: timed(client.session, "GET", f"{base}{acc}/payment-methods", s)),
        ("GET invoices", lambda s: timed(client.session, "GET", f"{base}{acc}/invoices", s)),
        (
            "POST invoices/preview",
            lambda s: timed(
                client.session,
                "POST",
                f"{base}{acc}/invoices/preview",
                s,
                json={"items": [{"product_type": "sso", "quantity": 1}]},
            ),
        ),
    ]


def throughput(server: Server, seconds: float, clients: int) -> tuple[float, int, int, Sample]:
    client = Client(server.base, "bench-load")
    world = setup_workspace(client, accounts=1)
    url = f"{server.base}/workspaces/{world['ws']}/billing-accounts/{world['accounts'][0]}"
    token = client.session.headers["Authorization"]
    stop = time.monotonic() + seconds
    lock = threading.Lock()
    total = Sample()

    def worker() -> None:
        session = requests.Session()
        session.headers["Authorization"] = token
        mine = Sample()
        while time.monotonic() < stop:
            try:
                timed(session, "GET", url, mine)
            except requests.RequestException:
                mine.errors += 1
        with lock:
            total.latency += mine.latency
            total.errors += mine.errors

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    return len(total.latency) / elapsed, len(total.latency), total.errors, total


def bulk_customers(database_url: str, count: int) -> None:
    """Other tenants' customers, written through the sandbox's own API."""
    from billing.db import Database
    from billing.gateway import build_client
    from stripe_sandbox import SandboxHTTPClient

    client = build_client("sk_test_sandbox", http_client=SandboxHTTPClient(Database(database_url)))
    for i in range(count):
        client.v1.customers.create({"name": f"Other tenant {i}", "metadata": {"workspace_id": "ws_other"}})


def drain_webhooks(database_url: str, timeout: float = 300) -> None:
    from sqlalchemy import func, select

    from billing.db import Database
    from stripe_sandbox.models import SandboxWebhookDelivery

    database = Database(database_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with database.read() as session:
            pending = session.scalar(
                select(func.count()).select_from(SandboxWebhookDelivery).where(SandboxWebhookDelivery.pending.is_(True))
            )
        if not pending:
            return
        time.sleep(1)


def list_latency(server: Server, ws: str, client: Client, rounds: int) -> Sample:
    sample = Sample()
    for _ in range(3):
        timed(client.session, "GET", f"{server.base}/workspaces/{ws}/billing-accounts", Sample())
    for _ in range(rounds):
        timed(client.session, "GET", f"{server.base}/workspaces/{ws}/billing-accounts", sample)
    return sample


def billing_page_section(database_url: str) -> None:
    """The front end's billing page at Stripe's pace: 150 ms a request and live
    mode's rate limits (issue 9's figures)."""
    from bench.billing_page import concurrent, page_paths, report, sequential

    extra = {"SANDBOX_LATENCY_MS": "150", "SANDBOX_RATE_LIMITS": "live"}
    with serve(database_url, extra=extra) as server:
        client = Client(server.base, "bench-page")
        world = setup_workspace(client)
        ws, account = world["ws"], world["accounts"][0]
        acc = f"/workspaces/{ws}/billing-accounts/{account}"
        client.call("POST", f"/sandbox{acc}/payment-methods", json={"payment_method": "pm_card_visa"})
        sub = client.call("POST", acc + "/subscriptions", json={"product_quantities": {"users": 3}})["id"]
        drain_webhooks(database_url)
        paths = page_paths(ws, account)
        token = str(client.session.headers["Authorization"])
        seq = sequential(server.base, token, paths, int(os.environ.get("BENCH_PAGES", "50")))
        pages_per_second, load = concurrent(server.base, token, paths, 16, float(os.environ.get("BENCH_SECONDS", "10")))
        print(
            "\n"
            + report("billing page (6 GETs), 150 ms/Stripe request, live rate limits", seq, pages_per_second, load, 16)
        )
        print(f"  (16-client page latency p50 {pct(load.latency, 0.5):.1f} ms, p99 {pct(load.latency, 0.99):.1f} ms)")
        catch_up = webhook_catch_up(server, client, database_url, acc, sub)
        print(
            f"webhook catch-up (a change made in the emulator, as the Dashboard would, until a GET shows it): "
            f"{catch_up * 1000:.0f} ms"
        )


def webhook_catch_up(server: Server, client: Client, database_url: str, acc: str, sub: str) -> float:
    from billing.db import Database
    from billing.gateway import build_client
    from stripe_sandbox import SandboxHTTPClient

    stripe_client = build_client("sk_test_sandbox", http_client=SandboxHTTPClient(Database(database_url)))
    item = stripe_client.v1.subscriptions.retrieve(sub)["items"].data[0]
    started = time.perf_counter()
    stripe_client.v1.subscriptions.update(
        sub, {"items": [{"id": item.id, "quantity": 42}], "proration_behavior": "none"}
    )
    while time.perf_counter() - started < 60:
        shown = client.call("GET", f"{acc}/subscriptions/{sub}")["product_quantities"]["users"]["quantity"]
        if shown == 42:
            return time.perf_counter() - started
        time.sleep(0.01)
    return float("inf")


def reconcile_section(database_url: str, customers: int) -> None:
    """`reconcile --full` over N customers with 3 invoices each, at 150 ms a request, live limits."""
    from billing.cli import run_migrations as migrate
    from billing.db import Database
    from billing.gateway import build_client
    from billing.models import BillingAccountIndex, Member, Workspace
    from stripe_sandbox import SandboxHTTPClient, install

    migrate(database_url)
    db = Database(database_url)
    install(db)
    stripe_client = build_client("sk_test_sandbox", http_client=SandboxHTTPClient(db))
    with db.write() as session:
        workspace = Workspace(name="Reconcile", billing_mode="pooled")
        session.add(workspace)
        session.flush()
        session.add(Member(workspace_id=workspace.id, user_id="bench", role="owner"))
        ws = workspace.id
    for i in range(customers):
        customer = stripe_client.v1.customers.create(
            {"name": f"C{i}", "metadata": {"workspace_id": ws, "currency": "usd"}}
        )
        for n in range(3):
            stripe_client.v1.invoice_items.create({"customer": customer.id, "amount": 100 + n, "currency": "usd"})
            invoice = stripe_client.v1.invoices.create(
                {
                    "customer": customer.id,
                    "collection_method": "send_invoice",
                    "days_until_due": 30,
                    "pending_invoice_items_behavior": "include",
                }
            )
            stripe_client.v1.invoices.finalize_invoice(invoice.id)
        with db.write() as session:
            session.add(
                BillingAccountIndex(
                    workspace_id=ws, customer_id=customer.id, reference=customer.id, currency="usd", state="active"
                )
            )
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "JWT_SECRET": JWT_SECRET,
        "STRIPE_SANDBOX": "1",
        "SANDBOX_LATENCY_MS": "150",
        "SANDBOX_RATE_LIMITS": "live",
        "LOG_LEVEL": "WARNING",
        "SANDBOX_WEBHOOK_URL": "http://127.0.0.1:9/unreachable",
    }
    env.pop("STRIPE_API_KEY", None)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "reconcile", "--full"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    copied = re.search(r'"copied_customers": (\d+)', result.stdout)
    print(
        f"reconcile --full: {customers} customers x 3 invoices at 150 ms/request, live limits: {elapsed:.1f} s "
        f"(copied {copied.group(1) if copied else '?'}; exit {result.returncode})"
    )


def main() -> int:
    # "page", "reconcile", "orgs", "storm", "ack", "hot", "slow" or "audit": just that section
    only = os.environ.get("BENCH_ONLY")
    if only == "audit":
        from bench.audit import audit_section

        audit_section()  # PostgreSQL only: BENCH_DATABASE_URL
        return 0
    if only == "slow":
        from bench.slow_clients import main as slow_clients

        slow_clients()
        return 0
    if only == "hot":
        from bench.hot_paths import hot_paths_section

        hot_paths_section()
        return 0
    if only == "ack":
        from bench.ack import ack_section

        ack_section()
        return 0
    if only == "storm":
        from bench.storm import storm_section

        storm_section()
        return 0
    if only == "orgs":
        from bench.organizations import organizations_section

        with tempfile.TemporaryDirectory() as tmp:
            database_url = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{tmp}/orgs.sqlite3"
            run_migrations(database_url)
            organizations_section(database_url)
        return 0
    if only == "page":
        with tempfile.TemporaryDirectory() as tmp:
            database_url = f"sqlite:///{tmp}/page.sqlite3"
            run_migrations(database_url)
            billing_page_section(database_url)
        return 0
    if only == "reconcile":
        with tempfile.TemporaryDirectory() as tmp:
            reconcile_section(
                f"sqlite:///{tmp}/reconcile.sqlite3", int(os.environ.get("BENCH_RECONCILE_CUSTOMERS", "1000"))
            )
        return 0
    rounds = int(os.environ.get("BENCH_ROUNDS", "200"))
    customers = int(os.environ.get("BENCH_CUSTOMERS", "10000"))
    with tempfile.TemporaryDirectory() as tmp:
        database_url = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{tmp}/bench.sqlite3"
        run_migrations(database_url)
        print(f"database: {database_url.split('@')[-1]}   gunicorn: 2 workers x 4 threads   rounds: {rounds}\n")
        with serve(database_url) as server:
            table = endpoint_table(server, rounds, database_url)
            print(
                "latency: seen by the client; own: latency minus time in Stripe calls; in-app: the same, "
                "measured inside the app (no HTTP, no gunicorn)\n"
            )
            print(
                f"{'endpoint':34} {'p50 ms':>8} {'p99 ms':>8} {'own p50':>8} {'own p99':>8} {'in-app p50':>10} "
                f"{'stripe/call':>11}"
            )
            for name, s in table:
                per_call = statistics.mean(s.calls) if s.calls else 0
                print(
                    f"{name:34} {pct(s.latency, 0.5):8.2f} {pct(s.latency, 0.99):8.2f} {pct(s.app, 0.5):8.2f} "
                    f"{pct(s.app, 0.99):8.2f} {pct(s.in_app, 0.5):10.2f} {per_call:11.2f}"
                    + (f"  errors={s.errors}" if s.errors else "")
                )

            rps, n, errors, load = throughput(server, float(os.environ.get("BENCH_SECONDS", "10")), 16)
            print(
                f"\nthroughput GET billing-account, 16 clients: {rps:.0f} req/s "
                f"({n} requests, {errors} errors, p50 {pct(load.latency, 0.5):.1f} ms, "
                f"p99 {pct(load.latency, 0.99):.1f} ms)"
            )

            client = Client(server.base, "bench-scale")
            world = setup_workspace(client)
            small = list_latency(server, world["ws"], client, rounds)
            bulk_customers(database_url, customers)
            drain_webhooks(database_url)  # the other tenants' events are not what we measure
            large = list_latency(server, world["ws"], client, rounds)
            print(f"\nlist 10 accounts, a few dozen customers in the Stripe account vs {customers} more:")
            for label, q in (("latency p50", "latency"), ("in-app p50", "in_app")):
                a, b = pct(getattr(small, q), 0.5), pct(getattr(large, q), 0.5)
                print(f"  {label:12} {a:7.2f} ms -> {b:7.2f} ms   ratio {b / a:.2f}")
            print(
                f"  Stripe requests per list: {statistics.mean(small.calls):.0f} -> {statistics.mean(large.calls):.0f}"
            )

        with serve(database_url, extra={"SANDBOX_LATENCY_MS": "100"}) as slow:
            client = Client(slow.base, "bench-slow")
            world = setup_workspace(client)
            sample = list_latency(slow, world["ws"], client, 20)
            print(
                f"\nwith 100 ms per Stripe request: list of 10 accounts p50 {pct(sample.latency, 0.5):.0f} ms "
                f"({statistics.mean(sample.calls):.0f} Stripe requests)"
            )
        billing_page_section(database_url)
        from bench.organizations import organizations_section

        organizations_section(database_url)
    with tempfile.TemporaryDirectory() as tmp:
        reconcile_section(
            os.environ.get("BENCH_RECONCILE_DATABASE_URL") or f"sqlite:///{tmp}/reconcile.sqlite3",
            int(os.environ.get("BENCH_RECONCILE_CUSTOMERS", "1000")),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
