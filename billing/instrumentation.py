"""Which Stripe requests a request of ours made, and how long they took.

A thin wrapper around the `stripe` library's HTTP client: every call (with the
library's own retries inside it) is timed and its Stripe request id noted, for
the request log line and for measuring the service's own overhead. With a
`StripeBudget`, each attempt (the library's retries included) is counted in
it before it is sent, and background work sends again after Stripe's 429.
Each attempt is counted and timed in the metrics (by endpoint and outcome);
each call is a span when traces are on (billing.tracing).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any, TypeVar

import stripe

from billing import metrics, tracing
from billing.budget import StripeBudget, endpoint

# An attempt's answer: (body, status, headers), the body a string or a stream.
R = TypeVar("R", bound=tuple[Any, int, Mapping[str, str]])


@dataclass
class StripeCalls:
    """`seconds` is wall time with at least one Stripe call in flight: calls made
    in parallel count once, so latency minus it is the service's own time."""

    request_ids: list[str] = field(default_factory=list)
    count: int = 0
    seconds: float = 0.0
    in_flight: int = 0
    busy_since: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def begin(self) -> None:
        with self.lock:
            if self.in_flight == 0:
                self.busy_since = time.perf_counter()
            self.in_flight += 1

    def end(self, request_id: str | None) -> None:
        with self.lock:  # parallel fetches of one request report here together
            self.count += 1
            self.in_flight -= 1
            if self.in_flight == 0:
                self.seconds += time.perf_counter() - self.busy_since
            if request_id:
                self.request_ids.append(request_id)


_current: ContextVar[StripeCalls | None] = ContextVar("stripe_calls", default=None)


def start() -> tuple[StripeCalls, Token[StripeCalls | None]]:
    """Begin recording for the current request; `stop(token)` ends it."""
    calls = StripeCalls()
    return calls, _current.set(calls)


def stop(token: Token[StripeCalls | None]) -> None:
    _current.reset(token)


class InstrumentedHTTPClient(stripe.HTTPClient):
    name = "instrumented"

    def __init__(self, inner: stripe.HTTPClient, *, latency: float = 0.0, budget: StripeBudget | None = None) -> None:
        super().__init__()
        self.inner = inner
        # Sandbox only (SANDBOX_LATENCY_MS): make the emulator feel a network away.
        self.latency = latency
        self.budget = budget

    def request_with_retries(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        post_data: Any = None,
        max_network_retries: int | None = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, Mapping[str, str]]:
        calls = _current.get()
        if calls is not None:
            calls.begin()
        request_id: str | None = None
        try:
            with tracing.stripe_span(method, url) as span:
                if self.latency:
                    time.sleep(self.latency)
                # The library's retry loop, run here so that each attempt passes `request`.
                result = super().request_with_retries(
                    method, url, headers, post_data, max_network_retries, _usage=_usage
                )
                request_id = result[2].get("Request-Id") or result[2].get("request-id")
                if span is not None:
                    span.set_attribute("http.response.status_code", result[1])
                return result
        finally:
            if calls is not None:
                calls.end(request_id)

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, Mapping[str, str]]:
        """One attempt (the library retries around it), counted in the budget."""
        return self._within_budget(
            method,
            url,
            lambda: self._measured(method, url, lambda: self.inner.request(method, url, headers, post_data)),
        )

    def request_stream(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[Any, int, Mapping[str, str]]:
        return self._within_budget(
            method,
            url,
            lambda: self._measured(method, url, lambda: self.inner.request_stream(method, url, headers, post_data)),
        )

    def _measured(self, method: str, url: str, attempt: Callable[[], R]) -> R:
        """One attempt, counted by endpoint and outcome and timed (no answer: `network_error`)."""
        started = time.perf_counter()
        status: int | None = None
        try:
            result = attempt()
            status = result[1]
            return result
        finally:
            metrics.observe_stripe_request(endpoint(method, url), status, time.perf_counter() - started)

    def _within_budget(self, method: str, url: str, attempt: Callable[[], R]) -> R:
        """The attempt, admitted by the budget; sent again while the budget says
        so (background work refused by Stripe's limit, after the cool-down)."""
        if self.budget is None:
            return attempt()
        while True:
            self.budget.admit(method, url)
            result = attempt()
            if not self.budget.answered(result[1], result[2]):
                return result

    def close(self) -> None:
        self.inner.close()  # type: ignore[no-untyped-call]
