"""Configuration, read from environment variables only (12-factor)."""

from __future__ import annotations

import ipaddress
import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

CURRENCIES = ("usd", "zar", "eur", "gbp", "aud")
# Every error body's `doc_url` is this followed by the error's code (API.md, Errors).
DEFAULT_ERRORS_DOC_URL = "https://docs.altostrat.io/errors/"
# Stripe's API, unless STRIPE_API_BASE points elsewhere (stripe-mock, `python -m stripe_sandbox`, an egress proxy).
DEFAULT_STRIPE_API_BASE = "https://api.stripe.com"
# What /readyz and the start-up log name as the endpoint on the built-in emulator (no HTTP at all).
IN_PROCESS_ENDPOINT = "in-process"
INSTANCE_DIR = Path(__file__).resolve().parent.parent / "instance"


class ConfigError(Exception):
    """The environment does not describe a service that can start."""


def _dev_secret(name: str) -> str:
    """A random secret kept under instance/, so dev tokens survive restarts."""
    INSTANCE_DIR.mkdir(exist_ok=True)
    path = INSTANCE_DIR / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name) or str(default)
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{name} must be a positive whole number")
    return int(raw)


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name) or str(default)
    if not raw.isdigit():
        raise ConfigError(f"{name} must be a whole number (0 or more)")
    return int(raw)


def _reconcile_minutes(env: Mapping[str, str]) -> int:
    """Minutes between scheduled reconciles: a divisor of 60 (a crontab step), or 0 for none."""
    raw = env.get("RECONCILE_EVERY_MINUTES") or "60"
    if not raw.isdigit() or (int(raw) != 0 and 60 % int(raw) != 0):
        raise ConfigError("RECONCILE_EVERY_MINUTES must divide 60 (1, 2, 5, 10, 15, 30, 60), or be 0")
    return int(raw)


def is_live_key(api_key: str) -> bool:
    """Stripe's live keys (secret `sk_live_`, restricted `rk_live_`); any other key is a test mode key."""
    return api_key.startswith(("sk_live_", "rk_live_"))


@dataclass(frozen=True)
class Config:
    database_url: str
    stripe_api_key: str | None
    stripe_publishable_key: str
    stripe_webhook_secrets: tuple[str, ...]
    jwt_secret: str | None
    jwt_jwks_url: str | None
    jwt_algorithms: tuple[str, ...]
    jwt_issuer: str | None
    jwt_audience: str | None
    default_currency: str
    cors_origins: tuple[str, ...]
    log_level: str
    stripe_timeout: float = 20.0
    stripe_api_base: str = DEFAULT_STRIPE_API_BASE
    sandbox_latency_ms: float = 0.0
    sandbox_rate_limits: str = ""  # Stripe's rate limits in the sandbox: "live", "test" or "" (none)
    sandbox_webhook_url: str = ""
    # The service's own origin, where the sandbox serves its hosted invoice pages and PDFs.
    sandbox_public_url: str = ""
    # The queue workers (`flask worker`): threads per process, and how often
    # reconcile runs as their periodic task (0: never; the CLI still works).
    worker_threads: int = 4
    # A queue worker's niceness: on a machine it shares with a web process, Stripe's deliveries and
    # users' requests get the CPU first (as they get the Stripe request budget first).
    worker_nice: int = 10
    # PostgreSQL connections one process may open (a web worker's threads hold
    # at most two each; a queue worker's one each, plus the periodic tasks').
    database_pool_size: int = 8
    reconcile_every_minutes: int = 60
    # The share of Stripe's per-second limits background work leaves to users (billing.budget).
    stripe_budget_user_reserve: float = 0.2
    sandbox_request_log: str = ""  # a directory: the emulator logs each request there (benchmarks)
    # How the sandbox delivers its webhooks: as Stripe (this many at once, unordered), or in order one at a time.
    sandbox_webhook_concurrency: int = 32
    sandbox_webhook_ordered: bool = False
    errors_doc_url: str = DEFAULT_ERRORS_DOC_URL
    # Proxies in front that append X-Forwarded-For/-Proto (Heroku's router: 1); 0: the TCP peer is the client.
    trusted_proxy_count: int = 0
    # The public routes' budget per client address and worker process (billing.rate_limit).
    public_rate_limit_per_minute: int = 60
    # How long audit trail entries are kept (the periodic sweep deletes older ones).
    audit_retention_days: int = 400
    # STRIPE_TAX=1: Stripe Tax computes tax on every subscription, preview and invoice (billing.taxes).
    stripe_tax: bool = False
    # The bearer token `/metrics` asks for (billing.metrics); "": no /metrics (404). Never shown.
    metrics_token: str = field(default="", repr=False)

    @property
    def sandbox(self) -> bool:
        """The built-in emulator: only when opted in (STRIPE_SANDBOX=1) and no key is set."""
        return not self.stripe_api_key

    @property
    def stripe_mode(self) -> str:
        """`sandbox` (the built-in emulator), else the key's mode: `live` or `test`."""
        if self.sandbox or not self.stripe_api_key:
            return "sandbox"
        return "live" if is_live_key(self.stripe_api_key) else "test"

    @property
    def stripe_endpoint(self) -> str:
        """Where Stripe requests go: STRIPE_API_BASE (default Stripe's own), or `in-process` on the sandbox."""
        return IN_PROCESS_ENDPOINT if self.sandbox else self.stripe_api_base

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Raises ConfigError for the first setting (in this order) that cannot start a service."""
        env = dict(os.environ if env is None else env)
        stripe_key = _stripe_key(env)
        sandbox = stripe_key is None
        api_base = _stripe_api_base(env, sandbox)
        database_url = _database_url(env)
        jwt_secret, jwks_url, algorithms = _jwt_keys(env, sandbox)
        currency = _default_currency(env)
        webhook_secrets = _webhook_secrets(env, sandbox)
        # Stripe itself has its key's limits; a fake's limits are what it enforces (in process, or at STRIPE_API_BASE).
        rate_limits = _sandbox_rate_limits(env) if sandbox or api_base != DEFAULT_STRIPE_API_BASE else ""
        if sandbox:
            _check_sandbox_retry_settings(env)
            _check_sandbox_tax_registrations(env)
        user_reserve = _budget_user_reserve(env)
        webhook_concurrency = _sandbox_webhook_concurrency(env)
        errors_doc_url = _errors_doc_url(env)
        port = env.get("PORT") or 8000
        return cls(
            database_url=database_url,
            stripe_api_key=stripe_key,
            stripe_publishable_key=env.get("STRIPE_PUBLISHABLE_KEY") or ("pk_test_sandbox" if sandbox else ""),
            stripe_webhook_secrets=webhook_secrets,
            jwt_secret=jwt_secret,
            jwt_jwks_url=jwks_url,
            jwt_algorithms=algorithms,
            jwt_issuer=env.get("JWT_ISSUER") or None,
            jwt_audience=env.get("JWT_AUDIENCE") or None,
            default_currency=currency,
            cors_origins=_comma_separated(env.get("CORS_ORIGINS") or ""),
            log_level=(env.get("LOG_LEVEL") or "INFO").upper(),
            stripe_timeout=float(env.get("STRIPE_TIMEOUT") or 20.0),
            stripe_api_base=api_base,
            sandbox_latency_ms=float(env.get("SANDBOX_LATENCY_MS") or 0.0) if sandbox else 0.0,
            sandbox_rate_limits=rate_limits,
            worker_threads=_positive_int(env, "WORKER_THREADS", 4),
            worker_nice=_worker_nice(env),
            database_pool_size=_positive_int(env, "DATABASE_POOL_SIZE", 8),
            reconcile_every_minutes=_reconcile_minutes(env),
            sandbox_webhook_url=env.get("SANDBOX_WEBHOOK_URL") or f"http://127.0.0.1:{port}/webhooks/stripe",
            sandbox_public_url=(env.get("SANDBOX_PUBLIC_URL") or f"http://127.0.0.1:{port}").rstrip("/"),
            stripe_budget_user_reserve=user_reserve,
            sandbox_request_log=(env.get("SANDBOX_REQUEST_LOG") or "") if sandbox else "",
            sandbox_webhook_concurrency=webhook_concurrency,
            sandbox_webhook_ordered=env.get("SANDBOX_WEBHOOK_ORDERED") == "1",
            errors_doc_url=errors_doc_url,
            trusted_proxy_count=_count(env, "TRUSTED_PROXY_COUNT", 0),
            public_rate_limit_per_minute=_positive_int(env, "PUBLIC_RATE_LIMIT_PER_MINUTE", 60),
            audit_retention_days=_positive_int(env, "AUDIT_RETENTION_DAYS", 400),
            stripe_tax=env.get("STRIPE_TAX") == "1",
            metrics_token=(env.get("METRICS_TOKEN") or "").strip(),
        )


def _comma_separated(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _stripe_key(env: Mapping[str, str]) -> str | None:
    """The Stripe key; None (the sandbox) only when STRIPE_SANDBOX=1 asks for it."""
    stripe_key = env.get("STRIPE_API_KEY") or None
    if stripe_key is None and env.get("STRIPE_SANDBOX") != "1":
        # A production deploy that forgot its key must never take payments in a simulation.
        raise ConfigError(
            "STRIPE_API_KEY is not set; set it, or set STRIPE_SANDBOX=1 to run on the built-in Stripe sandbox"
        )
    return stripe_key


def _stripe_api_base(env: Mapping[str, str], sandbox: bool) -> str:
    """STRIPE_API_BASE as the `stripe` library takes it: scheme and host (and port, path prefix), no slash at
    the end. https, but for a loopback host (a fake on this machine): keys never cross a network in clear."""
    raw = (env.get("STRIPE_API_BASE") or "").strip()
    if not raw:
        return DEFAULT_STRIPE_API_BASE
    if sandbox:
        raise ConfigError(
            "STRIPE_API_BASE needs STRIPE_API_KEY (an sk_test_ key for a fake such as "
            "`python -m stripe_sandbox`); the built-in sandbox runs in the process"
        )
    usage = "STRIPE_API_BASE must be an https:// URL (http:// only for a loopback host), without query or credentials"
    try:
        parts = urlsplit(raw)
        port = parts.port  # not a number, or out of range: ValueError
    except ValueError:
        raise ConfigError(usage) from None
    host = parts.hostname or ""
    if (
        parts.scheme not in ("https", "http")
        or not host
        or port == 0
        or parts.query
        or parts.fragment
        or parts.username is not None
        or parts.password is not None
    ):
        raise ConfigError(usage)
    if parts.scheme == "http" and not _is_loopback(host):
        raise ConfigError(
            f"STRIPE_API_BASE: http:// is only for a loopback host (a fake on this machine); use https:// for {host}"
        )
    return raw.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _database_url(env: Mapping[str, str]) -> str:
    database_url = env.get("DATABASE_URL") or ""
    if not database_url:
        INSTANCE_DIR.mkdir(exist_ok=True)
        database_url = f"sqlite:///{INSTANCE_DIR / 'billing.sqlite3'}"
    return database_url


def _jwt_keys(env: Mapping[str, str], sandbox: bool) -> tuple[str | None, str | None, tuple[str, ...]]:
    """How tokens are verified: (HS256 secret, JWKS URL, algorithms)."""
    jwt_secret = env.get("JWT_SECRET") or None
    jwks_url = env.get("JWT_JWKS_URL") or None
    if jwt_secret is None and jwks_url is None:
        if not sandbox:
            raise ConfigError("set JWT_SECRET or JWT_JWKS_URL")
        # Sandbox only: a local secret so the README's dev token just works.
        jwt_secret = _dev_secret("dev-jwt-secret")
    if not jwks_url:
        return jwt_secret, jwks_url, ("HS256",)
    algorithms = _comma_separated(env.get("JWT_ALGORITHMS", "RS256,ES256"))
    bad = [a for a in algorithms if a not in ("RS256", "ES256")]
    if bad:
        raise ConfigError(f"JWT_ALGORITHMS with a JWKS URL must be RS256/ES256, got {bad}")
    return jwt_secret, jwks_url, algorithms


def _default_currency(env: Mapping[str, str]) -> str:
    currency = (env.get("DEFAULT_CURRENCY") or "usd").lower()
    if currency not in CURRENCIES:
        raise ConfigError(f"DEFAULT_CURRENCY must be one of {', '.join(CURRENCIES)}")
    return currency


def _webhook_secrets(env: Mapping[str, str], sandbox: bool) -> tuple[str, ...]:
    """Two during a rotation; in the sandbox without one, a local secret (the emulator signs with it)."""
    webhook_secrets = _comma_separated(env.get("STRIPE_WEBHOOK_SECRET") or "")
    if not webhook_secrets and sandbox:
        webhook_secrets = (_dev_secret("dev-webhook-secret"),)
    return webhook_secrets


def _worker_nice(env: Mapping[str, str]) -> int:
    raw = env.get("WORKER_NICE") or "10"
    if not raw.isdigit() or int(raw) > 19:
        raise ConfigError("WORKER_NICE must be a whole number from 0 (as the web) to 19 (the lowest priority)")
    return int(raw)


def _sandbox_rate_limits(env: Mapping[str, str]) -> str:
    rate_limits = env.get("SANDBOX_RATE_LIMITS") or ""
    if rate_limits not in ("", "live", "test"):
        raise ConfigError("SANDBOX_RATE_LIMITS must be live, test or empty (no limits)")
    return rate_limits


def _check_sandbox_retry_settings(env: Mapping[str, str]) -> None:
    """SANDBOX_RETRY_SCHEDULE and SANDBOX_RETRY_END, refused at start in one line (the
    emulator reads them itself, `stripe_sandbox.dunning`, when it retries a payment)."""
    from stripe_sandbox.dunning import RetrySettingsError, settings

    try:
        settings(env)
    except RetrySettingsError as error:
        raise ConfigError(str(error)) from None


def _check_sandbox_tax_registrations(env: Mapping[str, str]) -> None:
    """SANDBOX_TAX_REGISTRATIONS, refused at start in one line (`stripe_sandbox.tax` reads it)."""
    from stripe_sandbox.tax import RegistrationsError, registrations

    try:
        registrations(env)
    except RegistrationsError as error:
        raise ConfigError(str(error)) from None


def _budget_user_reserve(env: Mapping[str, str]) -> float:
    try:
        user_reserve = float(env.get("STRIPE_BUDGET_USER_RESERVE") or 0.2)
    except ValueError:
        user_reserve = -1.0
    if not 0 <= user_reserve <= 0.9:
        raise ConfigError("STRIPE_BUDGET_USER_RESERVE must be a fraction from 0 to 0.9 (default 0.2)")
    return user_reserve


def _sandbox_webhook_concurrency(env: Mapping[str, str]) -> int:
    try:
        webhook_concurrency = int(env.get("SANDBOX_WEBHOOK_CONCURRENCY") or 32)
    except ValueError:
        webhook_concurrency = 0
    if webhook_concurrency < 1:
        raise ConfigError("SANDBOX_WEBHOOK_CONCURRENCY must be a whole number, at least 1")
    return webhook_concurrency


def _errors_doc_url(env: Mapping[str, str]) -> str:
    errors_doc_url = env.get("ERRORS_DOC_URL") or DEFAULT_ERRORS_DOC_URL
    if not errors_doc_url.startswith(("https://", "http://")):
        raise ConfigError("ERRORS_DOC_URL must be an http(s) URL (each error's code is appended to it)")
    return errors_doc_url


def config_or_exit() -> Config:
    """The configuration from the environment, or, if it can't start a service,
    one line on stderr that says why and exit status 1 (no traceback)."""
    try:
        return Config.from_env()
    except ConfigError as error:
        sys.stderr.write(f"billing: cannot start: {error}\n")
        raise SystemExit(1) from None
