"""gunicorn's settings, shared by the Procfile's web process and `dev.py serve`
(gunicorn reads this file from the working directory by itself)."""

from __future__ import annotations

import os
from typing import Any

from billing import metrics_dir

# Metrics (billing.metrics): every worker writes its counts to PROMETHEUS_MULTIPROC_DIR and
# /metrics adds them up. Set (and emptied) here, when gunicorn reads this file: before its
# master imports the worker class, and with it prometheus-client, which picks its mode then.
# Unset, a new directory under the temporary one, removed when gunicorn stops.
if __name__ == "__config__":  # gunicorn's own reading, not a test's
    metrics_dir.prepare()

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = 4
# gthread, except that each request is read whole in the worker's event loop
# before a thread gets it: clients that send slowly hold no thread (issue 19).
worker_class = "billing.http_worker.BufferingThreadWorker"
# Request limits (documented in the README): longer lines are 414, more or longer
# header fields 431, both in the contract's JSON envelope (the worker's).
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
accesslog = None  # the service writes its own JSON line per request
# gunicorn's control socket (25.1+) is one path per user ($HOME/.gunicorn/gunicorn.ctl) that every
# instance on the machine takes over and the last to stop deletes; nothing here uses it.
control_socket_disable = True
logger_class = "billing.json_logging.GunicornLogger"  # gunicorn's own log in the same JSON lines


def on_starting(server: Any) -> None:
    """Refuse to start, in one line, before the port is bound or a worker forked
    (no key and no STRIPE_SANDBOX=1, say): a worker that exits on its bad
    configuration is only booted again by the arbiter, forever."""
    from billing.config import config_or_exit

    try:
        config_or_exit()
    except SystemExit:  # gunicorn runs no on_exit then
        metrics_dir.remove_temporary()
        raise


def post_worker_init(worker: Any) -> None:
    """In sandbox mode, deliver the emulator's pending webhooks from the first
    second (events recorded before the server listened, by `migrate`, say)."""
    state = worker.wsgi.extensions.get("billing") if hasattr(worker.wsgi, "extensions") else None
    sender = getattr(state, "webhooks", None)
    if sender is not None and getattr(sender, "background", False):
        sender.start()


def child_exit(server: Any, worker: Any) -> None:
    """A worker ended (restarted, killed): its live gauges leave the sums (prometheus-client's rule)."""
    metrics_dir.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    metrics_dir.remove_temporary()
