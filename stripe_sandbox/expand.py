"""Stripe's `expand[]`: replace id strings along dotted paths by the objects.

`data.items.data.price.product` walks dicts by key and lists element-wise, so
one walker serves single objects and list responses alike. Fields an object
only carries when asked for (customer.subscriptions) come from its kind's
`includable` hooks.
"""

from __future__ import annotations

from typing import Any

from stripe_sandbox.errors import SandboxError
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.store import Document, Store


def _cannot_expand(path: str) -> SandboxError:
    return SandboxError(400, f"This property cannot be expanded ({path}).")


def _resolve(store: Store, value: str, path: str) -> Document:
    row = store.session.get(SandboxObject, value)
    if row is None:
        raise _cannot_expand(path)
    return store.present(row)


def _walk(store: Store, node: Any, segments: list[str], path: str) -> Any:
    if isinstance(node, list):
        return [_walk(store, item, segments, path) for item in node]
    if not segments or node is None:
        return node
    if not isinstance(node, dict):
        raise _cannot_expand(path)
    key, rest = segments[0], segments[1:]
    if key not in node:
        kind = store.kinds.get(node.get("object", ""))
        if kind is None or key not in kind.includable:
            raise _cannot_expand(path)
        node[key] = kind.includable[key](store, node)
    value = node[key]
    if isinstance(value, str):
        value = _resolve(store, value, path)
    elif isinstance(value, list):
        value = [_resolve(store, item, path) if isinstance(item, str) else item for item in value]
    node[key] = _walk(store, value, rest, path)
    return node


def expand(store: Store, body: Document, paths: list[str]) -> Document:
    # Shorter paths first so `customer` is in place before `customer.x` walks it.
    for path in sorted(set(paths), key=lambda p: p.count(".")):
        _walk(store, body, path.split("."), path)
    return body
