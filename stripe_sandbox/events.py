"""Events: what changed, as Stripe records it; /v1/events.

Handlers call `created` / `updated` / `record` in the transaction that makes
the change, so an event exists exactly when its change was committed (a
request that fails rolls both back). Each event also gets a pending row in
`sandbox_webhook_deliveries`, which `webhooks.WebhookSender` works through.
"""

from __future__ import annotations

from typing import Any

import stripe
from sqlalchemy import select
from stripe.params import EventListParams, EventRetrieveParams

from stripe_sandbox.errors import parameters_exclusive
from stripe_sandbox.listing import list_endpoint
from stripe_sandbox.models import SandboxObject, SandboxWebhookDelivery
from stripe_sandbox.router import Request, Router
from stripe_sandbox.store import Document, ObjectKind, Store

OBJECT_TYPE = "event"
URL = "/v1/events"

# Event names use the resource's name, which for subscriptions is not the object type.
_PREFIX = {"subscription": "customer.subscription"}


def _present(store: Store, data: Document) -> Document:
    # Stripe: "Number of webhooks that haven't been successfully delivered": a failed event still counts.
    delivery = store.session.get(SandboxWebhookDelivery, data["id"])
    data["pending_webhooks"] = 1 if delivery is not None and delivery.delivered_at is None else 0
    return data


KIND = ObjectKind(object_type=OBJECT_TYPE, id_prefix="evt", noun="event", present=_present)


def event_type(object_type: str, action: str) -> str:
    return f"{_PREFIX.get(object_type, object_type)}.{action}"


def record(store: Store, type: str, obj: Document, previous_attributes: Document | None = None) -> SandboxObject:
    """Record one event whose `data.object` is `obj` (the object as presented now)."""
    data: Document = {
        "id": store.new_id(OBJECT_TYPE),
        "object": OBJECT_TYPE,
        "api_version": stripe.api_version,
        "created": store.now,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": store.request_id, "idempotency_key": store.idempotency_key},
        "type": type,
    }
    if previous_attributes is not None and type.endswith(".updated"):
        # Stripe's Event docs: previous_attributes exists "for *.updated events" only.
        data["data"]["previous_attributes"] = previous_attributes
    row = store.insert(OBJECT_TYPE, data)
    store.session.add(SandboxWebhookDelivery(event_id=row.id, seq=row.seq, pending=True, attempts=0))
    return row


def created(store: Store, row: SandboxObject) -> None:
    record(store, event_type(row.object_type, "created"), store.present(row))


def deleted(store: Store, row: SandboxObject, obj: Document | None = None) -> None:
    # Stripe sends the object as it was, not the `{id, deleted: true}` stub.
    record(store, event_type(row.object_type, "deleted"), obj if obj is not None else store.present(row))


def updated(store: Store, row: SandboxObject, before: Document, action: str = "updated") -> Document | None:
    """Record `<type>.updated` if the presented object differs from `before`; returns the diff."""
    after = store.present(row)
    previous = diff(before, after)
    if not previous:
        return None
    record(store, event_type(row.object_type, action), after, previous)
    return previous


def diff(before: Any, after: Any) -> Document:
    """Stripe's `previous_attributes`: the old values of what changed.

    Plain hashes (metadata, invoice_settings, ...) are compared key by key and
    report only changed keys (a new key's old value is null); API objects and
    lists (items, ...) are reported whole.
    """
    previous: Document = {}
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict) and "object" not in old and "object" not in new:
            previous[key] = diff(old, new)
        else:
            previous[key] = old
    return previous


# -- routes -------------------------------------------------------------------------


def retrieve(req: Request) -> Document:
    return req.store.present(req.store.require(OBJECT_TYPE, req.path_params["id"]))


def list_(req: Request) -> Document:
    params = req.params
    if "type" in params and "types" in params:
        raise parameters_exclusive("type", "types")
    kind = SandboxObject.data["type"].as_string()
    where = []
    if "type" in params:
        wanted = params["type"]
        # `customer.subscription.*`: Stripe's wildcard for a group of events.
        where.append(kind.like(wanted.replace("*", "%")) if "*" in wanted else kind == wanted)
    if "types" in params:
        where.append(kind.in_(params["types"]))
    if "delivery_success" in params:
        # false: still being retried or given up (Stripe: "unsuccessfully delivered").
        undelivered = select(SandboxWebhookDelivery.event_id).where(SandboxWebhookDelivery.delivered_at.is_(None))
        where.append(
            SandboxObject.id.not_in(undelivered) if params["delivery_success"] else SandboxObject.id.in_(undelivered)
        )
    return list_endpoint(req.store, params, OBJECT_TYPE, URL, where=where)


def register(router: Router) -> None:
    router.add_kind(KIND)
    router.add("GET", URL, list_, EventListParams)
    router.add("GET", URL + "/{id}", retrieve, EventRetrieveParams)
