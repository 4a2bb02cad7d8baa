"""POST /webhooks/stripe (authenticated by Stripe's signature, not a bearer token)."""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint

from billing.openapi import route_facts
from billing.state import current
from billing.webhooks import service

blp = Blueprint("webhooks", __name__, url_prefix="/webhooks", description="Events from Stripe.")


@blp.route("/stripe")
class StripeWebhook(MethodView):
    @route_facts("receiveStripeEvent", role=None, calls_stripe=True)
    @blp.doc(
        security=[],
        parameters=[
            {"in": "header", "name": "Stripe-Signature", "required": True, "schema": {"type": "string", "minLength": 1}}
        ],
    )
    @blp.response(200)
    def post(self) -> dict[str, Any]:
        """Receive a Stripe event: signature-checked, stored once per event id, applied shortly after by a worker"""
        state = current()
        event = service.verify_event(
            request.get_data(cache=False),
            request.headers.get("Stripe-Signature"),
            state.config.stripe_webhook_secrets,
        )
        stored = service.receive(state, event)
        return {"received": True, "duplicate": not stored}
