"""The product catalog: which Stripe Price sells each (product, currency, interval).

Prices are found by lookup key `{product}_{currency}_{interval}`. `PriceBook`
caches the mapping in the process so a subscription call does not cost an extra
Stripe request each time; `sync_catalog` makes a Stripe account match
`catalog.toml` and is idempotent.
"""

from __future__ import annotations

import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import stripe

from billing.budget import background
from billing.config import CURRENCIES
from billing.errors import ApiError
from billing.gateway import StripeGateway
from billing.stripe_ids import id_of, named_id

if TYPE_CHECKING:
    from billing.db import Database

CATALOG_FILE = Path(__file__).with_name("catalog.toml")
PRODUCTS = ("locations", "users", "sso")
INTERVALS = ("month", "year")
PRODUCT_KEY = "billing_api_product"


def lookup_key(product: str, currency: str, interval: str) -> str:
    return f"{product}_{currency}_{interval}"


def all_lookup_keys() -> list[str]:
    return [lookup_key(p, c, i) for p in PRODUCTS for c in CURRENCIES for i in INTERVALS]


class CatalogProducts:
    """Stripe product id -> catalog product, from the service's copy of Stripe (a
    product's catalog key never changes, so what is known stays known). One per
    process, on the app's state."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._known: dict[str, str] = {}

    def of_price(self, price: dict[str, Any]) -> str | None:
        """The catalog product a price sells, known by its Stripe Product's
        `billing_api_product` metadata: a price that lost its lookup key to a newer
        one (a catalog change) still counts as its product. Prices of products the
        catalog never made fall back to their lookup key `{product}_{currency}_{interval}`."""
        product = price.get("product")
        key = (product.get("metadata") or {}).get(PRODUCT_KEY) if isinstance(product, dict) else None
        product = named_id(product)
        if key is None and isinstance(product, str):
            key = self._known.get(product) or self._from_copy().get(product)
        if key is None:
            key = (price.get("lookup_key") or "").split("_", 1)[0]
        return key if key in PRODUCTS else None

    def _from_copy(self) -> dict[str, str]:
        from sqlalchemy import select

        from billing.models import StripeCopy

        with self.db.read() as session:
            rows = session.execute(select(StripeCopy.id, StripeCopy.data).where(StripeCopy.object_type == "product"))
            for product_id, data in rows:
                key = (data.get("metadata") or {}).get(PRODUCT_KEY)
                if key:
                    self._known[product_id] = key
        return self._known


def load_catalog(path: Path = CATALOG_FILE) -> dict[str, Any]:
    with path.open("rb") as handle:
        return tomllib.load(handle)


class PriceBook:
    """Lookup key -> Stripe price id, cached for `ttl` seconds per process."""

    def __init__(self, gateway: StripeGateway, ttl: float = 600.0) -> None:
        self.gateway = gateway
        self.ttl = ttl
        self._prices: dict[str, str] = {}
        self._loaded_at = 0.0
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._prices, self._loaded_at = {}, 0.0

    def _load(self) -> None:
        found = self.gateway.prices_by_lookup_key(all_lookup_keys())
        self._prices = {key: price.id for key, price in found.items()}
        self._loaded_at = time.monotonic()

    def price_id(self, product: str, currency: str, interval: str) -> str:
        """The price for this product; 422 `price_not_configured` when there is none."""
        key = lookup_key(product, currency, interval)
        with self._lock:
            stale = time.monotonic() - self._loaded_at > self.ttl
            if stale or (key not in self._prices and time.monotonic() - self._loaded_at > 5):
                self._load()
            price_id = self._prices.get(key)
        if price_id is None:
            raise ApiError(
                422, "price_not_configured", f"No price is configured for {product} in {currency} per {interval}."
            )
        return price_id


@dataclass
class SyncReport:
    products_created: list[str] = field(default_factory=list)
    prices_created: list[str] = field(default_factory=list)
    prices_replaced: list[str] = field(default_factory=list)
    unchanged: int = 0


@background("catalog")
def sync_catalog(gateway: StripeGateway, catalog: dict[str, Any] | None = None) -> SyncReport:
    """Create or update products and prices so Stripe matches the catalog file.
    Running it twice changes nothing; a changed amount makes a new price that
    takes over the lookup key (prices are immutable in Stripe). Background work
    (billing.budget): users' requests go first."""
    catalog = catalog or load_catalog()
    report = SyncReport()
    products = {p.metadata.to_dict().get(PRODUCT_KEY): p for p in gateway.iter_products() if p.metadata and p.active}
    existing = gateway.prices_by_lookup_key(all_lookup_keys())
    for product_key, entry in catalog.items():
        product = products.get(product_key)
        if product is None:
            product = gateway.create_product(
                {"name": entry["name"], "metadata": {PRODUCT_KEY: product_key}},
                idempotency_key=f"catalog:product:{product_key}",
            )
            report.products_created.append(product_key)
        elif product.name != entry["name"]:
            gateway.update_product(
                product.id, {"name": entry["name"]}, idempotency_key=f"catalog:product:{product_key}:{entry['name']}"
            )
        for interval in INTERVALS:
            for currency, amount in entry.get(interval, {}).items():
                key = lookup_key(product_key, currency, interval)
                current = existing.get(key)
                if current is not None and _matches(current, product.id, currency, interval, amount):
                    report.unchanged += 1
                    continue
                gateway.create_price(
                    {
                        "product": product.id,
                        "currency": currency,
                        "unit_amount": int(amount),
                        "recurring": {"interval": interval},
                        "lookup_key": key,
                        "transfer_lookup_key": True,
                        "nickname": f"{entry['name']} ({currency.upper()}/{interval})",
                    },
                    idempotency_key=f"catalog:price:{key}:{amount}:{product.id}",
                )
                if current is not None:
                    gateway.update_price(current.id, {"active": False}, idempotency_key=f"catalog:retire:{current.id}")
                    report.prices_replaced.append(key)
                else:
                    report.prices_created.append(key)
    return report


def _matches(price: stripe.Price, product_id: str, currency: str, interval: str, amount: int) -> bool:
    return (
        id_of(price.product) == product_id
        and price.currency == currency
        and price.unit_amount == int(amount)
        and price.recurring is not None
        and price.recurring.interval == interval
    )


def missing_prices(gateway: StripeGateway) -> list[str]:
    """The catalog's lookup keys that have no active price in the Stripe account."""
    return sorted(set(all_lookup_keys()) - set(gateway.prices_by_lookup_key(all_lookup_keys())))


RATE_LIMIT_ATTEMPTS = 30


@background("catalog")
def ensure_catalog(gateway: StripeGateway) -> None:
    """Load the catalog into a Stripe account that lacks any of its prices (the
    sandbox). Every gunicorn worker does this at start-up: under Stripe's rate
    limits (SANDBOX_RATE_LIMITS) they refuse each other, so a 429 is waited out
    (loading is idempotent) rather than leaving the catalog half made."""
    for attempt in range(RATE_LIMIT_ATTEMPTS):
        try:
            if set(gateway.prices_by_lookup_key(all_lookup_keys())) != set(all_lookup_keys()):
                sync_catalog(gateway)
            return
        except stripe.RateLimitError:
            if attempt == RATE_LIMIT_ATTEMPTS - 1:
                raise
            time.sleep(1.0)  # Stripe's limits are per second
