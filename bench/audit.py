"""Issue 24's figure: listing 100 audit events of one workspace with 1,000,000 in
the table, on PostgreSQL, measured over HTTP with the time inside the app from
Server-Timing (`in-app`, target < 10 ms).

    BENCH_ONLY=audit BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/scratch python3 dev.py bench

The entries are written in bulk by SQL (the table as a year of a busy service
leaves it): 1,000,000 across 100 workspaces, 100,000 of them in the one listed.
"""

from __future__ import annotations

import os
import time
from typing import Any

from sqlalchemy import create_engine, text

from bench.run import Client, Sample, pct, serve, timed
from billing.cli import run_migrations
from billing.db import normalize_database_url

ROUNDS = 500
TOTAL = 1_000_000
WORKSPACES = 100

# One statement per workspace: ids, times 30 s apart going back, a few actions and targets.
FILL = text(
    """
    INSERT INTO audit_events (id, workspace_id, occurred_at, actor_type, actor_id, action, target_type,
                              target_id, changes, request_id, idempotency_key, stripe_event_id)
    SELECT 'aud_b' || :tag || '_' || n, :workspace_id,
           now() at time zone 'utc' - make_interval(secs => n * 30),
           CASE WHEN n % 3 = 0 THEN 'stripe' ELSE 'user' END,
           CASE WHEN n % 3 = 0 THEN NULL ELSE 'user' || (n % 7) END,
           (ARRAY['subscription.quantity_changed', 'subscription.renewed', 'invoice.paid',
                  'member.added', 'organization.updated'])[1 + n % 5],
           'subscription', 'sub_' || (n % 50),
           jsonb_build_object('status', jsonb_build_object('before', 'active', 'after', 'past_due')),
           CASE WHEN n % 3 = 0 THEN NULL ELSE 'req_' || md5(n::text) END, NULL,
           CASE WHEN n % 3 = 0 THEN 'evt_' || md5(n::text) ELSE NULL END
    FROM generate_series(1, :count) AS n
    """
)


def fill(database_url: str, listed: str) -> int:
    engine = create_engine(normalize_database_url(database_url))
    started = time.perf_counter()
    with engine.begin() as connection:
        others = []
        for i in range(WORKSPACES - 1):
            others.append(f"ws_bench_audit_{i:03d}")
            connection.execute(
                text(
                    "INSERT INTO workspaces (id, name, billing_mode, created_at, updated_at)"
                    " VALUES (:id, 'Other', 'pooled', now(), now())"
                ),
                {"id": others[-1]},
            )
        mine = TOTAL // 10
        connection.execute(FILL, {"tag": "mine", "workspace_id": listed, "count": mine})
        rest = (TOTAL - mine) // len(others)
        for i, workspace_id in enumerate(others):
            connection.execute(FILL, {"tag": str(i), "workspace_id": workspace_id, "count": rest})
    with engine.connect() as connection:
        connection.execute(text("ANALYZE audit_events"))
        connection.commit()
        count = connection.scalar(text("SELECT count(*) FROM audit_events"))
    engine.dispose()
    print(f"filled {count:,} audit events in {time.perf_counter() - started:.0f} s")
    return int(count or 0)


def audit_section() -> None:
    database_url = os.environ.get("BENCH_DATABASE_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")):
        raise SystemExit("BENCH_ONLY=audit needs BENCH_DATABASE_URL: an empty PostgreSQL database")
    run_migrations(database_url)
    with serve(database_url) as server:
        client = Client(server.base, "bench-audit")
        ws = client.call("POST", "/workspaces", json={"name": "Audited", "billing_mode": "pooled"})["id"]
        total = fill(database_url, ws)
        base = f"{server.base}/workspaces/{ws}/audit-events"
        first = client.call("GET", f"/workspaces/{ws}/audit-events?limit=100")
        deep = client.call("GET", f"/workspaces/{ws}/audit-events?limit=100&after=aud_bmine_50000")
        cases: dict[str, tuple[str, dict[str, Any]]] = {
            "first page, 100 newest": (base, {"limit": 100}),
            "a page from a cursor (after)": (base, {"limit": 100, "after": first["next_cursor"]}),
            "a page 50,000 entries deep": (base, {"limit": 100, "after": deep["next_cursor"]}),
            "filter: action prefix": (base, {"limit": 100, "action": "subscription."}),
            "filter: target_id": (base, {"limit": 100, "target_id": "sub_7"}),
            "filter: actor stripe, since": (base, {"limit": 100, "actor": "stripe", "since": "2020-01-01T00:00:00Z"}),
        }
        samples = {name: Sample() for name in cases}
        workspace = Sample()
        for _ in range(ROUNDS):
            timed(client.session, "GET", f"{server.base}/workspaces/{ws}", workspace)
            for name, (url, params) in cases.items():
                timed(client.session, "GET", url, samples[name], params=params)
        print(
            f"\naudit trail: {total:,} entries in the table, {TOTAL // 10:,} in the workspace listed; {ROUNDS} rounds"
        )
        print(f"{'list 100 entries':38} {'p50 ms':>8} {'p99 ms':>8} {'in-app p50':>10} {'in-app p99':>10}")
        for name, s in [("workspace read (the floor)", workspace), *samples.items()]:
            print(
                f"{name:38} {pct(s.latency, 0.5):8.2f} {pct(s.latency, 0.99):8.2f} {pct(s.in_app, 0.5):10.2f} "
                f"{pct(s.in_app, 0.99):10.2f}" + (f"  errors={s.errors}" if s.errors else "")
            )
