"""One log record per request (a JSON line, see billing.json_logging), and the request id that ties it to the response.

Fields: method, route (the URL rule, not the path with ids), status, duration,
the share of it spent in Stripe, request id, workspace, user and the Stripe
request ids; and how far the copy of Stripe lags (events waiting, the oldest one's
age, events parked). Never bodies, headers or tokens.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any

from flask import Response, g, request

from billing import instrumentation, metrics
from billing.state import current

log = logging.getLogger("billing.request")

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def start() -> None:
    """Adopt a sane X-Request-Id from the caller, or make one."""
    incoming = request.headers.get("X-Request-Id", "")
    g.request_id = incoming if _CLIENT_ID.match(incoming) else new_request_id()
    g.started = time.perf_counter()
    g.stripe_calls, g.stripe_calls_token = instrumentation.start()


def _copy_lag() -> dict[str, Any]:
    """How stale the copy of Stripe may be (from a snapshot at most 5 s old)."""
    try:
        backlog = current().queue.backlog()
    except Exception:  # the database is down: the line still gets written
        return {}
    return {
        "events_pending": backlog.pending,
        "oldest_pending_event_s": backlog.oldest_pending_seconds,
        "events_parked": backlog.parked,
    }


def finish(response: Response) -> Response:
    response.headers["X-Request-Id"] = getattr(g, "request_id", "")
    started = getattr(g, "started", None)
    if started is None:
        return response
    duration = time.perf_counter() - started
    route = request.url_rule.rule if request.url_rule else None
    metrics.observe_request(route, request.method, response.status_code, duration)
    calls = getattr(g, "stripe_calls", None)
    if getattr(g, "stripe_calls_token", None) is not None:
        instrumentation.stop(g.stripe_calls_token)
        g.stripe_calls_token = None
    stripe_seconds = calls.seconds if calls else 0.0
    count = calls.count if calls else 0
    response.headers["Server-Timing"] = (
        f'app;dur={(duration - stripe_seconds) * 1000:.2f}, stripe;dur={stripe_seconds * 1000:.2f};desc="{count}"'
    )
    if log.isEnabledFor(logging.INFO):
        log.info(
            "request",
            extra={
                "event": "request",
                "method": request.method,
                "route": route,
                "status": response.status_code,
                "duration_ms": round(duration * 1000, 2),
                "stripe_ms": round(stripe_seconds * 1000, 2),
                "stripe_calls": calls.count if calls else 0,
                "stripe_request_ids": calls.request_ids if calls else [],
                "request_id": g.request_id,
                "workspace_id": (request.view_args or {}).get("workspaceId"),
                "user_id": getattr(g, "user_id", None),
                **_copy_lag(),
            },
        )
    return response
