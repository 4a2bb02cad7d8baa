"""Coupons (/v1/coupons) and the discounts that apply them to a subscription.

A discount is its own object (`di_...`, a row of its own so `expand` finds it):
the subscription and the invoices it makes list discount ids, and a discount's
`source.coupon` is the coupon's id unless expanded, as in this API version.
`discount_amounts()` is the one place an invoice's discounts are computed:
a percentage off each discountable line, or an amount off shared across them in
proportion (the last line takes the rounding). A `once` coupon applies to one
invoice, `repeating` ones until `end`, `forever` ones always. The pinned API
version has no parameter that puts a coupon on a customer, so only subscriptions
carry discounts here.
"""

from __future__ import annotations

import decimal
from typing import Any

from stripe.params import CouponCreateParams, CouponListParams, CouponRetrieveParams

from stripe_sandbox import events, metadata
from stripe_sandbox.errors import SandboxError, not_supported, resource_missing
from stripe_sandbox.listing import list_endpoint
from stripe_sandbox.periods import add_interval
from stripe_sandbox.router import Request, Router
from stripe_sandbox.store import Document, ObjectKind, Store, random_token

OBJECT_TYPE = "coupon"
DISCOUNT = "discount"
URL = "/v1/coupons"
KIND = ObjectKind(object_type=OBJECT_TYPE, id_prefix="", noun="coupon")
DISCOUNT_KIND = ObjectKind(object_type=DISCOUNT, id_prefix="di", noun="discount")
_UNSUPPORTED = ("applies_to", "currency_options", "max_redemptions", "redeem_by")


def create(req: Request) -> Document:
    params, store = req.params, req.store
    for name in _UNSUPPORTED:
        if name in params:
            raise not_supported(name)
    given = [name for name in ("amount_off", "percent_off") if name in params]
    if len(given) != 1:
        raise SandboxError(400, "Coupons must have either an `amount_off` or a `percent_off`.", param="amount_off")
    if "amount_off" in params and not params.get("currency"):
        raise SandboxError(400, "You must pass currency when passing amount_off.", param="currency")
    duration = params.get("duration", "once")
    if (duration == "repeating") != ("duration_in_months" in params):
        raise SandboxError(
            400,
            "`duration_in_months` is required with, and only with, `duration=repeating`.",
            param="duration_in_months",
        )
    coupon_id = params.get("id") or random_token(8)
    if store.get(OBJECT_TYPE, coupon_id, include_deleted=True) is not None:
        raise SandboxError(400, "Coupon already exists.", code="resource_already_exists", param="id")
    data: Document = {
        "id": coupon_id,
        "object": OBJECT_TYPE,
        "amount_off": params.get("amount_off"),
        "applies_to": None,
        "created": store.now,
        "currency": params["currency"].lower() if "amount_off" in params else None,
        "duration": duration,
        "duration_in_months": params.get("duration_in_months"),
        "livemode": False,
        "max_redemptions": None,
        "metadata": metadata.initial(params.get("metadata")),
        "name": params.get("name") or None,
        "percent_off": float(params["percent_off"]) if "percent_off" in params else None,
        "redeem_by": None,
        "times_redeemed": 0,
        "valid": True,
    }
    row = store.insert(OBJECT_TYPE, data)
    events.created(store, row)
    return store.present(row)


def retrieve(req: Request) -> Document:
    return req.store.present(req.store.require(OBJECT_TYPE, req.path_params["coupon"]))


def list_(req: Request) -> Document:
    return list_endpoint(req.store, req.params, OBJECT_TYPE, URL)


# -- discounts ------------------------------------------------------------------------


def apply(
    store: Store, specs: list[dict[str, Any]], *, customer_id: str, subscription_id: str, param: str = "discounts"
) -> list[str]:
    """`discounts[]` of a subscription create or update: a discount (id) per coupon."""
    found = []
    for index, spec in enumerate(specs):
        if set(spec) != {"coupon"}:
            raise not_supported(f"{param}[{index}][{next(iter(set(spec) - {'coupon'}), 'coupon')}]")
        row = store.get(OBJECT_TYPE, spec["coupon"])
        if row is None:
            raise resource_missing("coupon", spec["coupon"], param=f"{param}[{index}][coupon]", status=400)
        coupon = row.data
        end = (
            add_interval(store.now, "month", coupon["duration_in_months"])
            if coupon["duration"] == "repeating"
            else None
        )
        discount = store.insert(
            DISCOUNT,
            {
                "id": store.new_id(DISCOUNT),
                "object": DISCOUNT,
                "checkout_session": None,
                "customer": customer_id,
                "customer_account": None,
                "end": end,
                "invoice": None,
                "invoice_item": None,
                "promotion_code": None,
                "source": {"coupon": coupon["id"], "type": "coupon"},
                "start": store.now,
                "subscription": subscription_id,
                "subscription_item": None,
            },
            customer=customer_id,
        )
        store.update(row, {**row.data, "times_redeemed": row.data["times_redeemed"] + 1})
        found.append(discount.id)
    return found


def in_force(store: Store, discount_ids: list[str]) -> list[tuple[str, Document]]:
    """(discount id, coupon) of the discounts that apply to an invoice made now."""
    applying = []
    for discount_id in discount_ids:
        discount = store.get(DISCOUNT, discount_id)
        coupon = store.get(OBJECT_TYPE, discount.data["source"]["coupon"], include_deleted=True) if discount else None
        if discount is None or coupon is None:
            continue
        if discount.data["end"] is not None and store.now >= discount.data["end"]:
            continue
        applying.append((discount_id, coupon.data))
    return applying


def discount_amounts(lines: list[Document], applying: list[tuple[str, Document]], currency: str) -> list[Document]:
    """Each discount's share of each discountable line (set on the lines); the invoice's totals."""
    totals = []
    for discount_id, coupon in applying:
        discountable = [line for line in lines if line["discountable"] and line["amount"] > 0]
        base = sum(line["amount"] for line in discountable)
        if coupon["percent_off"] is not None:
            shares = [
                _round(decimal.Decimal(line["amount"]) * decimal.Decimal(str(coupon["percent_off"])) / 100)
                for line in discountable
            ]
        elif coupon["currency"] == currency and base > 0:
            off = min(int(coupon["amount_off"]), base)
            shares = [_round(decimal.Decimal(off) * line["amount"] / base) for line in discountable]
            if shares:
                shares[-1] += off - sum(shares)
        else:
            continue  # an amount off in another currency does not apply
        if sum(shares) == 0:
            continue  # nothing to take off (a trial's invoice): a `once` coupon waits for a real one
        for line, share in zip(discountable, shares, strict=True):
            line["discount_amounts"].append({"amount": share, "discount": discount_id})
        totals.append({"amount": sum(shares), "discount": discount_id})
    return totals


def _round(value: decimal.Decimal) -> int:
    return int(value.quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP))


def used_once(store: Store, discount_ids: list[str]) -> list[str]:
    """After an invoice: the discounts that stay (a `once` coupon's discount is used up)."""
    staying = []
    for discount_id in discount_ids:
        discount = store.get(DISCOUNT, discount_id)
        coupon = store.get(OBJECT_TYPE, discount.data["source"]["coupon"], include_deleted=True) if discount else None
        if coupon is not None and coupon.data["duration"] != "once":
            staying.append(discount_id)
    return staying


def register(router: Router) -> None:
    router.add_kind(KIND)
    router.add_kind(DISCOUNT_KIND)
    router.add("POST", URL, create, CouponCreateParams)
    router.add("GET", URL, list_, CouponListParams)
    router.add("GET", URL + "/{coupon}", retrieve, CouponRetrieveParams)
