"""A count of the Stripe requests a process makes (benchmarks), off unless asked for.

With `SANDBOX_REQUEST_LOG=<dir>` each request the emulator answers appends one
line, `<METHOD> <path template> <status>` (e.g. `GET /v1/subscriptions/{subscription} 200`),
to `<dir>/stripe-requests-<pid>.log`: a file per process, so gunicorn's workers
and queue workers never interleave, and a reader sums the files.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from pathlib import Path

FILE_PREFIX = "stripe-requests-"


class RequestLog:
    def __init__(self, directory: str) -> None:
        self._directory = Path(directory)
        self._lock = threading.Lock()  # one process's threads append whole lines

    def record(self, method: str, template: str, status: int) -> None:
        # The pid at write time: a process forked after start-up gets its own file.
        path = self._directory / f"{FILE_PREFIX}{os.getpid()}.log"
        with self._lock, path.open("a", encoding="utf-8") as log:
            log.write(f"{method.upper()} {template} {status}\n")


def read_requests(directory: str | Path) -> Counter[str]:
    """Every process's lines under `directory`, counted."""
    counts: Counter[str] = Counter()
    for path in Path(directory).glob(f"{FILE_PREFIX}*.log"):
        counts.update(line for line in path.read_text(encoding="utf-8").splitlines() if line)
    return counts
