"""Blueprints of the API proper: every route needs a bearer token and honours
Idempotency-Key. The two are separate hooks, run in this order."""

from __future__ import annotations

from typing import Any

from flask import request
from flask_smorest import Blueprint

from billing import idempotency
from billing.state import current


def _authenticate() -> None:
    if request.method == "OPTIONS":
        return  # a CORS preflight carries no token by design (flask-cors answers it)
    current().verifier.authenticate_request()


def authenticated_blueprint(name: str, import_name: str, **kwargs: Any) -> Blueprint:
    blp = Blueprint(name, import_name, **kwargs)
    blp.before_request(_authenticate)
    blp.before_request(idempotency.begin)  # answers a replay, or lets the request run
    return blp
