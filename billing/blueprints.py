"""Blueprints of the API proper: every route needs a bearer token and honours
Idempotency-Key. The two are separate hooks, run in this order. A body the
document marks required must be sent."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import request
from flask_smorest import Blueprint

from billing import idempotency
from billing.errors import validation_error
from billing.state import current


class ApiBlueprint(Blueprint):  # type: ignore[misc]
    """flask-smorest's Blueprint, except that a JSON body it documents as required
    (the default) is 422 when none is sent: webargs reads a missing body as `{}`,
    which made a PATCH without a body a 200 that changed nothing."""

    def arguments(
        self, schema: Any, *, location: str = "json", required: bool = True, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        if isinstance(schema, type):
            # webargs makes an instance of a class on every request (its fields bound anew): one will do.
            schema = schema()
        parse: Callable[[Callable[..., Any]], Callable[..., Any]] = super().arguments(
            schema, location=location, required=required, **kwargs
        )
        if location != "json" or not required:
            return parse

        def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
            parsed = parse(view)

            @functools.wraps(parsed)  # keeps flask-smorest's `_apidoc`: the document is unchanged
            def needs_body(*args: Any, **view_kwargs: Any) -> Any:
                if not request.get_data(cache=True):
                    raise validation_error({"_schema": ["Send a JSON body."]}, "The request needs a JSON body.")
                return parsed(*args, **view_kwargs)

            return needs_body

        return decorator


def _authenticate() -> None:
    if request.method == "OPTIONS":
        return  # a CORS preflight carries no token by design (flask-cors answers it)
    current().verifier.authenticate_request()


def authenticated_blueprint(name: str, import_name: str, **kwargs: Any) -> Blueprint:
    blp = ApiBlueprint(name, import_name, **kwargs)
    blp.before_request(_authenticate)
    blp.before_request(idempotency.begin)  # answers a replay, or lets the request run
    return blp
