"""A per-process memo of bounded size: what the hot paths keep between requests (ADR 0008).

What proves an entry current is its user's (a key that changes with what it was computed from,
a statement that checks it, an expiry); the memo only keeps at most `most` entries, the oldest
leaving first when a new one comes to a full memo."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(dict[K, V], Generic[K, V]):
    """A dict (reads are plain dict reads: the hot paths' every request) that `keep` bounds."""

    def __init__(self, most: int) -> None:
        super().__init__()
        self.most = most
        self._lock = threading.Lock()  # the oldest is found by iterating, which another thread's write breaks

    def keep(self, key: K, value: V) -> V:
        """Keep `value` under `key`, dropping the oldest entry if the memo is full; answers `value`."""
        with self._lock:
            if key not in self and len(self) >= self.most:
                del self[next(iter(self))]
            self[key] = value
        return value
