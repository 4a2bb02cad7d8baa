"""Stripe's `expand[]`: replace id strings along dotted paths by the objects.

`data.items.data.price.product` walks dicts by key and lists element-wise, so
one walker serves single objects and list responses alike. Fields an object
only carries when asked for (customer.subscriptions) come from its kind's
`includable` hooks.

As on Stripe (https://docs.stripe.com/api/expanding_objects): only fields the
API reference labels `expandable` expand (the pinned `stripe` library declares
them `ExpandableField[...]`, which is what is checked here), and "expansions
have a maximum depth of four levels" (a list's leading `data.` not counted).
"""

from __future__ import annotations

import typing
from typing import Any

from stripe._object_classes import get_object_class
from stripe._stripe_object import StripeObject

from stripe_sandbox.errors import SandboxError
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.store import Document, Store

MAX_DEPTH = 4
_LISTS = ("list", "search_result")


def _cannot_expand(path: str) -> SandboxError:
    return SandboxError(400, f"This property cannot be expanded ({path}).", param="expand")


def _too_deep(path: str) -> SandboxError:
    return SandboxError(
        400, f"You cannot expand more than {MAX_DEPTH} levels of a property. Property: {path}", param="expand"
    )


def _resolve(store: Store, value: str, path: str) -> Document:
    row = store.session.get(SandboxObject, value)
    if row is None:
        raise _cannot_expand(path)
    return store.present(row)


def _class_of(node: Document, parent: type | None) -> type | None:
    """The library's class describing `node`: its object type's, else the parent's nested hash class."""
    if "object" in node:
        cls = get_object_class("V1", str(node["object"]))
        return cls if cls is not StripeObject else None
    return parent


def _field(cls: type | None, key: str) -> tuple[bool, type | None]:
    """(expandable, the nested hash class) of `key` as the library declares it on `cls`."""
    if cls is None:
        return False, None
    hint = getattr(cls, "__annotations__", {}).get(key)
    if hint is None:
        for base in getattr(cls, "__mro__", ())[1:]:
            hint = getattr(base, "__annotations__", {}).get(key)
            if hint is not None:
                break
    if hint is None:
        return False, None
    args = _flatten(hint)
    # ExpandableField[X] is Union[str, X]: a string or the object (a forward reference or the class).
    expandable = str in args and any(
        isinstance(a, typing.ForwardRef) or (isinstance(a, type) and issubclass(a, StripeObject)) for a in args
    )
    nested = next((a for a in args if isinstance(a, type) and issubclass(a, StripeObject)), None)
    return expandable, nested


def _flatten(hint: Any) -> list[Any]:
    args = typing.get_args(hint)
    if not args:
        return [hint]
    return [leaf for arg in args for leaf in _flatten(arg)]


def _walk(store: Store, node: Any, segments: list[str], path: str, parent: type | None) -> Any:
    if isinstance(node, list):
        return [_walk(store, item, segments, path, parent) for item in node]
    if not segments or node is None:
        return node
    if not isinstance(node, dict):
        raise _cannot_expand(path)
    key, rest = segments[0], segments[1:]
    if node.get("object") in _LISTS:
        if key != "data":
            raise _cannot_expand(path)
        node["data"] = _walk(store, node["data"], rest, path, None)
        return node
    cls = _class_of(node, parent)
    kind = store.kinds.get(node.get("object", ""))
    includable = kind is not None and key in kind.includable
    if key not in node:
        if not includable:
            raise _cannot_expand(path)
        assert kind is not None
        node[key] = kind.includable[key](store, node)
    expandable, nested = _field(cls, key)
    value = node[key]
    if isinstance(value, str) or (isinstance(value, list) and any(isinstance(item, str) for item in value)):
        if not (expandable or includable):
            raise _cannot_expand(path)
        if isinstance(value, str):
            value = _resolve(store, value, path)
        else:
            value = [_resolve(store, item, path) if isinstance(item, str) else item for item in value]
    node[key] = _walk(store, value, rest, path, nested)
    return node


def _depth(body: Document, path: str) -> int:
    segments = path.split(".")
    if body.get("object") in _LISTS and segments[0] == "data":
        segments = segments[1:]
    return len(segments)


def expand(store: Store, body: Document, paths: list[str]) -> Document:
    for path in paths:
        if _depth(body, path) > MAX_DEPTH:
            raise _too_deep(path)
    # Shorter paths first so `customer` is in place before `customer.x` walks it.
    for path in sorted(set(paths), key=lambda p: p.count(".")):
        _walk(store, body, path.split("."), path, None)
    return body
