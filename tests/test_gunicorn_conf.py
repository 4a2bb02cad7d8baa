"""gunicorn.conf.py: one set of limits for the Procfile and `dev.py serve`; the
sandbox's webhooks go out from a worker's first second."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

CONF = runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py"))


class Sender:
    def __init__(self, background: bool) -> None:
        self.background, self.started = background, False

    def start(self) -> None:
        self.started = True


class Worker:
    def __init__(self, wsgi: Any) -> None:
        self.wsgi = wsgi


def test_no_control_socket() -> None:
    """No management socket shared by every gunicorn of the user (gunicornc's): the service has none to offer."""
    assert CONF["control_socket_disable"] is True


def test_request_limits_are_set_once() -> None:
    assert (CONF["limit_request_line"], CONF["limit_request_fields"], CONF["limit_request_field_size"]) == (
        8190,
        100,
        8190,
    )
    # gthread's threads, each request read whole before one gets it (tests/test_http_worker.py)
    assert CONF["worker_class"] == "billing.http_worker.BufferingThreadWorker" and CONF["threads"] == 4


def test_a_worker_starts_delivering_sandbox_webhooks_at_once(app: Any, monkeypatch: Any) -> None:
    state = app.extensions["billing"]
    background = Sender(background=True)
    monkeypatch.setattr(state, "webhooks", background)
    CONF["post_worker_init"](Worker(app))
    assert background.started
    inline = Sender(background=False)  # tests deliver synchronously: nothing to start
    monkeypatch.setattr(state, "webhooks", inline)
    CONF["post_worker_init"](Worker(app))
    assert not inline.started
    monkeypatch.setattr(state, "webhooks", None)  # a real key: no sandbox
    CONF["post_worker_init"](Worker(app))
