"""The /v1/subscriptions routes: thin handlers around `lifecycle`, recording the events."""

from __future__ import annotations

from collections.abc import Callable

from stripe.params import (
    SubscriptionCancelParams,
    SubscriptionCreateParams,
    SubscriptionListParams,
    SubscriptionResumeParams,
    SubscriptionRetrieveParams,
    SubscriptionUpdateParams,
)

from stripe_sandbox.listing import list_endpoint
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.router import Request, Router
from stripe_sandbox.store import Document, ObjectKind, Store
from stripe_sandbox.subscriptions import lifecycle
from stripe_sandbox.subscriptions.billing_cycle import advance
from stripe_sandbox.subscriptions.documents import ENDED, OBJECT_TYPE, URL, changed, present, reject


def create(req: Request) -> Document:
    row, _ = lifecycle.create(req.store, req.params)
    return req.store.present(row)


def retrieve(req: Request) -> Document:
    return req.store.present(req.store.require(OBJECT_TYPE, req.path_params["id"]))


def _transition(
    req: Request,
    apply: Callable[[Store, SandboxObject, Document], object],
    check: Callable[[SandboxObject], None] | None = None,
) -> Document:
    """Change the subscription in the path (under its row lock) and emit what changed."""
    row = req.store.require(OBJECT_TYPE, req.path_params["id"], for_update=True)
    if check is not None:
        check(row)
    before = req.store.present(row)
    apply(req.store, row, req.params)
    changed(req.store, row, before)
    return req.store.present(row)


def update(req: Request) -> Document:
    return _transition(req, lifecycle.update)


def resume(req: Request) -> Document:
    """Resume a `paused` subscription (a trial that ended without a payment method)."""
    return _transition(req, lifecycle.resume, lifecycle.check_resumable)


def cancel(req: Request) -> Document:
    return _transition(req, lifecycle.cancel, lifecycle.check_cancelable)


def list_(req: Request) -> Document:
    params = req.params
    reject(params, ("customer_account", "test_clock"))
    o = SandboxObject
    where = []
    status = params.get("status")
    if status is None:
        where.append(o.data["status"].as_string() != "canceled")
    elif status == "ended":
        where.append(o.data["status"].as_string().in_(ENDED))
    elif status != "all":
        where.append(o.data["status"].as_string() == status)
    if "collection_method" in params:
        where.append(o.data["collection_method"].as_string() == params["collection_method"])
    if "automatic_tax" in params:
        where.append(o.data[("automatic_tax", "enabled")].as_boolean() == params["automatic_tax"]["enabled"])

    wanted_price = params.get("price") or params.get("plan")
    period_filters = {
        field: params[field] for field in ("current_period_start", "current_period_end") if field in params
    }

    def matches(data: Document) -> bool:
        items = data["items"]["data"]
        if wanted_price and all(item["price"] != wanted_price for item in items):
            return False
        for field, bound in period_filters.items():
            value = items[0][field]
            if isinstance(bound, int):
                bound = {"gte": bound, "lte": bound}
            checks = {"gt": value.__gt__, "gte": value.__ge__, "lt": value.__lt__, "lte": value.__le__}
            if not all(checks[op](limit) for op, limit in bound.items()):
                return False
        return True

    predicate = matches if wanted_price or period_filters else None
    return list_endpoint(
        req.store, params, OBJECT_TYPE, URL, customer=params.get("customer"), where=where, predicate=predicate
    )


KIND = ObjectKind(object_type=OBJECT_TYPE, id_prefix="sub", noun="subscription", present=present, advance=advance)


def register(router: Router) -> None:
    router.add_kind(KIND)
    router.add("POST", URL, create, SubscriptionCreateParams)
    router.add("GET", URL, list_, SubscriptionListParams)
    router.add("GET", URL + "/{id}", retrieve, SubscriptionRetrieveParams)
    router.add("POST", URL + "/{id}", update, SubscriptionUpdateParams)
    router.add("DELETE", URL + "/{id}", cancel, SubscriptionCancelParams)
    router.add("POST", URL + "/{id}/resume", resume, SubscriptionResumeParams)
