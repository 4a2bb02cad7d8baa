"""PROMETHEUS_MULTIPROC_DIR: where each process of a server writes its metrics.

prometheus-client picks its mode when first imported: the directory must be set
before then in the process that forks the others (gunicorn's master, from
gunicorn.conf.py; `dev.py serve` for its web and queue worker). It must hold no
file of an earlier run, whose counts would be added to this one's. This module
imports nothing of prometheus-client, so that gunicorn.conf.py can prepare the
directory before anything imports it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The pid of the process that prepared the directory: a second preparation in it
# (gunicorn reads its configuration again on HUP) keeps the running workers' files.
_PREPARED_BY = "BILLING_METRICS_DIR_PREPARED_BY"
# The directory `prepare` made itself (none was set): removed by `remove_temporary` at the end.
_TEMPORARY = "BILLING_METRICS_DIR_TEMPORARY"


def prepare(environ: MutableMapping[str, str] = os.environ) -> Path:
    """The directory for the processes about to start: PROMETHEUS_MULTIPROC_DIR emptied
    of an earlier run's files (created if absent), or, unset, a new one under the
    temporary directory (named with this process's pid, so that the next start removes
    it should this one be killed before it removes it), set in `environ` for the
    processes this one starts."""
    configured = environ.get(MULTIPROC_ENV)
    if configured and environ.get(_PREPARED_BY) == str(os.getpid()):
        return Path(configured)
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for leftover in path.glob("*.db"):
            leftover.unlink(missing_ok=True)
    else:
        _remove_abandoned()
        path = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
        environ[MULTIPROC_ENV] = environ[_TEMPORARY] = str(path)
    environ[_PREPARED_BY] = str(os.getpid())
    return path


_PREFIX = "billing-metrics-"


def _remove_abandoned() -> None:
    """Our directories whose server died without its `on_exit` (SIGKILL): the pid in the name is gone."""
    for path in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*-*"):
        pid = path.name[len(_PREFIX) :].split("-", 1)[0]
        try:
            if not pid.isdigit() or path.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:  # alive (another user's), or gone meanwhile
            continue


def remove_temporary(environ: MutableMapping[str, str] = os.environ) -> None:
    """Remove the directory `prepare` made (not one the operator set)."""
    path = environ.get(_TEMPORARY)
    if path and path == environ.get(MULTIPROC_ENV):
        shutil.rmtree(path, ignore_errors=True)


def mark_process_dead(pid: int) -> None:
    """gunicorn's child_exit: a dead worker's live gauges leave the sums (its counters stay)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
