"""/metrics (billing.metrics): Prometheus' view of the service, behind METRICS_TOKEN.

Each test scrapes before and after known traffic and checks the differences (the
counters are the process's, shared by every test an xdist worker runs). The last
test runs gunicorn with two workers, as the Procfile does, and checks that what
both served adds up in one scrape.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from billing import metrics_dir
from billing.db import Database
from billing.models import StripeEvent, utcnow
from billing.state import BillingState
from tests.helpers import TEST_ENV, Api, Plan, deliver, event

TOKEN = "metrics-token-0123456789abcdef"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape(app: Flask) -> Samples:
    response = app.test_client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    text = response.get_data(as_text=True)
    assert TOKEN not in text and "sk_test" not in text and "whsec" not in text
    return parse(text)


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include these."""
    wanted = set(labels.items())
    return sum(v for (n, sample_labels), v in samples.items() if n == name and wanted <= set(sample_labels))


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def with_token(app: Flask, monkeypatch: pytest.MonkeyPatch, token: str = TOKEN) -> None:
    state: BillingState = app.extensions["billing"]
    monkeypatch.setattr(state, "config", dataclasses.replace(state.config, metrics_token=token))


@pytest.fixture
def metered(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Flask:
    with_token(app, monkeypatch)
    return app


# -- who may scrape ----------------------------------------------------------------------


def unknown_path_answer(client: Any) -> dict[str, Any]:
    body = dict(client.get("/no-such-thing").get_json())
    body.pop("request_id")
    return body


def test_without_metrics_token_it_is_the_404_of_any_unknown_path(client: Any) -> None:
    """No METRICS_TOKEN: nothing to scrape, and nothing says there would be (the same
    404 as an unknown path), whatever the token sent."""
    expected = unknown_path_answer(client)
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": f"Bearer {TOKEN}"}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 404
        body = dict(response.get_json())
        body.pop("request_id")
        assert body == expected


def test_a_wrong_or_missing_token_is_404_too(metered: Flask) -> None:
    """Decision: a wrong token is 404, not 401, so the endpoint can't be found by probing;
    so is every method but GET (no 405 that would name it)."""
    client = metered.test_client()
    expected = unknown_path_answer(client)
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 404, headers
        body = dict(response.get_json())
        body.pop("request_id")
        assert body == expected
    for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        response = client.open("/metrics", method=method, headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 404 and "Allow" not in response.headers, method
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": f"bearer  {TOKEN} "}).status_code == 200


def test_the_token_is_read_from_metrics_token_and_never_shown() -> None:
    from billing.config import Config

    config = Config.from_env({**TEST_ENV, "METRICS_TOKEN": f" {TOKEN} "})
    assert config.metrics_token == TOKEN and TOKEN not in repr(config)
    assert Config.from_env(TEST_ENV).metrics_token == ""


# -- what is counted -----------------------------------------------------------------------


def test_requests_by_route_template_method_and_status(metered: Flask, auth: Any) -> None:
    alice = Api(metered.test_client(), auth("alice"))
    workspace = alice.workspace()
    before = scrape(metered)
    for _ in range(3):
        assert alice.get(f"/workspaces/{workspace}").status_code == 200
    assert alice.get("/workspaces/ws_nobody").status_code == 404
    assert alice.get(f"/no/such/{workspace}").status_code == 404
    assert metered.test_client().open("/healthz", method="BREW").status_code == 405
    after = scrape(metered)

    route = "/workspaces/<workspaceId>"
    assert grew(before, after, "billing_http_requests_total", route=route, method="GET", status="200") == 3
    assert grew(before, after, "billing_http_requests_total", route=route, method="GET", status="404") == 1
    assert grew(before, after, "billing_http_request_duration_seconds_count", route=route, method="GET") == 4
    assert grew(before, after, "billing_http_request_duration_seconds_bucket", route=route, le="+Inf") == 4
    assert grew(before, after, "billing_http_request_duration_seconds_sum", route=route) > 0
    # A path no rule matches is one label whatever the path (no id becomes a label), as is an odd method.
    assert grew(before, after, "billing_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert grew(before, after, "billing_http_requests_total", method="other", status="405") == 1
    routes = {dict(labels)["route"] for (name, labels) in after if name == "billing_http_requests_total"}
    assert not any(workspace in route for route in routes), routes
    # The scrape before this one counts too, under its own route.
    assert grew(before, after, "billing_http_requests_total", route="/metrics", method="GET", status="200") == 1


def test_idempotent_replays(metered: Flask, auth: Any) -> None:
    alice = Api(metered.test_client(), auth("alice"))
    before = scrape(metered)
    headers = {**alice.headers, "Idempotency-Key": "replay-me"}
    body = {"name": "Acme", "billing_mode": "pooled"}
    first = metered.test_client().post("/workspaces", json=body, headers=headers)
    again = metered.test_client().post("/workspaces", json=body, headers=headers)
    assert first.status_code == again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    after = scrape(metered)
    assert grew(before, after, "billing_idempotent_replays_total") == 1
    assert grew(before, after, "billing_http_requests_total", route="/workspaces", method="POST", status="201") == 2


def test_webhook_events_received_applied_parked_and_the_copys_lag(
    metered: Flask, state: BillingState, auth: Any, apply_now: Any
) -> None:
    client = metered.test_client()
    alice = Api(client, auth("alice"))
    customer_id = alice_customer(alice, state)
    start = scrape(metered)
    assert value(start, "billing_webhook_events_pending") == 0
    assert value(start, "billing_webhook_oldest_unapplied_event_age_seconds") == 0

    not_ours = event("customer.updated", {"id": "cus_NotOurs1", "object": "customer"}, "evt_metrics_1")
    gone = event(
        "customer.subscription.updated",
        {"id": "sub_Gone1", "object": "subscription", "customer": customer_id},
        "evt_metrics_2",
    )
    for payload in (not_ours, gone, not_ours):
        assert deliver(client, payload).status_code == 200
    # The oldest waits for six minutes: past the README's alert (5 min).
    with state.db.write() as session:
        session.execute(
            update(StripeEvent)
            .where(StripeEvent.id == "evt_metrics_1")
            .values(received_at=utcnow() - timedelta(minutes=6))
        )
    waiting = scrape(metered)
    assert grew(start, waiting, "billing_webhook_events_received_total", duplicate="false") == 2
    assert grew(start, waiting, "billing_webhook_events_received_total", duplicate="true") == 1
    assert value(waiting, "billing_webhook_events_pending") == 2
    assert 360 <= value(waiting, "billing_webhook_oldest_unapplied_event_age_seconds") < 400
    assert value(waiting, "billing_webhook_events_parked") == 0

    apply_now()  # the first is about nothing of ours (applied); the second's subscription is gone (parked)
    applied = scrape(metered)
    assert grew(waiting, applied, "billing_webhook_events_applied_total") == 1
    assert grew(waiting, applied, "billing_webhook_events_failed_total", then="parked") == 1
    assert value(applied, "billing_webhook_events_pending") == 0
    assert value(applied, "billing_webhook_oldest_unapplied_event_age_seconds") == 0
    assert value(applied, "billing_webhook_events_parked") == 1  # what the README's alert watches


def alice_customer(alice: Api, state: BillingState) -> str:
    from tests.helpers import index_rows

    workspace = alice.workspace()
    alice.account(workspace)
    [row] = index_rows(state, workspace)
    return str(row.customer_id)


def test_stripe_requests_by_endpoint_and_outcome(
    stripe_world: dict[str, Any], auth: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each attempt the library sends (its retries too), by endpoint template and outcome;
    a 429 also pauses background work (a cool-down), and every attempt is counted in the
    request budget (the service's key has Stripe's test-mode limits)."""
    app, fake = stripe_world["app"], stripe_world["fake"]
    with_token(app, monkeypatch)
    alice = Api(app.test_client(), auth("alice"))
    workspace = alice.workspace()
    body = {"name": "Acme", "email": "billing@acme.com", "address": {"country": "US"}}
    path = f"/workspaces/{workspace}/billing-accounts"
    seen: dict[str, int] = {}
    answers: dict[str, int] = {}
    samples = [scrape(app)]
    for kind in ("429", "500", "timeout", "ok"):
        fake.plan = Plan(fail_from=1 if kind != "ok" else None, kind=kind)
        answers[kind] = alice.post(path, body).status_code
        seen[kind] = fake.plan.seen
        samples.append(scrape(app))
    assert answers == {"429": 429, "500": 502, "timeout": 503, "ok": 201}
    outcome = {"429": "rate_limited", "500": "server_error", "timeout": "network_error", "ok": "ok"}
    for step, kind in enumerate(outcome):
        before, after = samples[step], samples[step + 1]
        assert grew(before, after, "billing_stripe_requests_total") == seen[kind], kind
        assert grew(before, after, "billing_stripe_requests_total", outcome=outcome[kind]) == seen[kind], kind
        assert grew(before, after, "billing_stripe_requests_total", endpoint="POST /v1/customers") >= 1, kind
        assert grew(before, after, "billing_stripe_request_duration_seconds_count") == seen[kind], kind
        assert grew(before, after, "billing_stripe_budget_admitted_total", priority="user") == seen[kind], kind
    first, last = samples[0], samples[-1]
    assert grew(first, samples[1], "billing_stripe_budget_cool_downs_total") == seen["429"]
    assert grew(samples[1], last, "billing_stripe_budget_cool_downs_total") == 0
    endpoints = {dict(labels)["endpoint"] for (name, labels) in last if name == "billing_stripe_requests_total"}
    assert all(endpoint.split(" ", 1)[0] in {"GET", "POST", "DELETE"} for endpoint in endpoints)
    assert not any("cus_" in endpoint or "sub_" in endpoint for endpoint in endpoints), endpoints


def test_the_stripe_budget_counts_what_it_admits_and_what_waited(
    database_url: str, session_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test-mode limits (23 a second planned): the 24th user request of a second waits for
    the next; background work past its share waits too, then gives up at its deadline."""
    from app import create_app
    from billing import budget
    from billing.budget import BudgetExhausted, background
    from billing.config import Config
    from tests.helpers import synchronous_webhooks, wipe

    second = [2_000_000_000.5]
    monkeypatch.setattr(budget, "now", lambda: second[0])

    def sleep(seconds: float) -> None:
        second[0] += 1

    monkeypatch.setattr(budget, "sleep", sleep)
    holder: dict[str, Flask] = {}
    config = Config.from_env({**TEST_ENV, "DATABASE_URL": database_url, "SANDBOX_RATE_LIMITS": "test"})
    app = create_app(config, webhook_transport=synchronous_webhooks(holder))
    holder["app"] = app
    with_token(app, monkeypatch)
    state: BillingState = app.extensions["billing"]
    http_client: Any = state.gateway.client._requestor._client
    the_budget = http_client.budget
    try:
        before = scrape(app)
        second[0] += 10  # a second of their own (the app's start counted the catalog's requests)
        for _ in range(the_budget.total + 1):  # the last one waits a second
            the_budget.admit("GET", "https://api.stripe.com/v1/customers")
        second[0] += 1  # a second of its own
        with background("metrics-test", deadline_seconds=0.5), pytest.raises(BudgetExhausted):
            for _ in range(the_budget.total + 1):
                the_budget.admit("GET", "https://api.stripe.com/v1/customers")
        after = scrape(app)
    finally:
        wipe(session_app)
        state.db.dispose()
    assert grew(before, after, "billing_stripe_budget_admitted_total", priority="user") == the_budget.total + 1
    assert grew(before, after, "billing_stripe_budget_waits_total", priority="user") == 1
    assert grew(before, after, "billing_stripe_budget_wait_seconds_count", priority="user") == 1
    assert grew(before, after, "billing_stripe_budget_wait_seconds_sum", priority="user") == pytest.approx(1.0)
    assert grew(before, after, "billing_stripe_budget_admitted_total", priority="background") == (
        the_budget.background_total
    )
    assert grew(before, after, "billing_stripe_budget_exhausted_total") == 1


def test_database_pool_checkouts(metered: Flask, auth: Any) -> None:
    alice = Api(metered.test_client(), auth("alice"))
    before = scrape(metered)
    alice.workspace()
    after = scrape(metered)
    assert grew(before, after, "billing_db_pool_checkouts_total") >= 1


def test_a_checkout_that_finds_the_pool_exhausted_is_a_wait(metered: Flask, database_url: str) -> None:
    """PostgreSQL: every connection in use, the next checkout waits for one and is counted, with its wait."""
    db = Database(database_url, pool_size=1)
    if db.is_sqlite:
        db.dispose()
        pytest.skip("PostgreSQL's pool (SQLite opens a connection when asked)")
    try:
        before = scrape(metered)
        held = db.engine.connect()
        got = threading.Event()

        def second() -> None:
            with db.engine.connect():
                got.set()

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        assert not got.is_set()
        held.close()
        thread.join(timeout=10)
        assert got.is_set()
        with db.engine.connect():  # a free connection: no wait
            pass
        after = scrape(metered)
    finally:
        db.dispose()
    assert grew(before, after, "billing_db_pool_waits_total") == 1
    assert grew(before, after, "billing_db_pool_wait_seconds_count") == 1
    assert grew(before, after, "billing_db_pool_wait_seconds_sum") >= 0.25
    assert grew(before, after, "billing_db_pool_checkouts_total") >= 3


# -- the multiprocess directory --------------------------------------------------------------


def test_the_directory_is_made_or_emptied_once_per_server(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    made = metrics_dir.prepare(environ)
    try:
        assert made.is_dir() and environ[metrics_dir.MULTIPROC_ENV] == str(made)
        assert metrics_dir.prepare(environ) == made  # gunicorn's second reading (HUP): kept as it is
        metrics_dir.remove_temporary(environ)
        assert not made.exists()
    finally:
        metrics_dir.remove_temporary(environ)
    # A server killed before it could remove its own (SIGKILL): the next start removes it.
    abandoned = Path(tempfile.gettempdir()) / "billing-metrics-999999999-test"
    abandoned.mkdir(exist_ok=True)
    alive = Path(tempfile.mkdtemp(prefix=f"billing-metrics-{os.getpid()}-"))
    environ = {}
    metrics_dir.prepare(environ)
    metrics_dir.remove_temporary(environ)
    assert not abandoned.exists() and alive.is_dir()
    alive.rmdir()
    configured = tmp_path / "metrics"
    configured.mkdir()
    (configured / "counter_12345.db").write_bytes(b"an earlier run's counts")
    (configured / "keep.txt").write_text("not ours")
    environ = {metrics_dir.MULTIPROC_ENV: str(configured)}
    assert metrics_dir.prepare(environ) == configured
    assert sorted(path.name for path in configured.iterdir()) == ["keep.txt"]
    metrics_dir.remove_temporary(environ)  # the operator's: never removed
    assert configured.is_dir()


# -- gunicorn's two workers ------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["set", "unset"])
def gunicorn_server(tmp_path: Path, request: Any) -> Iterator[dict[str, Any]]:
    """gunicorn as the Procfile's web runs it (gunicorn.conf.py), two workers, PROMETHEUS_MULTIPROC_DIR
    holding a file left by an earlier run ("set"), or unset as on a deploy that never heard of it
    ("unset": gunicorn.conf.py makes one, and removes it at the end). On a SQLite file of its own:
    what is counted doesn't depend on the database, and two sandbox workers would take dozens of
    PostgreSQL connections from the suite's."""
    from billing.cli import run_migrations
    from tests.db_proxy import bind_local

    database_url = f"sqlite:///{tmp_path}/gunicorn.sqlite3"
    run_migrations(database_url)

    # gunicorn serves on this very socket (fd://): no other test can take its port meanwhile.
    listener = bind_local()
    port = listener.getsockname()[1]
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_99999.db").write_bytes(b"\x00" * 16 + b"left over by an earlier run")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "PROMETHEUS_", "BILLING_METRICS"))},
        **TEST_ENV,
        "DATABASE_URL": database_url,
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "METRICS_TOKEN": TOKEN,
        "SANDBOX_WEBHOOK_URL": f"http://127.0.0.1:{port}/webhooks/stripe",
    }
    if request.param == "set":
        env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    earlier = set(Path(tempfile.gettempdir()).glob("billing-metrics-*"))
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "app:app", "--bind", f"fd://{listener.fileno()}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        pass_fds=[listener.fileno()],
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "gunicorn exited"
            assert time.monotonic() < deadline, "gunicorn did not answer within 60 s"
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        if request.param == "unset":  # a new one under the temporary directory, holding its workers' files
            [directory] = [path for path in made_since(earlier) if any_file_of_a_child(path, process.pid)]
        yield {"base": base, "directory": directory, "process": process}
    finally:
        process.terminate()
        process.wait(timeout=30)
        listener.close()
    if request.param == "unset":
        assert not directory.exists()  # made by gunicorn.conf.py, removed when it stopped


def made_since(earlier: set[Path]) -> list[Path]:
    return [path for path in Path(tempfile.gettempdir()).glob("billing-metrics-*") if path not in earlier]


def any_file_of_a_child(directory: Path, parent: int) -> bool:
    """Whether a process whose parent is `parent` (a gunicorn worker of that master) wrote there."""
    for path in directory.glob("counter_*.db"):
        status = Path(f"/proc/{path.stem.split('_')[1]}/status")
        if status.exists() and f"PPid:\t{parent}\n" in status.read_text():
            return True
    return False


def served_by_pid(directory: Path) -> dict[int, float]:
    """Unmatched GETs counted in each worker's own file."""
    counts: dict[int, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for metric in MultiProcessCollector.merge([str(path)], accumulate=True):
            for sample in metric.samples:
                if sample.name == "billing_http_requests_total" and sample.labels.get("route") == "unmatched":
                    counts[pid] = counts.get(pid, 0) + sample.value
    return counts


def test_two_gunicorn_workers_add_up(gunicorn_server: dict[str, Any]) -> None:
    """Requests served by either worker are counted once each in every scrape, whichever
    worker answers it, and an earlier run's file was cleared at the start."""
    base, directory = gunicorn_server["base"], gunicorn_server["directory"]
    assert not (directory / "counter_99999.db").exists()  # "set": an earlier run's file, emptied at start

    def hit(_: int) -> int:
        with requests.Session() as session:  # a connection of its own: either worker may take it
            return session.get(f"{base}/no/such/path", timeout=10).status_code

    sent = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
        while sent < 400 and len(served_by_pid(directory)) < 2:
            assert set(pool.map(hit, range(16))) == {404}
            sent += 16
    per_worker = served_by_pid(directory)
    assert len(per_worker) == 2, f"one worker served all {sent} requests"
    assert sum(per_worker.values()) == sent
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for _ in range(6):  # each scrape may be answered by either worker: the same sums
        response = requests.get(f"{base}/metrics", headers=headers, timeout=10)
        assert response.status_code == 200
        samples = parse(response.text)
        assert value(samples, "billing_http_requests_total", route="unmatched", method="GET", status="404") == sent
        assert value(samples, "billing_http_request_duration_seconds_count", route="unmatched") == sent
    assert requests.get(f"{base}/metrics", headers={"Authorization": "Bearer no"}, timeout=10).status_code == 404

    # A worker killed (and booted again by gunicorn): what it counted still counts.
    os.kill(next(iter(per_worker)), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = requests.get(f"{base}/metrics", headers=headers, timeout=10)
        if response.status_code == 200 and len(list(directory.glob("counter_*.db"))) > 2:
            break
        time.sleep(0.2)
    for _ in range(4):
        samples = parse(requests.get(f"{base}/metrics", headers=headers, timeout=10).text)
        assert value(samples, "billing_http_requests_total", route="unmatched", method="GET", status="404") == sent


# -- what the README and the dashboard use ---------------------------------------------------------


def exposed_names() -> set[str]:
    """Every series name /metrics can show: the counters' and histograms' with their suffixes, and the gauges'."""
    from prometheus_client import Counter, Histogram

    from billing import metrics

    names: set[str] = set()
    for metric in vars(metrics).values():
        if isinstance(metric, Counter):
            names.add(f"{metric._name}_total")
        elif isinstance(metric, Histogram):
            names.update(f"{metric._name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))

    class Backlog:
        pending, oldest_pending_seconds, parked = 0, 0.0, 0

    names.update(family.name for family in metrics.BacklogCollector(lambda: Backlog()).collect())
    return names


def test_the_readme_and_the_dashboard_name_only_what_is_exposed() -> None:
    import re

    exposed = exposed_names()
    dashboard = json.loads((ROOT / "docs" / "grafana" / "billing.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    used = {name for expr in expressions for name in re.findall(r"\bbilling_[a-z_]+", expr)}
    assert used and used <= exposed, used - exposed
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Metrics, alerts and traces", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"\bbilling_[a-z_]+", section))
    # Each documented series (histograms by their name) exists, and each exposed one is documented.
    assert {name for name in named if name not in exposed and f"{name}_count" not in exposed} == set()
    bases = {re.sub(r"_(bucket|count|sum)$", "", name) for name in exposed}
    assert bases <= named, bases - named
    for alert in ("billing_webhook_oldest_unapplied_event_age_seconds) > 300", "billing_webhook_events_parked) > 0"):
        assert alert in section
