"""Blueprints whose every route needs a bearer token."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from billing.state import current


def authenticated_blueprint(name: str, import_name: str, **kwargs: Any) -> Blueprint:
    blp = Blueprint(name, import_name, **kwargs)

    @blp.before_request
    def _authenticate() -> None:
        current().verifier.authenticate_request()

    return blp
