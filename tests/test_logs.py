"""Every log line is one JSON object: an exception is summarised in `error` (type,
message, where), never a traceback, never a secret; threads' uncaught exceptions,
warnings and gunicorn's own log come out the same way."""

from __future__ import annotations

import io
import json
import logging
import runpy
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest
from gunicorn.config import Config as GunicornConfig
from gunicorn.glogging import Logger as BaseGunicornLogger
from gunicorn.util import load_class
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from billing import json_logging
from billing.json_logging import SummaryJsonFormatter, json_handler

SECRET_KEY = "sk_live_51SecretKeyThatMustNeverLeak"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


def one_line(record: logging.LogRecord) -> dict[str, Any]:
    line = json_handler().format(record)
    assert "\n" not in line and "Traceback" not in line and 'File "' not in line, line
    assert SECRET_KEY not in line and TOKEN not in line and "hunter2" not in line, line
    parsed = json.loads(line)
    assert isinstance(parsed, dict)
    return parsed


def logged(caplog: Any, call: Any, logger: str = "test.logs") -> logging.LogRecord:
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=logger):
        call(logging.getLogger(logger))
    [record] = [r for r in caplog.records if r.name == logger]
    return record  # type: ignore[no-any-return]


def test_an_exception_is_a_field_not_a_traceback(caplog: Any) -> None:
    def fail(log: logging.Logger) -> None:
        try:
            raise ValueError(f"bad value {SECRET_KEY} from Bearer {TOKEN}\nsecond line with data")
        except ValueError:
            log.exception("sandbox webhooks: delivery of %s failed", "evt_1")

    line = one_line(logged(caplog, fail))
    assert line["message"] == "sandbox webhooks: delivery of evt_1 failed"
    assert line["level"] == "ERROR"
    error = line["error"]
    assert error["type"] == "ValueError"
    assert error["message"] == "bad value *** from Bearer ***"
    assert error["where"].endswith(" in fail") and "test_logs.py" in error["where"]
    assert "exc_info" not in line


def test_a_database_error_shows_the_drivers_first_line_not_the_sql(caplog: Any) -> None:
    engine = create_engine("sqlite://")

    def fail(log: logging.Logger) -> None:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT * FROM missing WHERE token = :t"), {"t": "hunter2"})
        except OperationalError:
            log.error("query failed", exc_info=True)

    error = one_line(logged(caplog, fail))["error"]
    assert error["type"] == "sqlalchemy.exc.OperationalError"
    assert error["message"] == "no such table: missing"


def test_a_password_in_a_url_or_dsn_is_masked(caplog: Any) -> None:
    def fail(log: logging.Logger) -> None:
        try:
            raise ConnectionError("postgresql://billing:hunter2@db:5432/x refused; password=hunter2 host=db")
        except ConnectionError:
            log.warning("connect failed", exc_info=True)

    assert (
        one_line(logged(caplog, fail))["error"]["message"] == "postgresql://***@db:5432/x refused; password=*** host=db"
    )


def test_a_traceback_written_into_the_message_is_cut_to_its_last_line(caplog: Any) -> None:
    try:
        raise RuntimeError("worker_exit hook failed")
    except RuntimeError:
        import traceback

        text_of_traceback = traceback.format_exc()

    # As gunicorn writes "Exception during worker exit:\n%s" with traceback.format_exc().
    line = one_line(logged(caplog, lambda log: log.warning("Exception during worker exit:\n%s", text_of_traceback)))
    assert line["message"] == "Exception during worker exit: RuntimeError: worker_exit hook failed"


def test_a_stack_is_never_written(caplog: Any) -> None:
    line = one_line(logged(caplog, lambda log: log.info("here", stack_info=True)))
    assert "stack_info" not in line


def test_uncaught_exceptions_in_threads_and_main_are_one_line(caplog: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(threading, "excepthook", threading.__excepthook__)
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    monkeypatch.setattr(logging, "_warnings_showwarning", None)  # captureWarnings(False) when the test ends
    json_logging.configure("WARNING")
    assert threading.excepthook is json_logging.log_uncaught_in_thread and sys.excepthook is json_logging.log_uncaught

    def crash() -> None:
        raise KeyError("boom")

    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        thread = threading.Thread(target=crash, name="sandbox-webhooks")
        thread.start()
        thread.join()
        try:
            raise LookupError("main")
        except LookupError as error:
            sys.excepthook(LookupError, error, error.__traceback__)
        warnings.warn("a deprecated thing", DeprecationWarning, stacklevel=1)
    logging.captureWarnings(False)
    lines = {r.name: one_line(r) for r in caplog.records}
    assert lines["billing.uncaught"]["error"]["type"] == "LookupError"
    thread_lines = [one_line(r) for r in caplog.records if r.name == "billing.uncaught" and "thread" in r.getMessage()]
    assert thread_lines[0]["message"] == "uncaught KeyError in thread sandbox-webhooks"
    assert thread_lines[0]["error"]["type"] == "KeyError"
    assert "py.warnings" in lines


def test_a_test_runners_own_thread_hook_is_kept(monkeypatch: Any) -> None:
    def runner_hook(args: Any) -> None:
        pass

    monkeypatch.setattr(threading, "excepthook", runner_hook)
    monkeypatch.setattr(logging, "_warnings_showwarning", None)
    json_logging.configure("WARNING")
    logging.captureWarnings(False)
    assert threading.excepthook is runner_hook


def test_gunicorns_own_log_is_json_lines(monkeypatch: Any) -> None:
    conf = runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py"))
    logger_class = load_class(conf["logger_class"], section="gunicorn.loggers")
    assert issubclass(logger_class, BaseGunicornLogger)
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)  # gunicorn's error log is stderr ("-")
    gunicorn_log = logger_class(GunicornConfig())
    gunicorn_log.info("Booting worker with pid: %s", 42)
    try:
        raise OSError(f"socket error near {SECRET_KEY}")
    except OSError:
        gunicorn_log.exception("Error handling request /workspaces")
    boot, failure = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert boot["message"] == "Booting worker with pid: 42" and boot["logger"] == "gunicorn.error"
    assert failure["error"]["type"] == "OSError" and SECRET_KEY not in stream.getvalue()
    assert "Traceback" not in stream.getvalue()


def test_a_failing_queue_task_is_one_line(app: Any, caplog: Any, monkeypatch: Any) -> None:
    from billing.webhooks import service as webhook_service

    def down(billing_state: Any, key: str) -> None:
        raise OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(webhook_service, "apply_object", down)
    queue = app.extensions["billing"].queue
    with caplog.at_level(logging.INFO, logger="huey"):
        queue.huey.execute(queue._apply.s("customer:cus_x"))  # as the consumer runs it
    [failed] = [r for r in caplog.records if r.name == "huey" and r.exc_info]
    line = one_line(failed)
    assert line["message"].startswith("Unhandled exception in task")
    assert line["error"] == {
        "type": "sqlalchemy.exc.OperationalError",
        "message": "server closed the connection unexpectedly",
        "where": line["error"]["where"],
    }


@pytest.mark.parametrize("formatter", [SummaryJsonFormatter()])
def test_the_formatter_needs_no_request(formatter: SummaryJsonFormatter) -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "plain", None, None)
    assert json.loads(formatter.format(record))["message"] == "plain"
