"""Blueprints whose every route needs a bearer token (and honours Idempotency-Key)."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask_smorest import Blueprint

from billing import idempotency
from billing.state import current


def authenticated_blueprint(name: str, import_name: str, **kwargs: Any) -> Blueprint:
    blp = Blueprint(name, import_name, **kwargs)

    @blp.before_request
    def _authenticate() -> Response | None:
        current().verifier.authenticate_request()
        return idempotency.begin()  # a replay (or None to go on)

    return blp
