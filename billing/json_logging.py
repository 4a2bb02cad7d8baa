"""Logs: one JSON object per line for every record (python-json-logger), with
time, level, logger, message, the request id when there is a request, and the
fields a record carries (the request line's route, status, durations...).

An exception never brings its traceback: a record logged with one (`logger.exception`,
`exc_info=True`: the sandbox's webhook sender, Huey's consumer, SQLAlchemy's pool,
gunicorn) carries `error` {type, message, where} instead, its message cut to its first
line with anything shaped like a secret masked. Uncaught exceptions in threads and in
the main thread, warnings, and gunicorn's own log go through the same lines.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from types import TracebackType
from typing import Any

from flask import g, has_app_context
from pythonjsonlogger.json import JsonFormatter

from billing import tracing

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}
MAX_ERROR_MESSAGE = 300

_TRACEBACK = "Traceback (most recent call last):"
# Stripe keys and webhook secrets, JWTs (bearer tokens), a URL's password, a DSN's password.
_SECRETS = re.compile(
    r"\b(?:sk|rk|pk)_(?:live|test)_\w+|\bwhsec_\w+|\beyJ[\w-]*\.[\w-]+\.[\w-]*"
    r"|(?<=://)[^/\s:@]*:[^/\s@]*(?=@)|(?<=password=)\S+",
    re.IGNORECASE,
)


def _masked(text: str) -> str:
    return _SECRETS.sub("***", text)


def exception_summary(error: BaseException) -> dict[str, Any]:
    """{type, message, where} of an exception: never its traceback, nor a secret.
    A database error's message is its driver's first line (not the SQL or its parameters)."""
    shown: BaseException = getattr(error, "orig", None) or error  # SQLAlchemy wraps the driver's error
    lines = str(shown).strip().splitlines()
    message = _masked(lines[0] if lines else "")
    if len(message) > MAX_ERROR_MESSAGE:
        message = message[:MAX_ERROR_MESSAGE] + "..."
    kind = type(error)
    summary: dict[str, Any] = {
        "type": kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}",
        "message": message,
    }
    frames = traceback.extract_tb(error.__traceback__) if error.__traceback__ else None
    if frames:
        summary["where"] = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}"
    return summary


def _without_traceback(message: str) -> str:
    """A message that holds a formatted traceback (gunicorn writes some so) keeps its
    text before it and the exception's own last line."""
    before, found, rest = message.partition(_TRACEBACK)
    if not found:
        return message
    last = next((line for line in reversed(rest.strip().splitlines()) if line.strip()), "")
    return _masked(f"{before.strip()} {last.strip()}".strip())


class SummaryJsonFormatter(JsonFormatter):
    """python-json-logger's formatter, with exceptions summarised (see the module)."""

    def __init__(self) -> None:
        super().__init__(FORMAT, rename_fields=RENAMED, json_ensure_ascii=False)

    def formatException(self, ei: Any) -> str:
        return ""  # never formatted: `add_fields` summarises the exception

    def formatStack(self, stack_info: str) -> str:
        return ""

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        message_dict.pop("exc_info", None)
        message_dict.pop("stack_info", None)
        super().add_fields(log_data, record, message_dict)
        if isinstance(log_data.get("message"), str) and _TRACEBACK in log_data["message"]:
            log_data["message"] = _without_traceback(log_data["message"])
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            log_data["error"] = exception_summary(error)


class RequestIdFilter(logging.Filter):
    """Adds the current request's id to every record logged while serving it, and
    when traces are on the current trace and span ids (billing.tracing)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = getattr(g, "request_id", None) if has_app_context() else None
        if not hasattr(record, "trace_id"):
            ids = tracing.current_ids()
            if ids is not None:
                record.trace_id, record.span_id = ids
        return True


class JsonLinesHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr, one JSON object per record."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(SummaryJsonFormatter())
        self.addFilter(RequestIdFilter())


def json_handler() -> logging.Handler:
    return JsonLinesHandler()


_uncaught = logging.getLogger("billing.uncaught")


def log_uncaught(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    """sys.excepthook: the main thread's uncaught exception, as one line."""
    _uncaught.critical("uncaught %s", kind.__name__, exc_info=(kind, error, tb))


def log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    """threading.excepthook: a thread's uncaught exception, as one line (SystemExit ends a thread quietly)."""
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "unknown"
    _uncaught.error(
        "uncaught %s in thread %s",
        args.exc_type.__name__,
        name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def _install_hooks() -> None:
    # Python's own hooks only: a test runner's or a debugger's stay.
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = log_uncaught
    if threading.excepthook is threading.__excepthook__:
        threading.excepthook = log_uncaught_in_thread
    logging.captureWarnings(True)  # a warning is a record too, not text on stderr


def configure(level: str) -> None:
    """JSON lines on stderr for the whole process (replacing earlier handlers, so
    a second app in one process doesn't log twice)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, JsonLinesHandler):
            root.removeHandler(handler)
    root.addHandler(JsonLinesHandler())
    root.setLevel(level)
    _install_hooks()
    # The stripe library logs every request at INFO (and bodies at DEBUG); the
    # request line already carries the Stripe calls and their ids.
    logging.getLogger("stripe").setLevel(max(logging.getLevelName(level), logging.WARNING))


try:
    from gunicorn.glogging import Logger as _GunicornLogger
except ImportError:  # pragma: no cover - gunicorn doesn't run on Windows; the app does
    _GunicornLogger = object


class GunicornLogger(_GunicornLogger):  # type: ignore[misc]
    """gunicorn's `logger_class` (gunicorn.conf.py): its own log (worker boots, timeouts,
    errors handling a request) in the same JSON lines, tracebacks summarised."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(SummaryJsonFormatter())
