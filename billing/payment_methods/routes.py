"""HTTP routes for payment methods."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from billing.access import account_access
from billing.blueprints import authenticated_blueprint
from billing.idempotency import stripe_key
from billing.openapi import route_facts
from billing.payment_methods import service
from billing.state import current
from schemas.common import MessageSchema
from schemas.payment_methods import PaymentMethodListSchema, SetupIntentSchema

blp = authenticated_blueprint(
    "payment_methods",
    __name__,
    url_prefix="/workspaces/<workspaceId>/billing-accounts/<billingAccountId>/payment-methods",
    description="Customer payment methods for subscriptions.",
)


@blp.route("")
class PaymentMethods(MethodView):
    @route_facts("listPaymentMethods", role="viewer")
    @blp.response(200, PaymentMethodListSchema)
    def get(self, workspaceId: str, billingAccountId: str) -> dict[str, Any]:
        """List payment methods (all types)"""
        return {
            "data": service.list_payment_methods(current(), account_access(workspaceId, billingAccountId)),
            "has_more": False,
        }

    @route_facts("createSetupIntent", role="admin", calls_stripe=True)
    @blp.response(201, SetupIntentSchema)
    def post(self, workspaceId: str, billingAccountId: str) -> Any:
        """Start adding a payment method: a SetupIntent for Stripe.js"""
        return service.create_setup_intent(current(), account_access(workspaceId, billingAccountId), stripe_key())


@blp.route("/<paymentMethodId>")
class PaymentMethodById(MethodView):
    @route_facts("setDefaultPaymentMethod", role="admin", calls_stripe=True)
    @blp.response(200, MessageSchema)
    def put(self, workspaceId: str, billingAccountId: str, paymentMethodId: str) -> Any:
        """Make a payment method the default"""
        service.set_default(current(), account_access(workspaceId, billingAccountId), paymentMethodId, stripe_key())
        return {"message": "Default payment method updated"}

    @route_facts("detachPaymentMethod", role="admin", calls_stripe=True)
    @blp.response(204)
    def delete(self, workspaceId: str, billingAccountId: str, paymentMethodId: str) -> None:
        """Detach a payment method"""
        service.detach(current(), account_access(workspaceId, billingAccountId), paymentMethodId, stripe_key())
