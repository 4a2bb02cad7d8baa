"""Logs: one JSON object per line for every record (python-json-logger), with
time, level, logger, message, the request id when there is a request, and the
fields a record carries (the request line's route, status, durations...)."""

from __future__ import annotations

import logging
import sys

from flask import g, has_app_context
from pythonjsonlogger.json import JsonFormatter

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}


class RequestIdFilter(logging.Filter):
    """Adds the current request's id to every record logged while serving it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = getattr(g, "request_id", None) if has_app_context() else None
        return True


class JsonLinesHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr, one JSON object per record."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(JsonFormatter(FORMAT, rename_fields=RENAMED, json_ensure_ascii=False))
        self.addFilter(RequestIdFilter())


def json_handler() -> logging.Handler:
    return JsonLinesHandler()


def configure(level: str) -> None:
    """JSON lines on stderr for the whole process (replacing earlier handlers, so
    a second app in one process doesn't log twice)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, JsonLinesHandler):
            root.removeHandler(handler)
    root.addHandler(JsonLinesHandler())
    root.setLevel(level)
    # The stripe library logs every request at INFO (and bodies at DEBUG); the
    # request line already carries the Stripe calls and their ids.
    logging.getLogger("stripe").setLevel(max(logging.getLevelName(level), logging.WARNING))
