"""Stripe's list endpoints: limit, starting_after/ending_before, created filters."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import ColumnElement

from stripe_sandbox.errors import SandboxError, parameters_exclusive, resource_missing
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.store import Document, Store

DEFAULT_LIMIT = 10
MAX_LIMIT = 100


def page_limit(params: Document) -> int:
    """`limit` (1-100, default 10) of a list call; one cursor at most, as Stripe checks."""
    limit: int = params.get("limit", DEFAULT_LIMIT)
    if limit < 1:
        raise SandboxError(400, "This value must be greater than or equal to 1.", param="limit")
    if limit > MAX_LIMIT:
        raise SandboxError(400, f"This value must be less than or equal to {MAX_LIMIT}.", param="limit")
    if params.get("starting_after") and params.get("ending_before"):
        raise parameters_exclusive("ending_before", "starting_after")
    return limit


def list_object(url: str, data: list[Document], has_more: bool) -> Document:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def created_filter(value: Any, column: Any = SandboxObject.created) -> list[ColumnElement[bool]]:
    """`created=123` or `created[gte]=...&created[lt]=...` as SQL conditions."""
    if value is None:
        return []
    if isinstance(value, int):
        return [column == value]
    operators = {"gt": column.__gt__, "gte": column.__ge__, "lt": column.__lt__, "lte": column.__le__}
    return [operators[op](bound) for op, bound in value.items()]


def list_endpoint(
    store: Store,
    params: dict[str, Any],
    object_type: str,
    url: str,
    *,
    customer: str | None = None,
    where: Iterable[ColumnElement[bool]] = (),
    predicate: Callable[[Document], bool] | None = None,
) -> Document:
    limit = page_limit(params)
    cursors: dict[str, SandboxObject | None] = {}
    for name in ("starting_after", "ending_before"):
        cursor_id = params.get(name)
        cursors[name] = None
        if cursor_id:
            cursor = store.get(object_type, cursor_id, include_deleted=True)
            if cursor is None:
                raise resource_missing(store.kinds[object_type].noun, cursor_id, param=name, status=400)
            cursors[name] = cursor
    rows, has_more = store.list_page(
        object_type,
        limit=limit,
        starting_after=cursors["starting_after"],
        ending_before=cursors["ending_before"],
        customer=customer,
        where=[*created_filter(params.get("created")), *where],
        predicate=predicate,
    )
    return list_object(url, [store.present(row) for row in rows], has_more)
