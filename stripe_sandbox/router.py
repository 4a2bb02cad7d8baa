"""Routes of the emulated API and the object kinds they serve.

Each resource module (customers, prices, ...) exposes `register(router)`,
adding its routes and its `ObjectKind`; `stripe_sandbox.api` lists the
modules. A handler gets a `Request` with validated params and returns the
response document; errors are raised as `SandboxError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from stripe_sandbox.store import Document, ObjectKind, Store


@dataclass
class Request:
    method: str
    path: str
    path_params: dict[str, str]
    params: dict[str, Any]
    store: Store

    @property
    def now(self) -> int:
        return self.store.now


Handler = Callable[[Request], Document]


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    pattern: re.Pattern[str]
    handler: Handler
    # The stripe library's TypedDict for this endpoint's parameters.
    params: type | None

    @property
    def mutates(self) -> bool:
        return self.method in ("post", "delete")


class Router:
    def __init__(self) -> None:
        self._routes: list[Route] = []
        self.kinds: dict[str, ObjectKind] = {}

    def add(self, method: str, template: str, handler: Handler, params: type | None = None) -> None:
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        route = Route(method.lower(), template, re.compile(regex + r"\Z"), handler, params)
        self._routes.append(route)
        # Literal paths (/v1/customers/search) win over templated ones (/v1/customers/{customer}).
        self._routes.sort(key=lambda r: r.template.count("{"))

    def add_kind(self, kind: ObjectKind) -> None:
        self.kinds[kind.object_type] = kind

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self._routes:
            if route.method != method:
                continue
            found = route.pattern.match(path)
            if found is not None:
                return route, {k: unquote_plus(v) for k, v in found.groupdict().items()}
        return None
