"""Issue 11's figures: the limits read and a usage report at 1,000
organizations, 10 levels deep, measured over HTTP with the time inside the app
from Server-Timing (`in-app`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, text

from bench.run import Client, Sample, pct, serve, timed
from billing.db import normalize_database_url

ROUNDS = 500
BLOCKS = 5


def build_tree(client: Client, ws: str, total: int = 1000, depth: int = 10) -> list[str]:
    """A spine of `depth` levels (each with a limit), 99 leaves under each
    spine node that may have children, and the rest as more roots: the
    deepest node has 9 ancestors to check."""
    orgs = f"/workspaces/{ws}/organizations"
    spine = [client.call("POST", orgs, json={"name": "Level 0", "limits": {"users": 100_000}})["id"]]
    for level in range(1, depth):
        spine.append(
            client.call(
                "POST",
                f"{orgs}/{spine[-1]}/children",
                json={"name": f"Level {level}", "limits": {"users": 100_000 - level}},
            )["id"]
        )
    for i in range(min(total - depth, 99 * (depth - 1))):
        client.call("POST", f"{orgs}/{spine[i % (depth - 1)]}/children", json={"name": f"Leaf {i}"})
    for i in range(total - depth - 99 * (depth - 1)):
        client.call("POST", orgs, json={"name": f"Root {i}"})
    return spine


def analyze(database_url: str) -> None:
    """Give the planner statistics for the tree just built, as PostgreSQL's
    autovacuum does a minute after a bulk load (this VM's PostgreSQL runs with
    autovacuum off; without statistics it scans the table for the path)."""
    engine = create_engine(normalize_database_url(database_url))
    with engine.connect() as connection:
        connection.execute(text("ANALYZE"))
        connection.commit()
    engine.dispose()


def organizations_section(database_url: str) -> None:
    with serve(database_url) as server:
        client = Client(server.base, "bench-orgs")
        ws = client.call("POST", "/workspaces", json={"name": "Orgs", "billing_mode": "pooled"})["id"]
        account = client.call(
            "POST",
            f"/workspaces/{ws}/billing-accounts",
            json={"name": "Orgs", "email": "o@bench.test", "address": {"country": "US"}},
        )["id"]
        acc = f"/workspaces/{ws}/billing-accounts/{account}"
        client.call("POST", acc + "/subscriptions", json={"product_quantities": {"users": 5000, "locations": 10}})
        spine = build_tree(client, ws)
        analyze(database_url)
        deepest, root = spine[-1], spine[0]
        orgs = f"{server.base}/workspaces/{ws}/organizations"
        floor, deep, at_root = "workspace read (the floor)", "limits read, depth 9", "limits read, root"
        capacity, report, between = (
            "capacity read",
            "usage report +1/-1, depth 9",
            "limits read, depth 9, between reports",
        )
        samples: dict[str, Sample] = {name: Sample() for name in (floor, deep, at_root, capacity, report, between)}
        # Reads alone, then reads between writes: on this VM each report's commit
        # (an fsync) slows the requests that follow it, the floor's too.
        for _ in range(ROUNDS):
            timed(client.session, "GET", f"{server.base}/workspaces/{ws}", samples[floor])
            timed(client.session, "GET", f"{orgs}/{deepest}/limits", samples[deep])
            timed(client.session, "GET", f"{orgs}/{root}/limits", samples[at_root])
            timed(client.session, "GET", f"{server.base}/workspaces/{ws}/capacity", samples[capacity])
        for i in range(ROUNDS):
            timed(
                client.session,
                "POST",
                f"{orgs}/{deepest}/usage",
                samples[report],
                json={"product": "users", "delta": 1 if i % 2 == 0 else -1},
            )
            timed(client.session, "GET", f"{orgs}/{deepest}/limits", samples[between])
        count = len(client.call("GET", f"/workspaces/{ws}/organizations")["data"])
        print(
            f"\norganizations: {count} in one workspace, 10 levels deep, a limit on every level of the spine; "
            f"{ROUNDS} rounds"
        )
        print(f"{'call':38} {'p50 ms':>8} {'p99 ms':>8} {'in-app p50':>10} {'in-app p99':>10} {'stripe/call':>11}")
        for name, s in samples.items():
            calls: Any = sum(s.calls) / len(s.calls)
            print(
                f"{name:38} {pct(s.latency, 0.5):8.2f} {pct(s.latency, 0.99):8.2f} {pct(s.in_app, 0.5):10.2f} "
                f"{pct(s.in_app, 0.99):10.2f} {calls:11.2f}" + (f"  errors={s.errors}" if s.errors else "")
            )
        # This VM's speed swings by up to 2x within a minute (the floor moves with
        # it): the in-app p50 of each block of rounds shows how much of a figure is the machine.
        size = ROUNDS // BLOCKS
        print(f"in-app p50 by block of {size} rounds (reads alone):")
        for name in (floor, deep):
            blocks = [pct(samples[name].in_app[i : i + size], 0.5) for i in range(0, ROUNDS, size)]
            print(f"  {name:36} " + "  ".join(f"{b:5.2f}" for b in blocks))
