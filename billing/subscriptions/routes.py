"""HTTP routes for subscriptions."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from billing.access import account_access
from billing.blueprints import authenticated_blueprint
from billing.idempotency import stripe_key
from billing.openapi import route_facts
from billing.state import current
from billing.subscriptions import service
from schemas.subscriptions import (
    SubscriptionCreateSchema,
    SubscriptionListSchema,
    SubscriptionSchema,
    SubscriptionUpdateSchema,
    TrialEligibilitySchema,
)

blp = authenticated_blueprint(
    "subscriptions",
    __name__,
    url_prefix="/workspaces/<workspaceId>/billing-accounts/<billingAccountId>",
    description="Product subscriptions powered by Stripe.",
)


@blp.route("/subscriptions")
class Subscriptions(MethodView):
    @route_facts("listSubscriptions", role="viewer")
    @blp.response(200, SubscriptionListSchema)
    def get(self, workspaceId: str, billingAccountId: str) -> dict[str, Any]:
        """List a billing account's subscriptions, newest first"""
        return {
            "data": service.list_subscriptions(current(), account_access(workspaceId, billingAccountId)),
            "has_more": False,
        }

    @route_facts("createSubscription", role="admin", calls_stripe=True, charges=True)
    @blp.arguments(SubscriptionCreateSchema)
    @blp.response(201, SubscriptionSchema)
    def post(self, data: dict[str, Any], workspaceId: str, billingAccountId: str) -> Any:
        """Create a subscription (a 14-day trial for a workspace's first one)"""
        return service.create_subscription(current(), account_access(workspaceId, billingAccountId), data, stripe_key())


@blp.route("/subscriptions/<subscriptionId>")
class SubscriptionById(MethodView):
    @route_facts("retrieveSubscription", role="viewer")
    @blp.response(200, SubscriptionSchema)
    def get(self, workspaceId: str, billingAccountId: str, subscriptionId: str) -> Any:
        """Retrieve a subscription"""
        return service.get_subscription(current(), account_access(workspaceId, billingAccountId), subscriptionId)

    @route_facts("updateSubscription", role="admin", calls_stripe=True, charges=True)
    @blp.arguments(SubscriptionUpdateSchema)
    @blp.response(200, SubscriptionSchema)
    def patch(self, data: dict[str, Any], workspaceId: str, billingAccountId: str, subscriptionId: str) -> Any:
        """Change a subscription: one operation per call"""
        return service.update_subscription(
            current(), account_access(workspaceId, billingAccountId), subscriptionId, data, stripe_key()
        )

    @route_facts("cancelSubscription", role="admin", calls_stripe=True)
    @blp.response(200, SubscriptionSchema)
    def delete(self, workspaceId: str, billingAccountId: str, subscriptionId: str) -> Any:
        """Cancel a subscription at the end of its current period"""
        return service.cancel_subscription(
            current(), account_access(workspaceId, billingAccountId), subscriptionId, stripe_key()
        )


@blp.route("/trial-eligibility")
class TrialEligibility(MethodView):
    @route_facts("retrieveTrialEligibility", role="viewer")
    @blp.response(200, TrialEligibilitySchema)
    def get(self, workspaceId: str, billingAccountId: str) -> Any:
        """Whether a new subscription would start with a trial, and what it needs"""
        return service.trial_eligibility(current(), account_access(workspaceId, billingAccountId))
