"""Decode the form encoding the `stripe` library sends.

`stripe._encode._api_encode` flattens nested params into bracketed keys:
`metadata[workspace_id]=x`, `items[0][price]=p`, `expand[0]=a`; booleans as
`true`/`false`, `None` values are dropped, an empty dict or list sends nothing.
GET and DELETE carry the same encoding in the query string, POST in the body.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

_SEGMENT = re.compile(r"\[([^\[\]]*)\]")


def _split_key(key: str) -> list[str]:
    head, bracket, _ = key.partition("[")
    if not bracket:
        return [key]
    rest = key[len(head) :]
    segments = _SEGMENT.findall(rest)
    # Anything not made of whole `[...]` groups is kept as a literal name, so it
    # surfaces as an unknown parameter instead of being silently reshaped.
    if "".join(f"[{s}]" for s in segments) != rest:
        return [key]
    return [head, *segments]


def _finish(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    done = {k: _finish(v) for k, v in node.items()}
    # Only a dense 0..n-1 run of indexes becomes a list; anything else (e.g.
    # `metadata[7]=x`) stays a dict and the schema decides what it means.
    if done and all(k.isdigit() for k in done):
        indexes = sorted(int(k) for k in done)
        if indexes == list(range(len(done))) and all(str(i) in done for i in indexes):
            return [done[str(i)] for i in indexes]
    return done


def decode(encoded: str) -> dict[str, Any]:
    """`a[b][0]=x&c[]=y` -> {"a": {"b": ["x"]}, "c": ["y"]}; the last value wins."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(encoded, keep_blank_values=True):
        segments = _split_key(key)
        node = root
        for depth, segment in enumerate(segments):
            if segment == "" and depth > 0:
                segment = str(len(node))  # `expand[]=a` appends
            if depth == len(segments) - 1:
                node[segment] = value
                break
            child = node.get(segment)
            if not isinstance(child, dict):
                child = {}
                node[segment] = child
            node = child
    return {key: _finish(value) for key, value in root.items()}
