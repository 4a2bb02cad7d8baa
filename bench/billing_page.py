"""The billing page of a front end: the list of accounts plus one account's
details, subscriptions, payment methods, invoices and trial eligibility (6 GETs).

Measured from outside over HTTP against a running service, so the same code
measures any version of it: Stripe requests per page (from Server-Timing),
latency p50/p99 of the whole page, and pages per second with concurrent clients.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import requests

from bench.run import TIMING, pct


@dataclass
class PageRun:
    latency: list[float] = field(default_factory=list)
    stripe_requests: list[int] = field(default_factory=list)
    non_2xx: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


def page_paths(ws: str, account: str) -> list[str]:
    acc = f"/workspaces/{ws}/billing-accounts/{account}"
    return [
        f"/workspaces/{ws}/billing-accounts",
        acc,
        f"{acc}/subscriptions",
        f"{acc}/payment-methods",
        f"{acc}/invoices",
        f"{acc}/trial-eligibility",
    ]


def load_page(session: requests.Session, base: str, paths: list[str], run: PageRun) -> None:
    started = time.perf_counter()
    calls = 0
    for path in paths:
        response = session.get(base + path, timeout=30)
        if not 200 <= response.status_code < 300:
            run.non_2xx += 1
            run.statuses[response.status_code] = run.statuses.get(response.status_code, 0) + 1
        for match in TIMING.finditer(response.headers.get("Server-Timing", "")):
            if match.group(1) == "stripe":
                calls += int(match.group(3) or 0)
    run.latency.append((time.perf_counter() - started) * 1000)
    run.stripe_requests.append(calls)


def sequential(base: str, token: str, paths: list[str], pages: int) -> PageRun:
    session = requests.Session()
    session.headers["Authorization"] = token
    run = PageRun()
    load_page(session, base, paths, PageRun())  # warm-up
    for _ in range(pages):
        load_page(session, base, paths, run)
    return run


def concurrent(base: str, token: str, paths: list[str], clients: int, seconds: float) -> tuple[float, PageRun]:
    stop = time.monotonic() + seconds
    total = PageRun()
    lock = threading.Lock()

    def worker() -> None:
        session = requests.Session()
        session.headers["Authorization"] = token
        mine = PageRun()
        while time.monotonic() < stop:
            try:
                load_page(session, base, paths, mine)
            except requests.RequestException:
                mine.non_2xx += 1
        with lock:
            total.latency += mine.latency
            total.stripe_requests += mine.stripe_requests
            total.non_2xx += mine.non_2xx
            for status, n in mine.statuses.items():
                total.statuses[status] = total.statuses.get(status, 0) + n

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(total.latency) / (time.monotonic() - started), total


def report(label: str, seq: PageRun, pages_per_second: float, load: PageRun, clients: int) -> str:
    per_page = sum(seq.stripe_requests) / max(1, len(seq.stripe_requests))
    return (
        f"{label}: {per_page:.1f} Stripe requests/page, p50 {pct(seq.latency, 0.5):.1f} ms, "
        f"p99 {pct(seq.latency, 0.99):.1f} ms; {clients} clients: {pages_per_second:.1f} pages/s, "
        f"{load.non_2xx} non-2xx {dict(sorted(load.statuses.items()))}"
    )
