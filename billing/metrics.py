"""Prometheus metrics: what the service counts, and `/metrics` that shows them.

Each process counts in prometheus-client's own objects (a few microseconds an
increment). Under gunicorn several worker processes serve: with
PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py sets and empties one at start),
each process writes its counts to its own files there and `/metrics` adds up
every process's, so a scrape that reaches any worker sees the whole server.
That directory must be set before prometheus-client is first imported: the
library picks its mode then (billing.metrics_dir).

Labels are bounded: a route is its URL rule (`/workspaces/<workspaceId>`,
never a path with ids), a Stripe endpoint its template (`POST
/v1/customers/{id}`, billing.budget.endpoint), a method one of the HTTP
methods the API serves (else `other`). No label or value holds a token, a
key, an id or a body.

What the database knows (events waiting, the oldest one's age, events parked)
is read when scraped, by the rule `/readyz` uses (`JobQueue.backlog`), so every
process reports the same figures whoever applied the events.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector

from billing.errors import for_status
from billing.metrics_dir import MULTIPROC_ENV

# Seconds. Requests: from a cached read (ms) to a Stripe write with retries (s).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STRIPE_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"  # no URL rule: a 404 (or an answer before routing), whatever the path

http_requests = Counter(
    "billing_http_requests",
    "Requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
http_request_duration = Histogram(
    "billing_http_request_duration_seconds",
    "Time to answer a request (the app's, Stripe calls included), by route template and method.",
    ["route", "method"],
    buckets=REQUEST_BUCKETS,
)
stripe_requests = Counter(
    "billing_stripe_requests",
    "HTTP requests sent to Stripe (each attempt, retries included), by endpoint and outcome: "
    "ok (2xx), rate_limited (429), client_error (other 4xx), server_error (5xx), network_error (no answer).",
    ["endpoint", "outcome"],
)
stripe_request_duration = Histogram(
    "billing_stripe_request_duration_seconds",
    "Time of one attempt of a Stripe request, by endpoint.",
    ["endpoint"],
    buckets=STRIPE_BUCKETS,
)
stripe_budget_admitted = Counter(
    "billing_stripe_budget_admitted",
    "Stripe request attempts counted in the shared budget (billing.budget), by priority: user or background.",
    ["priority"],
)
stripe_budget_waits = Counter(
    "billing_stripe_budget_waits",
    "Attempts that waited for room in the Stripe budget before being sent, by priority.",
    ["priority"],
)
stripe_budget_wait_duration = Histogram(
    "billing_stripe_budget_wait_seconds",
    "How long an attempt that waited for the Stripe budget waited, by priority.",
    ["priority"],
    buckets=WAIT_BUCKETS,
)
stripe_budget_exhausted = Counter(
    "billing_stripe_budget_exhausted",
    "Background work that found no room in the Stripe budget before its deadline (put off).",
)
stripe_budget_cool_downs = Counter(
    "billing_stripe_budget_cool_downs",
    "Stripe rate-limit 429s that paused every process's background work.",
)
webhook_events_received = Counter(
    "billing_webhook_events_received",
    "Signed Stripe events stored by the webhook route; duplicate: a redelivery of a stored event.",
    ["duplicate"],
)
webhook_events_applied = Counter(
    "billing_webhook_events_applied",
    "Stripe events applied to the copy by this server's processes.",
)
webhook_events_failed = Counter(
    "billing_webhook_events_failed",
    "Stripe events whose attempt failed, by what follows: retry (later, with backoff) or parked.",
    ["then"],
)
idempotent_replays = Counter(
    "billing_idempotent_replays",
    "Requests answered with the stored outcome of their Idempotency-Key (Idempotent-Replayed: true).",
)
db_pool_checkouts = Counter(
    "billing_db_pool_checkouts",
    "Connections taken from the database pool.",
)
db_pool_waits = Counter(
    "billing_db_pool_waits",
    "Checkouts that found every connection of the pool in use and waited for one (PostgreSQL).",
)
db_pool_wait_duration = Histogram(
    "billing_db_pool_wait_seconds",
    "How long a checkout that found the pool exhausted waited (PostgreSQL).",
    buckets=WAIT_BUCKETS,
)


# -- what the hot paths call -------------------------------------------------------------


def observe_request(route: str | None, method: str, status: int, seconds: float) -> None:
    route = route or UNMATCHED_ROUTE
    method = method if method in METHODS else "other"
    http_requests.labels(route, method, str(status)).inc()
    http_request_duration.labels(route, method).observe(seconds)


def stripe_outcome(status: int | None) -> str:
    if status is None:
        return "network_error"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    if status >= 400:
        return "client_error"
    return "ok"


def observe_stripe_request(endpoint: str, status: int | None, seconds: float) -> None:
    stripe_requests.labels(endpoint, stripe_outcome(status)).inc()
    stripe_request_duration.labels(endpoint).observe(seconds)


# -- /metrics ----------------------------------------------------------------------------


class BacklogCollector(Collector):
    """The copy's lag, read from the database at each scrape (the `/readyz` rule)."""

    def __init__(self, backlog: Any) -> None:
        self._backlog = backlog

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            backlog = self._backlog()
        except Exception:  # the database is down: the scrape still answers, without these
            return
        yield GaugeMetricFamily(
            "billing_webhook_events_pending", "Stripe events received and not yet applied.", value=backlog.pending
        )
        yield GaugeMetricFamily(
            "billing_webhook_oldest_unapplied_event_age_seconds",
            "Age of the oldest event received and not yet applied (0 when none): how stale the copy may be.",
            value=backlog.oldest_pending_seconds,
        )
        yield GaugeMetricFamily(
            "billing_webhook_events_parked",
            "Events that kept failing, set aside until an operator replays them (flask events replay).",
            value=backlog.parked,
        )


def exposition(backlog: Any) -> bytes:
    """Every process's counts (multiprocess mode) or this one's, and the backlog."""
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        source: CollectorRegistry = registry
    else:
        source = REGISTRY
    lines = generate_latest(source)
    extra = CollectorRegistry()
    extra.register(BacklogCollector(backlog))
    return lines + generate_latest(extra)


def authorized(token: str) -> bool:
    """`Authorization: Bearer <METRICS_TOKEN>`, compared in constant time."""
    if not token:
        return False
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


blp = Blueprint("metrics", __name__)


# Every method, so that none answers 405 (or OPTIONS' Allow): each but an authorized GET is the 404.
@blp.route("/metrics", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"], provide_automatic_options=False)
def metrics() -> Response:
    """For Prometheus, with METRICS_TOKEN as a bearer token. Without the setting, or with
    a wrong or missing token, the same 404 as any unknown path: nobody learns it exists."""
    from billing.state import current

    state = current()
    if request.method not in ("GET", "HEAD") or not authorized(state.config.metrics_token):
        raise for_status(404)
    body = exposition(lambda: state.queue.backlog(max_age=0))
    return Response(body, mimetype=None, headers={"Content-Type": CONTENT_TYPE_LATEST})
