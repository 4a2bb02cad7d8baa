"""HTTP routes for a billing account's tax IDs."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from billing.access import account_access
from billing.blueprints import authenticated_blueprint
from billing.idempotency import stripe_key
from billing.openapi import route_facts
from billing.state import current
from billing.tax_ids import service
from schemas.tax_ids import TaxIdCreateSchema, TaxIdListSchema, TaxIdSchema, TaxStatusSchema

blp = authenticated_blueprint(
    "tax_ids",
    __name__,
    url_prefix="/workspaces/<workspaceId>/billing-accounts/<billingAccountId>/tax-ids",
    description="A billing account's tax IDs (VAT, GST, ...), verified by Stripe.",
)


@blp.route("")
class TaxIds(MethodView):
    @route_facts("listTaxIds", role="viewer")
    @blp.response(200, TaxIdListSchema)
    def get(self, workspaceId: str, billingAccountId: str) -> dict[str, Any]:
        """List tax IDs"""
        return {
            "data": service.list_tax_ids(current(), account_access(workspaceId, billingAccountId)),
            "has_more": False,
        }

    @route_facts("createTaxId", role="admin", calls_stripe=True)
    @blp.arguments(TaxIdCreateSchema)
    @blp.response(201, TaxIdSchema)
    def post(self, data: dict[str, Any], workspaceId: str, billingAccountId: str) -> Any:
        """Add a tax ID (at most 5; Stripe verifies it)"""
        return service.create_tax_id(current(), account_access(workspaceId, billingAccountId), data, stripe_key())


@blp.route("/<taxId>")
class TaxIdById(MethodView):
    @route_facts("deleteTaxId", role="admin", calls_stripe=True)
    @blp.response(204)
    def delete(self, workspaceId: str, billingAccountId: str, taxId: str) -> None:
        """Delete a tax ID"""
        service.delete_tax_id(current(), account_access(workspaceId, billingAccountId), taxId, stripe_key())


status_blp = authenticated_blueprint(
    "tax_status",
    __name__,
    url_prefix="/workspaces/<workspaceId>/billing-accounts/<billingAccountId>/tax-status",
    description="A billing account's tax status: how Stripe Tax treats it (reverse charge included).",
)


@status_blp.route("")
class TaxStatus(MethodView):
    @route_facts("retrieveTaxStatus", role="viewer")
    @status_blp.response(200, TaxStatusSchema)
    def get(self, workspaceId: str, billingAccountId: str) -> dict[str, Any]:
        """Retrieve the account's tax status"""
        return service.tax_status(current(), account_access(workspaceId, billingAccountId))
