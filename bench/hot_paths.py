"""The hot paths against a floor (`BENCH_ONLY=hot`): the reads every front end makes and the usage
report every internal service makes, each as a ratio to the floor measured in the same run.

    BENCH_ONLY=hot BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/<db> python3 dev.py bench
    # BENCH_HOT_SECONDS (10 a measurement), BENCH_HOT_ROUNDS (3), BENCH_HOT_CONNECTIONS (16)

The service and the floor (`bench/floor_app.py`: the token verified and one indexed SELECT) run
side by side under gunicorn.conf.py, the Procfile's settings, on the same database. `wrk` (a C load
generator; installed from Debian's packages when absent) drives each in turn, floor first, for a
number of rounds; each route's figure is the median over the rounds of its throughput divided by
the floor's of the same round, and of its p50 over the floor's. This VM's speed swings within a
minute, and the floor swings with it. The statements per request are counted in-process (Flask's
test client on the same database, SQLAlchemy's cursor events), after a warm-up request.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import event

from bench.organizations import analyze
from bench.run import JWT_SECRET, ROOT, Client, Server, drain_webhooks, free_port
from bench.storm import DEFAULT_DATABASE_URL, empty_database, sandbox_env, service
from billing.config import Config
from billing.tokens import USAGE_SCOPE, mint_token

USAGE_SCRIPT = """
local counter = 0
request = function()
  counter = counter + 1
  local delta = (counter % 2 == 0) and -1 or 1
  return wrk.format("POST", "{path}", {{["Authorization"] = "Bearer {token}", ["Content-Type"] = "application/json"}},
    '{{"product": "users", "delta": ' .. delta .. '}}')
end
"""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("installing wrk from Debian's packages (apt-get install wrk)", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, capture_output=True)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is needed: apt-get install wrk")
    return found


@contextmanager
def floor_server(database_url: str) -> Iterator[str]:
    """The floor app under gunicorn.conf.py (its worker class, workers and threads)."""
    port = free_port()
    # STRIPE_SANDBOX: gunicorn.conf.py checks the service's configuration before it starts anything.
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "JWT_SECRET": JWT_SECRET,
        "STRIPE_SANDBOX": "1",
        "PORT": str(port),
    }
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "bench.floor_app:app", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                requests.get(f"{base}/floor/workspaces/x", timeout=1)
                break
            except requests.RequestException:
                if process.poll() is not None:
                    raise RuntimeError(f"the floor app exited at start: {_tail(log)}") from None
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _tail(log: Any) -> str:
    log.seek(0)
    return str(log.read()[-2000:].decode(errors="replace"))


def run_wrk(
    wrk: str, url: str, token: str, seconds: int, connections: int, script: Path | None = None
) -> dict[str, float]:
    command = [wrk, "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    else:
        command += ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"50%\s+([\d.]+)(us|ms|s)", out))
    p99 = _ms(re.search(r"99%\s+([\d.]+)(us|ms|s)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p50": p50,
        "p99": p99,
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "socket_errors": 1.0 if errors else 0.0,
    }


def _ms(match: re.Match[str] | None) -> float:
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def statements_per_request(
    database_url: str, calls: dict[str, tuple[str, str, dict[str, Any] | None]]
) -> dict[str, int]:
    """Each call's SQL statements, in-process on the same database (after one warm-up call)."""
    from app import create_app

    config = Config.from_env(
        {"DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET, "STRIPE_SANDBOX": "1", "LOG_LEVEL": "WARNING"}
    )
    app = create_app(config)
    engine = app.extensions["billing"].db.engine
    client = app.test_client()
    counts: dict[str, int] = {}
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    for name, (method, path, body) in calls.items():
        token = _token_for(name)
        headers = {"Authorization": f"Bearer {token}"}
        client.open(path, method=method, json=body, headers=headers)
        event.listen(engine, "before_cursor_execute", count)
        seen.clear()
        response = client.open(path, method=method, json=body, headers=headers)
        event.remove(engine, "before_cursor_execute", count)
        if response.status_code >= 400:
            raise RuntimeError(f"{name}: {response.status_code} {response.get_data(as_text=True)}")
        counts[name] = len(seen)
    app.extensions["billing"].db.dispose()
    return counts


def _config() -> Config:
    return Config.from_env({"JWT_SECRET": JWT_SECRET, "STRIPE_SANDBOX": "1"})


def _token_for(name: str) -> str:
    if name.startswith("POST usage"):
        return mint_token(_config(), "svc-inventory", scope=USAGE_SCOPE)
    return mint_token(_config(), "bench-hot")


def build(client: Client) -> dict[str, str]:
    """A pooled workspace: an account with a card, a subscription and a few months of invoices, and
    an organization with a limit."""
    ws = client.call("POST", "/workspaces", json={"name": "Hot", "billing_mode": "pooled"})["id"]
    account = client.call(
        "POST",
        f"/workspaces/{ws}/billing-accounts",
        json={"name": "Hot", "email": "hot@bench.test", "address": {"country": "US"}},
    )["id"]
    acc = f"/workspaces/{ws}/billing-accounts/{account}"
    client.call("POST", f"/sandbox{acc}/payment-methods", json={"payment_method": "pm_card_visa"})
    client.call("POST", acc + "/subscriptions", json={"product_quantities": {"users": 5000, "locations": 10}})
    for _ in range(3):  # three renewals: four invoices
        client.call("POST", "/sandbox/clock/advance", json={"days": 32})
        deadline = time.monotonic() + 120
        while (clock := client.call("GET", "/sandbox/clock"))["status"] != "ready":
            if time.monotonic() > deadline:  # e.g. a webhook refused: its retry is an hour away in sandbox time
                raise RuntimeError(f"the sandbox clock is still {clock['status']} after 120 s")
            time.sleep(0.2)
    org = client.call(
        "POST", f"/workspaces/{ws}/organizations", json={"name": "Store 1", "limits": {"users": 100_000}}
    )["id"]
    return {"ws": ws, "acc": acc, "org": org}


def hot_paths_section() -> None:
    seconds = int(os.environ.get("BENCH_HOT_SECONDS", "10"))
    rounds = int(os.environ.get("BENCH_HOT_ROUNDS", "3"))
    connections = int(os.environ.get("BENCH_HOT_CONNECTIONS", "16"))
    database_url = os.environ.get("BENCH_DATABASE_URL") or DEFAULT_DATABASE_URL
    wrk = ensure_wrk()
    empty_database(database_url)
    env = sandbox_env(database_url)
    kept = os.environ.get("BENCH_WORKDIR")  # keeps the processes' logs
    with (
        contextlib.nullcontext(kept) if kept else tempfile.TemporaryDirectory() as tmp,
        service(env, 1, 1, Path(tmp)) as svc,  # the Procfile's web and worker
        floor_server(database_url) as floor,
    ):
        server = Server(svc.base(), env, svc.processes[0])
        client = Client(server.base, "bench-hot")
        world = build(client)
        drain_webhooks(database_url)
        analyze(database_url)
        ws, acc, org = world["ws"], world["acc"], world["org"]
        usage_path = f"/workspaces/{ws}/organizations/{org}/usage"
        script = Path(tmp) / "usage.lua"
        script.write_text(USAGE_SCRIPT.format(path=usage_path, token=_token_for("POST usage")))
        routes: dict[str, tuple[str, str, dict[str, Any] | None]] = {
            "GET billing account": ("GET", acc, None),
            "GET subscriptions": ("GET", acc + "/subscriptions", None),
            "GET capacity": ("GET", f"/workspaces/{ws}/capacity", None),
            "GET invoices": ("GET", acc + "/invoices", None),
            "POST usage (+1/-1)": ("POST", usage_path, {"product": "users", "delta": 1}),
        }
        statements = statements_per_request(database_url, routes)
        token = _token_for("reads")
        floor_url = f"{floor}/floor/workspaces/{ws}"
        results: dict[str, list[dict[str, float]]] = {name: [] for name in ("floor", *routes)}
        ratios: dict[str, list[tuple[float, float]]] = {name: [] for name in routes}
        for round_number in range(rounds):
            for name, (method, path, _body) in routes.items():
                base_figures = run_wrk(wrk, floor_url, token, seconds, connections)
                results["floor"].append(base_figures)
                figures = (
                    run_wrk(wrk, server.base + path, token, seconds, connections, script)
                    if method == "POST"
                    else run_wrk(wrk, server.base + path, token, seconds, connections)
                )
                results[name].append(figures)
                ratios[name].append((figures["rps"] / base_figures["rps"], figures["p50"] / base_figures["p50"]))
                print(
                    f"  round {round_number + 1} {name:24} {figures['rps']:7.0f} req/s p50 {figures['p50']:6.2f} ms "
                    f"(floor {base_figures['rps']:5.0f} req/s p50 {base_figures['p50']:5.2f} ms)"
                    + (f" non-2xx {figures['non2xx']:.0f}" if figures["non2xx"] else ""),
                    flush=True,
                )
        usage_total = client.call("GET", f"/workspaces/{ws}/organizations/{org}/limits")
    floor_rps = statistics.median(r["rps"] for r in results["floor"])
    floor_p50 = statistics.median(r["p50"] for r in results["floor"])
    print(
        f"\nhot paths: wrk, {connections} connections, {rounds} rounds of {seconds} s, gunicorn.conf.py "
        f"(2 workers x 4 threads), {database_url.rsplit('@', 1)[-1]}; floor median {floor_rps:.0f} req/s, "
        f"p50 {floor_p50:.2f} ms"
    )
    print(
        f"{'route':26} {'req/s':>8} {'÷ floor':>8} {'p50 ms':>8} {'p50 × floor':>11} {'p99 ms':>8} {'statements':>10}"
    )
    for name in routes:
        rps = statistics.median(r["rps"] for r in results[name])
        p50 = statistics.median(r["p50"] for r in results[name])
        p99 = statistics.median(r["p99"] for r in results[name])
        throughput_ratio = statistics.median(r for r, _ in ratios[name])
        latency_ratio = statistics.median(p for _, p in ratios[name])
        print(
            f"{name:26} {rps:8.0f} {throughput_ratio:8.2f} {p50:8.2f} {latency_ratio:11.2f} {p99:8.2f} "
            f"{statements[name]:10d}"
        )
    print(f"usage after the reports (each +1 followed by -1 on its connection): {json.dumps(usage_total)[:300]}")
