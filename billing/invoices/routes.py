"""HTTP routes for invoices."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from billing.access import account_access
from billing.blueprints import authenticated_blueprint
from billing.invoices import service
from billing.openapi import route_facts
from billing.state import current
from schemas.invoices import (
    InvoiceListQuerySchema,
    InvoiceListSchema,
    InvoicePreviewRequestSchema,
    InvoicePreviewSchema,
)

blp = authenticated_blueprint(
    "invoices",
    __name__,
    url_prefix="/workspaces/<workspaceId>/billing-accounts/<billingAccountId>/invoices",
    description="Invoice history and previews of upcoming billing changes.",
)


@blp.route("")
class Invoices(MethodView):
    @route_facts("listInvoices", role="viewer")
    @blp.arguments(InvoiceListQuerySchema, location="query")
    @blp.response(200, InvoiceListSchema)
    def get(self, query: dict[str, Any], workspaceId: str, billingAccountId: str) -> Any:
        """List invoices, newest first, with every line"""
        return service.list_invoices(current(), account_access(workspaceId, billingAccountId), query)


@blp.route("/preview")
class InvoicePreview(MethodView):
    @route_facts("previewInvoice", role="viewer", calls_stripe=True)
    @blp.arguments(InvoicePreviewRequestSchema)
    @blp.response(200, InvoicePreviewSchema)
    def post(self, data: dict[str, Any], workspaceId: str, billingAccountId: str) -> Any:
        """Preview the invoice of a new subscription, a change or a cancellation (changes nothing)"""
        return service.preview_invoice(current(), account_access(workspaceId, billingAccountId), data)
