"""Stripe Tax, as the sandbox computes it: the customer's location, the platform's
registrations, standard rates, reverse charge.

What it follows (Stripe's docs):
- Collect customer addresses (https://docs.stripe.com/tax/customer-locations): the customer's
  billing address is its tax location; the country must be a valid ISO code, a US address
  needs its ZIP code, a Canadian one its postal code or province. A location Stripe can't
  use is `customer_tax_location_invalid` where it is checked: a customer created or updated
  with `tax[validate_location]=immediately`, a subscription or a preview with
  `automatic_tax[enabled]=true`.
- Zero tax amounts and reverse charges (https://docs.stripe.com/tax/zero-tax): where the
  platform is not registered, tax is 0 with `taxability_reason: not_collecting`; a customer
  `tax_exempt: exempt` is `customer_exempt`, `reverse` is `reverse_charge`; a business
  customer in another EU country than the platform's, with a verified EU VAT number, is
  `reverse_charge` (the buyer accounts for the VAT), and so is an Australian business with a
  verified ABN buying from an overseas platform (no GST on B2B imported services).
  Otherwise the customer's country's standard rate, `standard_rated`, exclusive of the price
  (the account's default tax behavior: `exclusive`).

The platform's registrations are the Dashboard's Tax > Registrations, read from the environment
as the sandbox's other settings are: `SANDBOX_TAX_REGISTRATIONS` (comma-separated ISO codes,
e.g. `GB,DE,ZA,AU`; unset: none, so Stripe Tax collects nothing). The first is the platform's own
country (the invoices' `account_country`). Rates: `tax_rates.json` (one standard rate per
country, its source cited in the file). Tax is computed per line on what the line costs after
its discounts, rounded half up, as the invoice is made and again when it is finalized.
"""

from __future__ import annotations

import copy
import decimal
import functools
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pycountry
from sqlalchemy import select
from stripe.params import TaxRateRetrieveParams

from stripe_sandbox.errors import SandboxError
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.router import Request, Router
from stripe_sandbox.store import INTERNAL, Document, ObjectKind, Store

TAX_RATE = "tax_rate"
TAX_RATE_KIND = ObjectKind(object_type=TAX_RATE, id_prefix="txr", noun="tax_rate")
RATES_FILE = Path(__file__).with_name("tax_rates.json")
DEFAULT_ACCOUNT_COUNTRY = "US"
EU = frozenset("AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split())
# Tax ID types that make a customer a business for reverse charge, by customer country group.
REVERSE_CHARGE_IDS = {"eu_vat": EU, "au_abn": frozenset({"AU"})}
_US_ZIP = re.compile(r"\d{5}(-\d{4})?\Z")


@functools.cache
def _table() -> dict[str, Any]:
    return dict(json.loads(RATES_FILE.read_text(encoding="utf-8")))


def standard_rate(country: str) -> decimal.Decimal | None:
    rate = _table()["rates"].get(country)
    return None if rate is None else decimal.Decimal(str(rate))


class RegistrationsError(ValueError):
    """A SANDBOX_TAX_REGISTRATIONS value the sandbox can't use (the message says which)."""


def registrations(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    raw = (os.environ if env is None else env).get("SANDBOX_TAX_REGISTRATIONS") or ""
    codes = tuple(code.strip().upper() for code in raw.split(",") if code.strip())
    unknown = [code for code in codes if pycountry.countries.get(alpha_2=code) is None]
    if unknown:
        raise RegistrationsError(
            f"SANDBOX_TAX_REGISTRATIONS: {', '.join(unknown)} is no ISO 3166-1 alpha-2 country code"
        )
    return codes


def account_country() -> str:
    found = registrations()
    return found[0] if found else DEFAULT_ACCOUNT_COUNTRY


# -- the customer's location ----------------------------------------------------------


def location_problem(address: Document | None) -> str | None:
    """The parameter that makes this address unusable as a tax location, or None."""
    if not address or not address.get("country"):
        return "address"
    country = str(address["country"]).upper()
    if pycountry.countries.get(alpha_2=country) is None:
        return "address[country]"
    postal_code = (address.get("postal_code") or "").strip()
    if country == "US" and not _US_ZIP.match(postal_code):
        return "address[postal_code]"
    if country == "CA" and not postal_code and not address.get("state"):
        return "address[postal_code]"
    return None


def location_invalid(param: str) -> SandboxError:
    return SandboxError(
        400,
        "The customer's location isn't recognized. Provide a valid address to calculate tax "
        "(https://docs.stripe.com/tax/customer-locations).",
        code="customer_tax_location_invalid",
        param=param,
    )


def require_location(customer: Document) -> None:
    """`customer_tax_location_invalid` unless Stripe Tax can place the customer."""
    problem = location_problem(customer.get("address"))
    if problem is not None:
        raise location_invalid(problem)


def customer_tax(customer: Document) -> Document:
    """The customer's `tax` hash (expandable): whether automatic tax can be computed, and where."""
    address = customer.get("address") or {}
    if location_problem(address) is not None:
        status, location = "unrecognized_location", None
    else:
        country = str(address["country"]).upper()
        location = {"country": country, "source": "billing_address", "state": address.get("state")}
        status = "supported" if country in registrations() else "not_collecting"
    return {"automatic_tax": status, "ip_address": None, "location": location, "provider": "stripe"}


# -- the calculation ---------------------------------------------------------------------


def _verified_ids(store: Store, customer_id: str) -> list[Document]:
    from stripe_sandbox import tax_ids  # tax_ids imports this module

    return [t for t in tax_ids.of_customer(store, customer_id) if (t["verification"] or {}).get("status") == "verified"]


def treatment(store: Store, customer: Document) -> tuple[str, decimal.Decimal]:
    """(taxability_reason, percentage) for this customer, as Stripe Tax decides it."""
    address = customer.get("address") or {}
    country = str(address.get("country") or "").upper()
    rate = standard_rate(country)
    if country not in registrations() or rate is None:
        return "not_collecting", decimal.Decimal(0)
    exempt = customer.get("tax_exempt") or "none"
    if exempt == "exempt":
        return "customer_exempt", decimal.Decimal(0)
    if exempt == "reverse":
        return "reverse_charge", decimal.Decimal(0)
    if country != account_country():  # a cross-border sale
        for tax_id in _verified_ids(store, customer["id"]):
            countries = REVERSE_CHARGE_IDS.get(tax_id["type"], frozenset())
            if country in countries and tax_id["country"] == country:
                return "reverse_charge", decimal.Decimal(0)
    return "standard_rated", rate


def _tax_rate(store: Store, country: str, percentage: decimal.Decimal) -> str:
    """Stripe Tax's TaxRate for a jurisdiction and percentage (made once, then reused)."""
    o = SandboxObject
    key = f"{country}:{percentage}"
    for row in store.session.scalars(
        select(o).where(o.object_type == TAX_RATE, o.data[(INTERNAL, "key")].as_string() == key)
    ):
        return row.id
    kind = "gst" if country in _table()["gst_countries"] else "vat"
    name = pycountry.countries.get(alpha_2=country)
    data: Document = {
        "id": store.new_id(TAX_RATE),
        "object": TAX_RATE,
        "active": False,  # Stripe Tax's rates are not for manual use
        "country": country,
        "created": store.now,
        "description": f"{kind.upper()} {name.name if name else country}",
        "display_name": kind.upper(),
        "effective_percentage": float(percentage),
        "flat_amount": None,
        "inclusive": False,
        "jurisdiction": country,
        "jurisdiction_level": "country",
        "livemode": False,
        "metadata": {},
        "percentage": float(percentage),
        "rate_type": "percentage",
        "state": None,
        "tax_type": kind,
        INTERNAL: {"key": key},
    }
    return store.insert(TAX_RATE, data).id


def _round(value: decimal.Decimal) -> int:
    return int(value.quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP))


def apply(store: Store, invoice: Document, customer: Document | None) -> None:
    """Set each line's `taxes` and the invoice's `total_taxes` (automatic tax on), or clear them."""
    lines = invoice["lines"]["data"]
    if not (invoice.get("automatic_tax") or {}).get("enabled") or customer is None:
        for line in lines:
            line["taxes"] = []
        invoice["total_taxes"] = []
        return
    invoice["automatic_tax"] = {
        "disabled_reason": None,
        "enabled": True,
        "liability": {"account": None, "type": "self"},
        "provider": "stripe",
        "status": "complete",
    }
    invoice["account_country"] = account_country()
    invoice["customer_tax_exempt"] = customer.get("tax_exempt") or "none"
    from stripe_sandbox import tax_ids

    invoice["customer_tax_ids"] = [
        {"type": t["type"], "value": t["value"]} for t in tax_ids.of_customer(store, customer["id"])
    ]
    reason, percentage = treatment(store, customer)
    country = str((customer.get("address") or {}).get("country") or "").upper()
    rate_id = _tax_rate(store, country, percentage)
    totals: dict[str, list[int]] = {}
    for line in lines:
        taxable = line["amount"] - sum(d["amount"] for d in line.get("discount_amounts") or [])
        amount = _round(decimal.Decimal(taxable) * percentage / 100)
        line["taxes"] = [_entry(amount, rate_id, reason, taxable)]
        sums = totals.setdefault(reason, [0, 0])
        sums[0] += amount
        sums[1] += taxable
    invoice["total_taxes"] = [_entry(a, rate_id, r, t) for r, (a, t) in totals.items()]
    if not lines:
        invoice["total_taxes"] = [_entry(0, rate_id, reason, 0)]


def _entry(amount: int, rate_id: str, reason: str, taxable: int) -> Document:
    return copy.deepcopy(
        {
            "amount": amount,
            "tax_behavior": "exclusive",
            "tax_rate_details": {"tax_rate": rate_id},
            "taxability_reason": reason,
            "taxable_amount": taxable,
            "type": "tax_rate_details",
        }
    )


def tax_amount(invoice: Document) -> int:
    return sum(int(t["amount"]) for t in invoice.get("total_taxes") or [])


def retrieve_rate(req: Request) -> Document:
    return req.store.present(req.store.require(TAX_RATE, req.path_params["tax_rate"]))


def register(router: Router) -> None:
    router.add_kind(TAX_RATE_KIND)
    router.add("GET", "/v1/tax_rates/{tax_rate}", retrieve_rate, TaxRateRetrieveParams)
