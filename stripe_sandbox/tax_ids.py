"""Customer tax IDs: /v1/customers/{customer}/tax_ids and /v1/tax_ids/{id}.

As Stripe's Customer tax IDs guide describes them (https://docs.stripe.com/billing/customer/tax-ids):
- a value whose format doesn't fit its type is refused, 400 `tax_id_invalid` ("Invalid value
  for eu_vat."), param `value`;
- the country is the type's (an `eu_vat` number's from its prefix: `EL` is Greece, `XI`
  Northern Ireland);
- EU VAT numbers (VIES), UK VAT numbers (HMRC) and Australian ABNs (ABR) are verified
  asynchronously: `verification.status` is `pending` on creation and settles a moment
  later (`VERIFY_AFTER_SECONDS` of sandbox time, when the clock next runs) with
  `customer.tax_id.updated`. In test mode the outcome follows Stripe's magic numbers: a value
  holding `000000000` verifies, `111111111` fails (`unverified`), `222222222` stays pending;
  any other value is not found in the registry (`unverified`). Other types are not verified
  (`unavailable`).
- a customer holds at most `MAX_PER_CUSTOMER` tax IDs.
Events: `customer.tax_id.created`, `.updated`, `.deleted`.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from sqlalchemy import select
from stripe.params import (
    CustomerTaxIdCreateParams,
    CustomerTaxIdDeleteParams,
    CustomerTaxIdListParams,
    CustomerTaxIdRetrieveParams,
    TaxIdRetrieveParams,
)

from stripe_sandbox import events
from stripe_sandbox.errors import SandboxError, resource_missing
from stripe_sandbox.listing import list_endpoint
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.router import Request, Router
from stripe_sandbox.store import Document, ObjectKind, Store
from stripe_sandbox.tax import EU

OBJECT_TYPE = "tax_id"
MAX_PER_CUSTOMER = 5
VERIFY_AFTER_SECONDS = 5
VERIFIED_TYPES = frozenset({"eu_vat", "gb_vat", "au_abn"})
MAGIC = {"000000000": "verified", "111111111": "unverified", "222222222": "pending"}

# Each type's format (spaces, dots and dashes aside), as Stripe's table of types shows them.
_EU_VAT = re.compile(
    r"(ATU\d{8}|BE[01]\d{9}|BG\d{9,10}|CY\d{8}[A-Z]|CZ\d{8,10}|DE\d{9}|DK\d{8}|EE\d{9}|EL\d{9}"
    r"|ES[A-Z0-9]\d{7}[A-Z0-9]|FI\d{8}|FR[A-Z0-9]{2}\d{9}|HR\d{11}|HU\d{8}|IE\d[A-Z0-9+*]\d{5}[A-Z]{1,2}"
    r"|IT\d{11}|LT(\d{9}|\d{12})|LU\d{8}|LV\d{11}|MT\d{8}|NL\d{9}B\d{2}|PL\d{10}|PT\d{9}|RO\d{2,10}"
    r"|SE\d{12}|SI\d{8}|SK\d{10}|XI(\d{9}|\d{12}))\Z"
)
PATTERNS: dict[str, re.Pattern[str]] = {
    "eu_vat": _EU_VAT,
    "gb_vat": re.compile(r"GB(\d{9}|\d{12}|GD\d{3}|HA\d{3})\Z"),
    "za_vat": re.compile(r"4\d{9}\Z"),
    "au_abn": re.compile(r"\d{11}\Z"),
    "au_arn": re.compile(r"\d{12}\Z"),
    "nz_gst": re.compile(r"\d{8,9}\Z"),
    "ch_vat": re.compile(r"CHE\d{9}(MWST|TVA|IVA)\Z"),
    "no_vat": re.compile(r"\d{9}MVA\Z"),
    "us_ein": re.compile(r"\d{9}\Z"),
    "ca_bn": re.compile(r"\d{9}\Z"),
    "in_gst": re.compile(r"\d{2}[A-Z]{5}\d{4}[A-Z][A-Z0-9]Z[A-Z0-9]\Z"),
    "sg_gst": re.compile(r"[A-Z]\d{8}[A-Z]\Z"),
    "jp_cn": re.compile(r"\d{13}\Z"),
}
_SEPARATORS = re.compile(r"[\s.\-]")
_COUNTRY_OF_PREFIX = {"EL": "GR", "XI": "GB"}


def _invalid(kind: str) -> SandboxError:
    return SandboxError(400, f"Invalid value for {kind}.", code="tax_id_invalid", param="value")


def country_of(kind: str, value: str) -> str | None:
    if kind == "eu_vat":
        prefix = value[:2].upper()
        return _COUNTRY_OF_PREFIX.get(prefix, prefix)
    prefix = kind.split("_", 1)[0].upper()
    return "GB" if prefix == "UK" else prefix


def check(kind: str, value: str) -> None:
    compact = _SEPARATORS.sub("", value).upper()
    pattern = PATTERNS.get(kind)
    if not compact or (pattern is not None and not pattern.match(compact)):
        raise _invalid(kind)
    if kind == "eu_vat" and country_of(kind, compact) not in EU | {"GB"}:
        raise _invalid(kind)


def _settled(value: str) -> str:
    for magic, status in MAGIC.items():
        if magic in value:
            return status
    return "unverified"


def of_customer(store: Store, customer_id: str) -> list[Document]:
    """The customer's tax IDs, oldest first (as presented)."""
    o = SandboxObject
    rows = store.session.scalars(
        select(o)
        .where(o.customer == customer_id, o.object_type == OBJECT_TYPE, o.deleted.is_(False))
        .order_by(o.seq, o.id)
    )
    return [store.present(row) for row in rows]


def _owned(store: Store, customer_id: str, tax_id: str, *, for_update: bool = False) -> SandboxObject:
    store.require("customer", customer_id)
    row = store.get(OBJECT_TYPE, tax_id, for_update=for_update)
    if row is None or row.data["customer"] != customer_id:
        raise resource_missing("tax_id", tax_id)
    return row


def create(req: Request) -> Document:
    params, store = req.params, req.store
    customer = store.require("customer", req.path_params["customer"], for_update=True)  # one count at a time
    kind, value = params["type"], params["value"]
    check(kind, value)
    if len(of_customer(store, customer.id)) >= MAX_PER_CUSTOMER:
        raise SandboxError(400, f"A customer can have at most {MAX_PER_CUSTOMER} tax IDs.", param="value")
    verified = kind in VERIFIED_TYPES
    data: Document = {
        "id": store.new_id(OBJECT_TYPE),
        "object": OBJECT_TYPE,
        "country": country_of(kind, value),
        "created": req.now,
        "customer": customer.id,
        "customer_account": None,
        "livemode": False,
        "owner": {
            "account": None,
            "application": None,
            "customer": customer.id,
            "customer_account": None,
            "type": "customer",
        },
        "type": kind,
        "value": value,
        "verification": {
            "status": "pending" if verified else "unavailable",
            "verified_address": None,
            "verified_name": None,
        },
    }
    due = req.now + VERIFY_AFTER_SECONDS if verified else None
    row = store.insert(OBJECT_TYPE, data, customer=customer.id, due_at=due)
    events.record(store, "customer.tax_id.created", store.present(row))
    return store.present(row)


def settle(store: Store, row: SandboxObject) -> None:
    """The registry answered (the clock reached the row's due_at)."""
    status = _settled(row.data["value"])
    if status == "pending":  # Stripe's "remains pending indefinitely" test number
        store.update(row, row.data)
        return
    before = store.present(row)
    data = copy.deepcopy(row.data)
    data["verification"]["status"] = status
    if status == "verified":
        data["verification"]["verified_name"] = "Sandbox Test Company"
        data["verification"]["verified_address"] = "1 Test Street"
    store.update(row, data)
    events.record(store, "customer.tax_id.updated", store.present(row), events.diff(before, store.present(row)))


def retrieve(req: Request) -> Document:
    return req.store.present(_owned(req.store, req.path_params["customer"], req.path_params["id"]))


def retrieve_top_level(req: Request) -> Document:
    row = req.store.get(OBJECT_TYPE, req.path_params["id"])
    if row is None:
        raise resource_missing("tax_id", req.path_params["id"])
    return req.store.present(row)


def list_(req: Request) -> Document:
    customer = req.store.require("customer", req.path_params["customer"])
    return list_endpoint(
        req.store, req.params, OBJECT_TYPE, f"/v1/customers/{customer.id}/tax_ids", customer=customer.id
    )


def delete(req: Request) -> Document:
    store = req.store
    row = _owned(store, req.path_params["customer"], req.path_params["id"], for_update=True)
    last = store.present(row)
    stub: dict[str, Any] = {"id": row.id, "object": OBJECT_TYPE, "deleted": True}
    store.mark_deleted(row, stub)
    events.record(store, "customer.tax_id.deleted", last)
    return dict(stub)


KIND = ObjectKind(object_type=OBJECT_TYPE, id_prefix="txi", noun="tax_id", advance=settle)


def register(router: Router) -> None:
    router.add_kind(KIND)
    url = "/v1/customers/{customer}/tax_ids"
    router.add("POST", url, create, CustomerTaxIdCreateParams)
    router.add("GET", url, list_, CustomerTaxIdListParams)
    router.add("GET", url + "/{id}", retrieve, CustomerTaxIdRetrieveParams)
    router.add("DELETE", url + "/{id}", delete, CustomerTaxIdDeleteParams)
    router.add("GET", "/v1/tax_ids/{id}", retrieve_top_level, TaxIdRetrieveParams)
