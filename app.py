"""The billing API's application factory (`app` is what gunicorn serves)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import requests
import stripe
from flask import Flask, Response
from flask_cors import CORS
from flask_smorest import Api
from sqlalchemy import inspect
from werkzeug.middleware.proxy_fix import ProxyFix

from billing import cli, idempotency, input_guard, json_logging, openapi, request_log, tracing
from billing.audit.routes import blp as audit_blp
from billing.billing_accounts.routes import blp as billing_accounts_blp
from billing.body_limits import BodyLimits
from billing.budget import StripeBudget, limits_for_key, limits_for_sandbox
from billing.catalog import CatalogProducts, PriceBook, ensure_catalog
from billing.config import Config, config_or_exit
from billing.db import Database
from billing.errors import register_error_handlers
from billing.gateway import StripeGateway, build_client
from billing.health import blp as health_blp
from billing.invoices.routes import blp as invoices_blp
from billing.jobs import JobQueue, queue_storage
from billing.metrics import blp as metrics_blp
from billing.models import StripeCopy
from billing.openapi import docs_assets
from billing.organizations.routes import LARGER_BODIES, pictures_blp, public_blp
from billing.organizations.routes import blp as organizations_blp
from billing.payment_methods.routes import blp as payment_methods_blp
from billing.rate_limit import RateLimiter
from billing.replica import Keeper
from billing.state import BillingState
from billing.subscriptions.routes import blp as subscriptions_blp
from billing.tax_ids.routes import blp as tax_ids_blp
from billing.tax_ids.routes import status_blp as tax_status_blp
from billing.tokens import TokenVerifier
from billing.webhooks.routes import blp as webhooks_blp
from billing.workspaces.routes import blp as workspaces_blp
from schemas.common import ErrorSchema

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("billing")

MAX_BODY_BYTES = 1024 * 1024
SANDBOX_EXTRA_CONNECTIONS = 20


class BillingApi(Api):
    ERROR_SCHEMA = ErrorSchema


WebhookTransport = Callable[[bytes, Mapping[str, str]], int]


def http_webhook_transport(url: str, timeout: float) -> WebhookTransport:
    """The sandbox posts its events to the service's own webhook URL, as Stripe would (and gives up as Stripe does)."""

    def post(payload: bytes, headers: Mapping[str, str]) -> int:
        return requests.post(url, data=payload, headers=dict(headers), timeout=timeout).status_code

    return post


def cors_origin(origin: str) -> str | re.Pattern[str]:
    """An origin of CORS_ORIGINS as flask-cors takes it: `scheme://host:*` is that host on any
    port (or none), anchored at both ends; any other is matched as written."""
    if origin.endswith(":*"):
        return re.compile(re.escape(origin[:-2]) + r"(:[0-9]{1,5})?\Z", re.IGNORECASE)
    return origin


def build_stripe(
    config: Config,
    db: Database,
    http_client: stripe.HTTPClient | None = None,
    webhook_transport: WebhookTransport | None = None,
) -> dict[str, Any]:
    """The gateway, and in sandbox mode the emulator's clock, webhook sender and 3-D Secure stand-in."""
    budget: StripeBudget | None
    if config.stripe_api_key:
        budget = StripeBudget(
            db,
            config.stripe_api_key,
            # A fake at STRIPE_API_BASE may enforce live mode's limits on its test key (SANDBOX_RATE_LIMITS).
            limits_for_sandbox(config.sandbox_rate_limits) or limits_for_key(config.stripe_api_key),
            user_reserve=config.stripe_budget_user_reserve,
        )
        client = build_client(
            config.stripe_api_key,
            http_client=http_client,
            timeout=config.stripe_timeout,
            budget=budget,
            api_base=config.stripe_api_base,
        )
        return {"gateway": StripeGateway(client, keep=Keeper(db))}
    from stripe_sandbox import SandboxAuthenticator, SandboxClock, SandboxHTTPClient, WebhookSender, install

    try:
        install(db)  # the emulator's own tables, before anything (the catalog) uses them
    except Exception as error:  # e.g. the database is not reachable yet: start anyway, as without the sandbox
        log.warning("sandbox tables not created (%s)", type(error).__name__)
    from stripe_sandbox.webhook_retries import DELIVERY_TIMEOUT_SECONDS

    webhooks = WebhookSender(
        db,
        config.stripe_webhook_secrets[0],
        webhook_transport or http_webhook_transport(config.sandbox_webhook_url, DELIVERY_TIMEOUT_SECONDS),
        background=webhook_transport is None,
        timeout_seconds=DELIVERY_TIMEOUT_SECONDS,
        concurrency=config.sandbox_webhook_concurrency,
        ordered=config.sandbox_webhook_ordered,
    )
    sandbox = http_client or SandboxHTTPClient(
        db,
        webhooks=webhooks,
        rate_limits=config.sandbox_rate_limits,
        request_log=config.sandbox_request_log,
        public_url=config.sandbox_public_url,
    )
    limits = limits_for_sandbox(config.sandbox_rate_limits)  # the emulator's limits, if any, are the budget's
    budget = (
        StripeBudget(db, "sk_test_sandbox", limits, user_reserve=config.stripe_budget_user_reserve) if limits else None
    )
    client = build_client(
        "sk_test_sandbox", http_client=sandbox, latency=config.sandbox_latency_ms / 1000, budget=budget
    )
    clock = SandboxClock(db, webhooks=webhooks, public_url=config.sandbox_public_url)

    def stripe_clock() -> float:
        return time.time() + clock.offset()

    # Stripe's clock is the sandbox's: events are dated on it, and the copy dates the changes it sees on it.
    return {
        "gateway": StripeGateway(client, keep=Keeper(db, clock=stripe_clock), clock=stripe_clock),
        "sandbox_clock": clock,
        "webhooks": webhooks,
        "sandbox_authenticator": SandboxAuthenticator(db, webhooks=webhooks),
    }


def load_sandbox_catalog(db: Database, gateway: StripeGateway) -> None:
    """The sandbox starts with the catalog loaded, once the database is migrated: `flask migrate`
    builds the app before its tables exist, and the processes started after it load the catalog
    (trying earlier would also send its webhooks to a service not yet listening)."""
    try:
        if not inspect(db.engine).has_table(StripeCopy.__tablename__):
            log.info("sandbox catalog: loaded once the database is migrated")
            return
        ensure_catalog(gateway)
    except Exception as error:  # e.g. the database is not reachable yet
        log.warning("sandbox catalog not loaded yet (%s)", type(error).__name__)


class SyncFlask(Flask):
    """Flask, for an app with no `async def` view or hook (tests/test_hot_reads.py checks each one):
    Flask asks `ensure_sync` of every hook and view of every request (a dozen a request, each an
    `inspect` of the function), and here the answer is always the function itself."""

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        return func


def create_app(
    config: Config | None = None,
    *,
    stripe_http_client: stripe.HTTPClient | None = None,
    webhook_transport: WebhookTransport | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Flask:
    """The app. In sandbox mode `webhook_transport` replaces the HTTP delivery of
    the emulator's events (tests deliver them synchronously through a test client).
    `tracer_provider`: trace with it (tests); else as the OTEL_* variables say (billing.tracing)."""
    config = config or Config.from_env()
    json_logging.configure(config.log_level)
    app = SyncFlask(__name__, static_folder=None)  # no static files: the docs' assets have their own blueprint
    # Every answer is JSON: werkzeug's 308 redirects (merging `//`, adding a trailing slash) are
    # HTML and never reach the error handlers. A path with an empty segment is the envelope's 404;
    # a trailing slash is the same resource.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the contract's field order
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        ERRORS_DOC_URL=config.errors_doc_url,
        API_TITLE=openapi.TITLE,
        API_VERSION="1.0.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        # Served from the pinned swagger-ui-bundle package: the docs page works offline.
        OPENAPI_SWAGGER_UI_URL="/docs/assets/",
        API_SPEC_OPTIONS={
            "info": {"description": openapi.DESCRIPTION},
            "servers": openapi.SERVERS,
            "components": {
                "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
            },
            "security": [{"bearerAuth": []}],
        },
    )
    # The sandbox's emulator shares the pool (Stripe's side of each call), so it may open more.
    db = Database(
        config.database_url,
        pool_size=config.database_pool_size,
        max_overflow=SANDBOX_EXTRA_CONNECTIONS if config.sandbox else 0,
    )
    stripe_parts = build_stripe(config, db, stripe_http_client, webhook_transport)
    gateway = stripe_parts["gateway"]
    queue = JobQueue(app, queue_storage(config), reconcile_every_minutes=config.reconcile_every_minutes)
    app.extensions["billing"] = BillingState(
        config=config,
        db=db,
        verifier=TokenVerifier(config),
        prices=PriceBook(gateway),
        queue=queue,
        products=CatalogProducts(db),
        public_limiter=RateLimiter(
            config.public_rate_limit_per_minute, burst=min(20, config.public_rate_limit_per_minute)
        ),
        **stripe_parts,
    )
    # Before any other hook: the request's span must hold every SQL statement and Stripe call.
    tracer_provider = tracer_provider or tracing.provider_from_environment()
    if tracer_provider is not None:
        tracing.install(app, db, queue, tracer_provider)
    if not config.stripe_webhook_secrets:
        log.warning("STRIPE_WEBHOOK_SECRET is not set: every Stripe webhook will be refused")
    if config.sandbox:
        log.warning(
            "Stripe: running on the built-in SANDBOX emulator (no STRIPE_API_KEY set); no real money moves",
            extra={"stripe_mode": config.stripe_mode, "stripe_endpoint": config.stripe_endpoint},
        )
        load_sandbox_catalog(db, gateway)
    else:
        log.info(
            "Stripe: %s mode at %s",
            config.stripe_mode,
            config.stripe_endpoint,
            extra={"stripe_mode": config.stripe_mode, "stripe_endpoint": config.stripe_endpoint},
        )

    api = BillingApi(app)
    openapi.extend(api, app)
    for blp in (
        health_blp,
        workspaces_blp,
        billing_accounts_blp,
        subscriptions_blp,
        payment_methods_blp,
        tax_ids_blp,
        tax_status_blp,
        invoices_blp,
        organizations_blp,
        audit_blp,
        public_blp,
        webhooks_blp,
    ):
        api.register_blueprint(blp)
    app.register_blueprint(pictures_blp)  # served to browsers, not in the document
    app.register_blueprint(metrics_blp)  # for Prometheus, not part of the API (README: Operating it)
    if config.sandbox:
        from billing.sandbox_routes.routes import blp as sandbox_blp
        from billing.sandbox_routes.routes import hosted_invoices_blp

        api.register_blueprint(sandbox_blp)
        app.register_blueprint(hosted_invoices_blp)  # Stripe's hosted pages: not part of the API's document
    app.register_blueprint(docs_assets)
    register_error_handlers(app)
    if config.cors_origins:
        CORS(
            app,
            origins=[cors_origin(origin) for origin in config.cors_origins],
            vary_header=True,
            methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            expose_headers=["X-Request-Id", "Idempotent-Replayed", "Retry-After", "Server-Timing"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-Id"],
        )

    # Each request's body limit, before any hook reads the body; the web worker asks the same.
    body_limits = BodyLimits(app, LARGER_BODIES)
    app.url_value_preprocessor(body_limits.apply)
    app.config["BODY_LIMIT_FOR"] = body_limits.for_target
    # First, so that every request that begins a scope of shared reads ends it.
    app.before_request(db.begin_request)
    app.teardown_request(lambda _error: db.end_request())
    app.before_request(request_log.start)
    app.before_request(input_guard.check_request)

    @app.after_request
    def _finish(response: Response) -> Response:
        # Answers are per caller and may hold billing data: never sniffed, never cached.
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        if config.cors_origins:  # CORS headers depend on the request's Origin
            response.vary.add("Origin")
        return request_log.finish(idempotency.finish(response))

    if config.trusted_proxy_count:
        # The client's address (the public routes' rate limit) and scheme (our picture URLs) as the
        # proxies in front saw them: that many hops from the right of X-Forwarded-For, none the client wrote.
        n = config.trusted_proxy_count
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]
    cli.register(app)
    return app


def __getattr__(name: str) -> Flask:
    # `gunicorn app:app` builds the app on first use, so importing this module
    # (tests, CLI) does not read the environment or open a database.
    if name == "app":
        application = create_app(config_or_exit())  # or one line that says why, not a traceback
        globals()["app"] = application
        return application
    raise AttributeError(name)
