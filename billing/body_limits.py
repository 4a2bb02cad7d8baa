"""How large a request's body may be: the app's MAX_CONTENT_LENGTH (1 MiB),
or more on the routes that say so (an organization's create and PATCH, which
may carry a 2 MiB picture as base64). One answer for both readers of a body:
the app (each request's `max_content_length`, set before any hook reads the
body) and the web worker (billing/http_worker.py, which reads a body whole
before the app sees it, and hands over one announced past the limit at once
for its 413)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import Flask, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, MapAdapter


class BodyLimits:
    def __init__(self, app: Flask, larger: Mapping[tuple[str, str], int]) -> None:
        """`larger`: (endpoint, method) -> bytes, for the routes that take more than the app's limit."""
        self.app = app
        self.larger = dict(larger)
        self._methods = frozenset(method for _, method in self.larger)
        self._larger_routes: MapAdapter | None = None

    @property
    def default(self) -> int:
        return int(self.app.config["MAX_CONTENT_LENGTH"])

    def apply(self, endpoint: str | None, _values: dict[str, Any] | None) -> None:
        """A url_value_preprocessor of the app: it runs before every before_request hook."""
        larger = self.larger.get((endpoint or "", request.method))
        if larger is not None:
            request.max_content_length = larger

    def for_target(self, method: str, target: str) -> int:
        """The limit for a request line's method and target (as the worker reads it)."""
        if method not in self._methods:
            return self.default  # every GET: no route to look up
        path = unquote(urlsplit(target).path or "/", encoding="latin-1")  # the WSGI PATH_INFO
        try:
            # First against those routes alone (every POST asks): a path none of them takes is
            # no path of theirs in the whole map either.
            self._larger().match(path, method=method)
        except HTTPException:
            return self.default
        try:
            endpoint, _ = self.app.url_map.bind("localhost").match(path, method=method)
        except HTTPException:  # no such route, or a redirect: the app's own limit
            return self.default
        return self.larger.get((str(endpoint), method), self.default)

    def _larger(self) -> MapAdapter:
        """A map of the routes that take more, with the app's own settings (made at first use:
        the routes are all registered by then)."""
        if self._larger_routes is None:
            app_map = self.app.url_map
            rules = [
                rule.empty()
                for rule in app_map.iter_rules()
                if any((rule.endpoint, method) in self.larger for method in rule.methods or ())
            ]
            routes = Map(
                rules,
                merge_slashes=app_map.merge_slashes,
                strict_slashes=app_map.strict_slashes,
                converters=app_map.converters,
            )
            self._larger_routes = routes.bind("localhost")
        return self._larger_routes
