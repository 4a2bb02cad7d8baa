"""HTTP routes for subscriptions."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from billing.access import workspace_access
from billing.authn import authenticated_blueprint
from billing.subscriptions import service
from schemas.subscriptions import SubscriptionListSchema

blp = authenticated_blueprint(
    "subscriptions",
    __name__,
    url_prefix="/workspaces/<workspaceId>/billing-accounts/<billingAccountId>/subscriptions",
    description="Product subscriptions powered by Stripe.",
)


@blp.route("")
class Subscriptions(MethodView):
    @blp.response(200, SubscriptionListSchema)
    def get(self, workspaceId: str, billingAccountId: str) -> dict[str, Any]:
        """List a billing account's subscriptions, newest first"""
        access = workspace_access(workspaceId)
        return {
            "data": service.list_subscriptions(access.workspace.id, billingAccountId),
            "has_more": False,
        }
