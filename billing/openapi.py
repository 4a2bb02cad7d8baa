"""What the OpenAPI document says beyond the schemas: the Idempotency-Key
header on every write, and a stable operationId for every operation (generated
clients name their methods after it)."""

from __future__ import annotations

from typing import Any

from apispec import BasePlugin
from flask import Blueprint
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

# Swagger UI's files, from the pinned swagger-ui-bundle package (nothing loaded from another host).
docs_assets = Blueprint("docs_assets", __name__, static_folder=str(swagger_ui_path),
                        static_url_path="/docs/assets")

W = "/workspaces/{workspaceId}"
A = W + "/billing-accounts/{billingAccountId}"

OPERATION_IDS: dict[tuple[str, str], str] = {
    ("get", "/healthz"): "checkHealth",
    ("get", "/readyz"): "checkReadiness",
    ("get", "/workspaces"): "listWorkspaces",
    ("post", "/workspaces"): "createWorkspace",
    ("get", W): "retrieveWorkspace",
    ("patch", W): "updateWorkspace",
    ("delete", W): "archiveWorkspace",
    ("get", W + "/members"): "listMembers",
    ("post", W + "/members"): "addMember",
    ("patch", W + "/members/{userId}"): "updateMember",
    ("delete", W + "/members/{userId}"): "removeMember",
    ("get", W + "/billing-accounts"): "listBillingAccounts",
    ("post", W + "/billing-accounts"): "createBillingAccount",
    ("get", A): "retrieveBillingAccount",
    ("patch", A): "updateBillingAccount",
    ("delete", A): "deleteBillingAccount",
    ("get", A + "/subscriptions"): "listSubscriptions",
    ("post", A + "/subscriptions"): "createSubscription",
    ("get", A + "/subscriptions/{subscriptionId}"): "retrieveSubscription",
    ("patch", A + "/subscriptions/{subscriptionId}"): "updateSubscription",
    ("delete", A + "/subscriptions/{subscriptionId}"): "cancelSubscription",
    ("get", A + "/trial-eligibility"): "retrieveTrialEligibility",
    ("get", A + "/payment-methods"): "listPaymentMethods",
    ("post", A + "/payment-methods"): "createSetupIntent",
    ("put", A + "/payment-methods/{paymentMethodId}"): "setDefaultPaymentMethod",
    ("delete", A + "/payment-methods/{paymentMethodId}"): "detachPaymentMethod",
    ("get", A + "/invoices"): "listInvoices",
    ("post", A + "/invoices/preview"): "previewInvoice",
    ("post", "/webhooks/stripe"): "receiveStripeEvent",
    ("get", "/sandbox/clock"): "retrieveSandboxClock",
    ("post", "/sandbox/clock/advance"): "advanceSandboxClock",
    ("post", "/sandbox" + A + "/payment-methods"): "attachTestPaymentMethod",
    ("post", "/sandbox" + A + "/setup-intents/{setupIntentId}/confirm"): "confirmTestSetupIntent",
    ("post", "/sandbox" + A + "/authenticate"): "authenticateTestPayment",
}


class IdempotencyKeyDocs(BasePlugin):
    """Documents the optional Idempotency-Key header on every write of the API."""

    PARAMETER = {
        "in": "header", "name": "Idempotency-Key", "required": False,
        "description": "Retry safely: the same key with the same request within 24 h replays the first "
                       "response (Idempotent-Replayed: true).",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    }

    def operation_helper(self, path: str | None = None, operations: dict[str, Any] | None = None,
                         **kwargs: Any) -> None:
        if not operations or (path or "").startswith("/webhooks"):
            return
        for method in ("post", "put", "patch", "delete"):
            if method in operations:
                operations[method].setdefault("parameters", []).append(dict(self.PARAMETER))




class OperationIds(BasePlugin):
    """Names every operation from OPERATION_IDS (a route without one has none,
    and a test says so)."""

    def operation_helper(self, path: str | None = None, operations: dict[str, Any] | None = None,
                         **kwargs: Any) -> None:
        for method, operation in (operations or {}).items():
            name = OPERATION_IDS.get((method, path or ""))
            if name:
                operation["operationId"] = name
