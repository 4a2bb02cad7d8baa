"""What one process shares between requests: config, database, Stripe, tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app

from billing.auth import TokenVerifier
from billing.catalog import PriceBook
from billing.config import Config
from billing.db import Database
from billing.gateway import StripeGateway


@dataclass
class BillingState:
    config: Config
    db: Database
    gateway: StripeGateway
    verifier: TokenVerifier
    prices: PriceBook
    # Sandbox mode only: the emulator's clock and webhook sender.
    sandbox_clock: Any = None
    webhooks: Any = None


def current() -> BillingState:
    state: BillingState = current_app.extensions["billing"]
    return state
