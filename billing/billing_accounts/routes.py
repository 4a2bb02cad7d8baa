"""HTTP routes for billing accounts."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from billing.access import account_access, workspace_access
from billing.billing_accounts import service
from billing.blueprints import authenticated_blueprint
from billing.idempotency import claimed_key, stripe_key
from billing.openapi import route_facts
from billing.state import current
from schemas.billing_accounts import (
    BillingAccountCreateSchema,
    BillingAccountListSchema,
    BillingAccountSchema,
    BillingAccountUpdateSchema,
)

blp = authenticated_blueprint(
    "billing_accounts",
    __name__,
    url_prefix="/workspaces/<workspaceId>/billing-accounts",
    description="Financial accounts linked to Stripe for billing and subscriptions.",
)


@blp.route("")
class BillingAccounts(MethodView):
    @route_facts("listBillingAccounts", role="viewer")
    @blp.response(200, BillingAccountListSchema)
    def get(self, workspaceId: str) -> dict[str, Any]:
        """List billing accounts"""
        return {"data": service.list_billing_accounts(current(), workspace_access(workspaceId)), "has_more": False}

    @route_facts("createBillingAccount", role="admin", calls_stripe=True)
    @blp.arguments(BillingAccountCreateSchema)
    @blp.response(201, BillingAccountSchema)
    def post(self, data: dict[str, Any], workspaceId: str) -> Any:
        """Create a billing account (a Stripe customer)"""
        return service.create_billing_account(current(), workspace_access(workspaceId), data, claimed_key())


@blp.route("/<billingAccountId>")
class BillingAccountById(MethodView):
    @route_facts("retrieveBillingAccount", role="viewer")
    @blp.response(200, BillingAccountSchema)
    def get(self, workspaceId: str, billingAccountId: str) -> Any:
        """Retrieve a billing account"""
        return service.get_billing_account(current(), account_access(workspaceId, billingAccountId))

    @route_facts("updateBillingAccount", role="admin", calls_stripe=True)
    @blp.arguments(BillingAccountUpdateSchema)
    @blp.response(200, BillingAccountSchema)
    def patch(self, data: dict[str, Any], workspaceId: str, billingAccountId: str) -> Any:
        """Update a billing account (mirrored to Stripe)"""
        return service.update_billing_account(
            current(), account_access(workspaceId, billingAccountId), data, stripe_key()
        )

    @route_facts("deleteBillingAccount", role="admin", calls_stripe=True)
    @blp.response(204)
    def delete(self, workspaceId: str, billingAccountId: str) -> None:
        """Delete a billing account and its Stripe customer"""
        service.delete_billing_account(current(), account_access(workspaceId, billingAccountId), stripe_key())
