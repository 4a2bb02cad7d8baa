"""What one process shares between requests: config, database, Stripe, tokens.

In sandbox mode it also holds the emulator's clock and webhook sender, typed by
what the service uses of them, so nothing here imports the emulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from flask import current_app

from billing.catalog import CatalogProducts, PriceBook
from billing.config import Config
from billing.db import Database
from billing.gateway import StripeGateway
from billing.jobs import JobQueue
from billing.rate_limit import RateLimiter
from billing.tokens import TokenVerifier


class SandboxClockReading(Protocol):
    """Sandbox time and the status of its last advance (Stripe's test clock statuses)."""

    @property
    def now(self) -> int: ...

    @property
    def status(self) -> str: ...

    @property
    def advanced_to(self) -> int | None: ...


class SandboxClock(Protocol):
    """The emulator's clock, as the sandbox routes use it."""

    def reading(self) -> SandboxClockReading: ...

    def published(self) -> SandboxClockReading: ...

    def advance_in_background(self, seconds: float = 0) -> SandboxClockReading: ...


class SandboxAuthenticator(Protocol):
    """The emulator's stand-in for Stripe.js answering a 3-D Secure challenge."""

    def complete(self, client_secret: str, succeed: bool) -> str: ...


class SandboxWebhooks(Protocol):
    """The emulator's webhook sender: events it has recorded, posted to us."""

    def deliver_pending(self) -> int: ...

    def deliveries_due(self) -> bool: ...


@dataclass
class StripeReadiness:
    """The readiness probe's last look at Stripe: a probe every few seconds
    should not cost a Stripe request each time."""

    checked_at: float = 0.0  # time.monotonic() of the last answer; 0: ask Stripe next time
    missing_prices: list[str] = field(default_factory=list)


@dataclass
class BillingState:
    config: Config
    db: Database
    gateway: StripeGateway
    verifier: TokenVerifier
    prices: PriceBook
    queue: JobQueue
    # Stripe product id -> catalog product (this process's cache).
    products: CatalogProducts
    # The public routes' per-client budget (in this process's memory).
    public_limiter: RateLimiter = field(default_factory=RateLimiter)
    readiness: StripeReadiness = field(default_factory=StripeReadiness)
    # Sandbox mode only.
    sandbox_clock: SandboxClock | None = None
    webhooks: SandboxWebhooks | None = None
    sandbox_authenticator: SandboxAuthenticator | None = None


def current() -> BillingState:
    state: BillingState = current_app.extensions["billing"]
    return state
