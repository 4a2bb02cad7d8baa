"""`SandboxHTTPClient`: a `stripe.HTTPClient` that answers from the database.

The `stripe` library builds the request exactly as for api.stripe.com and
hands it here instead of to the network; the emulator decodes it, runs the
matching handler in one database transaction and answers with the status,
headers and JSON body Stripe would send.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import stripe
from requests.structures import CaseInsensitiveDict
from sqlalchemy.exc import DBAPIError, IntegrityError

from stripe_sandbox import idempotency
from stripe_sandbox.api import build_router
from stripe_sandbox.clock import sandbox_time
from stripe_sandbox.database import SessionSource
from stripe_sandbox.errors import SandboxError, unrecognized_url
from stripe_sandbox.expand import expand
from stripe_sandbox.form import decode
from stripe_sandbox.params import validate
from stripe_sandbox.rate_limits import admit, limits_for
from stripe_sandbox.request_log import RequestLog
from stripe_sandbox.router import Request, Route, Router
from stripe_sandbox.store import DEFAULT_PUBLIC_URL, Store, random_token
from stripe_sandbox.webhooks import WebhookSender

try:
    import psycopg.errors as pg_errors

    _PG_RETRYABLE: tuple[type[BaseException], ...] = (
        pg_errors.DeadlockDetected,
        pg_errors.SerializationFailure,
        pg_errors.LockNotAvailable,
    )
except ImportError:  # pragma: no cover - SQLite-only installs
    _PG_RETRYABLE = ()

logger = logging.getLogger(__name__)


# Case-insensitive, like the `requests` headers the library reads
# (`request-id`, `stripe-should-retry` in lower case).
Headers = CaseInsensitiveDict[str]


def _is_retryable(exc: DBAPIError) -> bool:
    """Lock contention and races a retry resolves (the library retries on Stripe-Should-Retry)."""
    if isinstance(exc, IntegrityError) or isinstance(exc.orig, _PG_RETRYABLE):
        return True
    return isinstance(exc.orig, sqlite3.OperationalError) and "locked" in str(exc.orig)


class SandboxHTTPClient(stripe.HTTPClient):
    name = "sandbox"

    def __init__(
        self,
        database: SessionSource,
        *,
        router: Router | None = None,
        webhooks: WebhookSender | None = None,
        rate_limits: str = "",
        request_log: str = "",
        public_url: str = DEFAULT_PUBLIC_URL,
    ) -> None:
        """`rate_limits`: Stripe's of "live" or "test" mode, or "" for none (see rate_limits.py).
        `request_log`: a directory to log each request to (request_log.py), or "" for none.
        `public_url`: the host's origin, where it serves the hosted invoice pages (hosted_invoices.py)."""
        super().__init__()
        self._database = database
        self._public_url = public_url
        self._router = router or build_router()
        # Told after every committed write, to deliver the events it recorded.
        self._webhooks = webhooks
        self._rate_limits = limits_for(rate_limits)
        self._request_log = RequestLog(request_log) if request_log else None

    # -- stripe.HTTPClient interface ------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, Headers]:
        return self._respond(method.lower(), url, Headers(headers or {}), post_data)

    def request_stream(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[io.BytesIO, int, Headers]:
        body, status, response_headers = self.request(method, url, headers, post_data)
        return io.BytesIO(body.encode()), status, response_headers

    def close(self) -> None:
        pass  # the sessions belong to whoever passed them in

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Headers]:
        body, status, response_headers = await asyncio.to_thread(self.request, method, url, headers, post_data)
        return body.encode(), status, response_headers

    async def request_stream_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[AsyncIterator[bytes], int, Headers]:
        body, status, response_headers = await self.request_async(method, url, headers, post_data)

        async def chunks() -> AsyncIterator[bytes]:
            yield body

        return chunks(), status, response_headers

    async def close_async(self) -> None:
        pass

    def sleep_async(self, secs: float) -> Any:
        return asyncio.sleep(secs)

    # -- emulation ------------------------------------------------------------------

    def _respond(self, method: str, url: str, headers: Headers, post_data: Any) -> tuple[str, int, Headers]:
        request_id = "req_" + random_token(14)
        response_headers = Headers(
            {
                "Content-Type": "application/json",
                "Request-Id": request_id,
                "Stripe-Version": headers.get("Stripe-Version") or stripe.api_version,
            }
        )
        idempotency_key = headers.get("Idempotency-Key") if method == "post" else None
        if idempotency_key:
            response_headers["Idempotency-Key"] = idempotency_key
        try:
            status, body, extra_headers = self._dispatch(method, url, headers, post_data, request_id, idempotency_key)
        except SandboxError as err:
            status, body, extra_headers = err.status, _dump(err.body(request_id, int(time.time()))), err.headers
        except DBAPIError as exc:
            if not _is_retryable(exc):
                raise
            logger.info("sandbox: retryable database conflict on %s %s: %s", method.upper(), url, exc.orig)
            conflict = SandboxError(
                429,
                "This object cannot be accessed right now because another API request or Stripe "
                "process is currently accessing it. If you see this error intermittently, retry the "
                "request. If you see this error frequently and are making multiple concurrent requests "
                "to a single object, make your requests serially or at a lower rate.",
                code="lock_timeout",
                headers={"Stripe-Should-Retry": "true"},
            )
            status, body, extra_headers = (
                conflict.status,
                _dump(conflict.body(request_id, int(time.time()))),
                conflict.headers,
            )
        response_headers.update(extra_headers)
        if self._request_log is not None:  # off by default: costs nothing then
            path = urlsplit(url).path
            matched = self._router.match(method, path)
            self._request_log.record(method, matched[0].template if matched is not None else path, status)
        return body, status, response_headers

    def _dispatch(
        self, method: str, url: str, headers: Headers, post_data: Any, request_id: str, idempotency_key: str | None
    ) -> tuple[int, str, dict[str, str]]:
        api_key = authenticate(headers)
        parts = urlsplit(url)
        matched = self._router.match(method, parts.path)
        if self._rate_limits is not None:
            # Counted before anything else is checked: Stripe limits requests, valid or not.
            endpoint = f"{method.upper()} {matched[0].template}" if matched is not None else None
            admit(self._database, self._rate_limits, api_key, endpoint)
        if matched is None:
            raise unrecognized_url(method, parts.path)
        route, path_params = matched
        if isinstance(post_data, bytes):
            post_data = post_data.decode()
        raw = decode(post_data or "") if method == "post" else decode(parts.query)
        params = validate(route.params, raw) if route.params is not None else raw

        if not route.mutates:
            with self._database.read() as session:
                store = Store(session, self._router.kinds, sandbox_time(session), public_url=self._public_url)
                return 200, _dump(_run(route, method, parts.path, path_params, params, store)), {}

        try:
            return self._write(
                route, method, parts.path, path_params, params, raw, request_id, idempotency_key, api_key
            )
        finally:
            if self._webhooks is not None:
                self._webhooks.notify()

    def _write(
        self,
        route: Route,
        method: str,
        path: str,
        path_params: dict[str, str],
        params: dict[str, Any],
        raw: dict[str, Any],
        request_id: str,
        idempotency_key: str | None,
        api_key: str,
    ) -> tuple[int, str, dict[str, str]]:
        failure: SandboxError | None = None
        with self._database.write() as session:
            store = Store(
                session,
                self._router.kinds,
                sandbox_time(session),
                request_id=request_id,
                idempotency_key=idempotency_key,
                public_url=self._public_url,
            )
            if not idempotency_key:
                try:
                    return 200, _dump(_run(route, method, path, path_params, params, store)), {}
                except SandboxError as err:
                    if not err.keep_changes:
                        raise
                    failure = err  # commit, then answer with the error
            else:
                scope = idempotency.api_key_hash(api_key)
                stored = idempotency.claim(
                    session, scope, idempotency_key, method, path, idempotency.fingerprint(raw), request_id
                )
                if stored is not None:
                    return (
                        stored.status,
                        stored.body,
                        {"Idempotent-Replayed": "true", "Original-Request": stored.request_id},
                    )
                # A savepoint, so a failed request leaves no trace but its stored error.
                savepoint = session.begin_nested()
                try:
                    status, body = 200, _dump(_run(route, method, path, path_params, params, store))
                    savepoint.commit()
                except SandboxError as err:
                    if err.keep_changes:
                        savepoint.commit()
                    else:
                        savepoint.rollback()
                    status, body = err.status, _dump(err.body(request_id, store.now))
                except BaseException:
                    savepoint.rollback()
                    raise
                idempotency.record(session, scope, idempotency_key, status, body)
                return status, body, {}
        assert failure is not None
        raise failure


def _run(
    route: Route, method: str, path: str, path_params: dict[str, str], params: dict[str, Any], store: Store
) -> dict[str, Any]:
    document = route.handler(Request(method, path, path_params, params, store))
    return expand(store, document, params.get("expand") or [])


def authenticate(headers: Headers) -> str:
    """The request's API key, or Stripe's 401."""
    authorization = headers.get("Authorization", "")
    key = authorization.removeprefix("Bearer ").strip()
    if not authorization.startswith("Bearer ") or not key:
        raise SandboxError(
            401,
            "You did not provide an API key. You need to provide your API key in the Authorization "
            "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
        )
    if not key.startswith(("sk_test_", "rk_test_")):
        # The sandbox is test mode only; a live key here means a misconfiguration.
        raise SandboxError(401, f"Invalid API Key provided: {key[:8]}{'*' * max(len(key) - 12, 0)}{key[-4:]}")
    return key


def _dump(body: dict[str, Any]) -> str:
    return json.dumps(body, indent=2)
