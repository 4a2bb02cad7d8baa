"""The webhook acknowledgement alone (`BENCH_ONLY=ack`): how fast the service
answers Stripe's deliveries when nothing else competes for the machine.

The storm (`bench/storm.py`) measures the ack while the sandbox's emulator,
which stands in for Stripe inside the service's own processes, renews
subscriptions on the same two cores. Here the service (the Procfile's `web:`,
no worker) only acknowledges: N signed events about N objects, 32 at a time,
as Stripe sends them. Each is stored in the inbox and its task queued.

    BENCH_ONLY=ack BENCH_DATABASE_URL=postgresql://... python3 dev.py bench   # BENCH_ACK_N (3000)
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.run import pct
from bench.storm import DEFAULT_DATABASE_URL, WEBHOOK_SECRET, deliver_once, empty_database, sandbox_env, service
from stripe_sandbox.webhooks import signature_header

CONCURRENCY = 32


def ack_section() -> None:
    n = int(os.environ.get("BENCH_ACK_N", "3000"))
    database_url = os.environ.get("BENCH_DATABASE_URL") or DEFAULT_DATABASE_URL
    empty_database(database_url)
    env = sandbox_env(database_url, SANDBOX_WEBHOOK_URL="http://127.0.0.1:9/unused")
    created = int(time.time())
    payloads = [
        json.dumps(
            {
                "id": f"evt_ack_{i}",
                "object": "event",
                "type": "customer.subscription.updated",
                "created": created,
                "livemode": False,
                "data": {"object": {"id": f"sub_ack_{i}", "object": "subscription", "customer": f"cus_ack_{i}"}},
            }
        ).encode()
        for i in range(n)
    ]
    with tempfile.TemporaryDirectory() as tmp, service(env, 1, 0, Path(tmp)) as svc:
        base = svc.base()

        def deliver(payload: bytes) -> tuple[int, float]:
            headers = {
                "Content-Type": "application/json",
                "Stripe-Signature": signature_header(payload, WEBHOOK_SECRET, int(time.time())),
            }
            started = time.perf_counter()
            status = deliver_once(base, payload, headers) or 0
            return status, time.perf_counter() - started

        for payload in payloads[:100]:  # warm up: connections, statements
            deliver(payload)
        started = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            results = list(pool.map(deliver, payloads[100:]))
        elapsed = time.perf_counter() - started
    latencies = sorted(seconds * 1000 for _, seconds in results)
    ok = sum(1 for status, _ in results if 200 <= status < 300)
    print(
        f"webhook ack alone: {len(results)} deliveries, {CONCURRENCY} at once, 1 web process "
        f"(gunicorn.conf.py), PostgreSQL {database_url.rsplit('@', 1)[-1]}"
    )
    print(
        f"  2xx {ok}/{len(results)}; {len(results) / elapsed:.0f} acks/s; latency p50 "
        f"{statistics.median(latencies):.1f} ms, p99 {pct(latencies, 0.99):.1f} ms, max {latencies[-1]:.1f} ms"
    )
