"""Liveness and readiness probes (no authentication)."""

from __future__ import annotations

import logging
import time
from typing import Any

import stripe
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import text

from billing.catalog import missing_prices
from billing.openapi import route_facts
from billing.state import current

log = logging.getLogger("billing.health")

# A readiness probe every few seconds should not cost a Stripe request each time (state.readiness).
STRIPE_CHECK_TTL = 30.0

blp = Blueprint("health", __name__, description="Process and dependency health.")


class HealthSchema(Schema):
    status = fields.String(validate=validate.OneOf(["ok"]))


class EventsBacklogSchema(Schema):
    pending = fields.Integer(
        required=True, metadata={"description": "Stripe events received and not yet applied to the copy."}
    )
    oldest_pending_seconds = fields.Float(
        required=True, metadata={"description": "Age of the oldest of them (0 when none): how stale the copy may be."}
    )
    parked = fields.Integer(
        required=True,
        metadata={
            "description": "Events that kept failing, set aside until an operator replays them (`flask events replay`)."
        },
    )


class ReadinessSchema(Schema):
    status = fields.String(validate=validate.OneOf(["ready", "unavailable"]))
    stripe_mode = fields.String(
        validate=validate.OneOf(["sandbox", "test", "live"]),
        metadata={
            "description": "`sandbox`: the built-in emulator; else the mode of STRIPE_API_KEY (`sk_test_`: test)."
        },
    )
    stripe_endpoint = fields.String(
        metadata={
            "description": "Where Stripe requests go: STRIPE_API_BASE (default `https://api.stripe.com`), or "
            "`in-process` on the built-in emulator."
        }
    )
    database = fields.String(validate=validate.OneOf(["ok", "unavailable"]))
    stripe = fields.String(validate=validate.OneOf(["ok", "unavailable"]))
    events = fields.Nested(EventsBacklogSchema, metadata={"description": "Present when the database answers."})
    catalog = fields.String(
        metadata={"description": "Present when Stripe answers: `ok`, or which prices are missing (run sync-catalog)."}
    )


@blp.route("/healthz")
class Health(MethodView):
    @route_facts("checkHealth", role=None)
    @blp.doc(security=[])  # probes need no token
    @blp.response(200, HealthSchema)
    def get(self) -> dict[str, Any]:
        """The process is up"""
        return {"status": "ok"}


@blp.route("/readyz")
class Ready(MethodView):
    @route_facts("checkReadiness", role=None)
    @blp.doc(security=[])
    @blp.response(200, ReadinessSchema)
    @blp.alt_response(503, schema=ReadinessSchema, description="Not ready: the checks say what is missing.")
    def get(self) -> Any:
        """The database and Stripe answer, and the catalog's prices exist"""
        state = current()
        checks: dict[str, Any] = {
            "stripe_mode": state.config.stripe_mode,
            "stripe_endpoint": state.config.stripe_endpoint,
        }
        try:
            with state.db.read() as session:
                session.execute(text("SELECT 1"))
            checks["database"] = "ok"
            checks["events"] = state.queue.backlog(max_age=0).__dict__
        except Exception as error:  # any failure means "not ready", never a 500
            log.warning("readiness: database unavailable (%s)", type(error).__name__)
            checks["database"] = "unavailable"
        seen = state.readiness
        try:
            if time.monotonic() - seen.checked_at > STRIPE_CHECK_TTL:
                # Reaches Stripe and checks the catalog at once: without it every subscription is a 422.
                seen.missing_prices = missing_prices(state.gateway)
                seen.checked_at = time.monotonic()
            checks["stripe"] = "ok"
        except stripe.StripeError as error:
            seen.checked_at = 0.0
            log.warning("readiness: stripe unavailable (%s)", type(error).__name__)
            checks["stripe"] = "unavailable"
        if checks["stripe"] == "ok":
            missing = seen.missing_prices
            checks["catalog"] = (
                "ok" if not missing else f"missing {len(missing)} prices (run sync-catalog), e.g. {missing[0]}"
            )
        ready = checks["database"] == "ok" and checks["stripe"] == "ok" and not seen.missing_prices
        checks["status"] = "ready" if ready else "unavailable"
        return checks, 200 if ready else 503
