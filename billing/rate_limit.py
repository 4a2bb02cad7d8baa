"""A per-client request budget for the public (unauthenticated) routes.

Kept in process memory, per worker process: a public read must not turn into
a database write (a flood of anonymous requests would otherwise be a flood of
writes, and on SQLite each would take the write lock), and losing the counts
on a restart costs nothing. So the budget is per process: with W processes
behind the router a client gets at most W times it (README: Configuration).

The algorithm is GCRA (the generic cell rate algorithm, a token bucket kept
as one timestamp per client): `per_minute` requests a minute, with bursts of
up to `burst`. At most `max_clients` clients are remembered (least recently
admitted forgotten first), so memory is bounded whatever the traffic.

The client is `request.remote_addr`: the TCP peer, unless TRUSTED_PROXY_COUNT
says how many proxies in front append to X-Forwarded-For (Heroku's router: 1;
werkzeug's ProxyFix then takes that many hops from the right, never a value the
client wrote). An IPv6 client is counted by its /64, the block one host holds.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from flask import request

from billing.errors import ApiError


class RateLimiter:
    def __init__(
        self,
        per_minute: int = 60,
        burst: int = 20,
        *,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = 60.0 / per_minute  # seconds between requests at the sustained rate
        self.tolerance = self.interval * (max(1, burst) - 1)
        self.max_clients = max_clients
        self._clock = clock
        self._ready_at: OrderedDict[str, float] = OrderedDict()  # when each client's next request is on time
        self._lock = threading.Lock()

    def wait(self, key: str) -> float:
        """0 when `key` may make a request now (and counts it), else the
        seconds until it may."""
        now = self._clock()
        with self._lock:
            ready_at = max(self._ready_at.get(key, now), now)
            if ready_at - now > self.tolerance:
                return ready_at - self.tolerance - now
            self._ready_at[key] = ready_at + self.interval
            self._ready_at.move_to_end(key)
            while self._ready_at and (
                len(self._ready_at) > self.max_clients or next(iter(self._ready_at.values())) <= now
            ):
                self._ready_at.popitem(last=False)  # forgotten clients are as good as new ones
            return 0.0

    def reset(self) -> None:
        with self._lock:
            self._ready_at.clear()


def client_key(address: str | None) -> str:
    """Who a request counts against: its IPv4 address, or its IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return (address or "unknown")[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


def throttle(limiter: RateLimiter, route: str) -> None:
    """Count this request against its client's budget for `route`; 429
    `rate_limited` with Retry-After (whole seconds) when it is spent."""
    wait = limiter.wait(f"{route} {client_key(request.remote_addr)}")
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise ApiError(
            429,
            "rate_limited",
            f"Too many requests from this address; retry in {seconds} s.",
            headers={"Retry-After": str(seconds)},
        )
