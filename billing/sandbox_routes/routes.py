"""HTTP routes under /sandbox (sandbox mode only)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from billing.access import account_access
from billing.blueprints import authenticated_blueprint
from billing.idempotency import stripe_key
from billing.openapi import route_facts
from billing.sandbox_routes import service
from billing.state import current
from schemas.common import StrictString
from schemas.payment_methods import PaymentMethodSchema
from stripe_sandbox import TEST_TOKENS, hosted_invoices
from stripe_sandbox.invoice_engine import HOSTED_PATH

blp = authenticated_blueprint(
    "sandbox",
    __name__,
    url_prefix="/sandbox",
    description="Sandbox-only tools (absent when a real Stripe key is configured).",
)
ACCOUNT = "/workspaces/<workspaceId>/billing-accounts/<billingAccountId>"


CLOCK_STATUSES = ("advancing", "ready", "internal_failure")


class ClockSchema(Schema):
    now = fields.Integer(metadata={"description": "Sandbox time, unix seconds."})
    status = fields.String(
        validate=validate.OneOf(CLOCK_STATUSES),
        metadata={
            "description": (
                "As Stripe's test clocks: `advancing` while what came due is being run, its webhooks delivered "
                "and applied; `ready` once it is all readable through the API; `internal_failure` if running "
                "it failed (a new advance retries what is left)."
            )
        },
    )


class AdvancedClockSchema(ClockSchema):
    advanced_seconds = fields.Integer()


class AdvanceSchema(Schema):
    # Strict: 1.5 is not truncated to 1, and "1" is not a number.
    seconds = fields.Integer(strict=True, validate=validate.Range(min=0, max=400 * 86400))
    minutes = fields.Integer(strict=True, validate=validate.Range(min=0, max=400 * 1440))
    hours = fields.Integer(strict=True, validate=validate.Range(min=0, max=400 * 24))
    days = fields.Integer(strict=True, validate=validate.Range(min=0, max=400))


class TestPaymentMethodSchema(Schema):
    payment_method = fields.String(required=True, validate=validate.OneOf(TEST_TOKENS))


class AuthenticateSchema(Schema):
    client_secret = StrictString(required=True, validate=validate.Length(min=1, max=255))
    outcome = fields.String(required=True, validate=validate.OneOf(("succeed", "fail")))


class AuthenticationResultSchema(Schema):
    status = fields.String(metadata={"description": "The PaymentIntent's or SetupIntent's resulting status."})


class SetupIntentResultSchema(Schema):
    id = fields.String()
    status = fields.String()
    payment_method = fields.String(allow_none=True)


@blp.route("/clock")
class Clock(MethodView):
    @route_facts("retrieveSandboxClock", role=None)
    @blp.response(200, ClockSchema)
    def get(self) -> Any:
        """The sandbox's clock"""
        return service.clock_now(current())


@blp.route("/clock/advance")
class ClockAdvance(MethodView):
    @route_facts("advanceSandboxClock", role=None)
    @blp.arguments(AdvanceSchema)
    @blp.response(202, AdvancedClockSchema)
    def post(self, data: dict[str, Any]) -> Any:
        """Advance sandbox time; what comes due runs in the background (the clock is shared by the whole sandbox)

        Answers at once with `status: advancing`; poll GET /sandbox/clock until `status` is `ready`.
        While an earlier advance still runs, 409 `clock_advancing`.
        """
        return service.advance_clock(current(), data)


@blp.route(ACCOUNT + "/payment-methods")
class TestPaymentMethods(MethodView):
    @route_facts("attachTestPaymentMethod", role="admin", calls_stripe=True, charges=True)
    @blp.arguments(TestPaymentMethodSchema)
    @blp.response(201, PaymentMethodSchema)
    def post(self, data: dict[str, Any], workspaceId: str, billingAccountId: str) -> Any:
        """Attach one of Stripe's test payment methods (pm_card_visa, pm_card_chargeDeclined, ...)"""
        return service.attach_test_payment_method(
            current(), account_access(workspaceId, billingAccountId), data["payment_method"], stripe_key()
        )


@blp.route(ACCOUNT + "/setup-intents/<setupIntentId>/confirm")
class ConfirmSetupIntent(MethodView):
    @route_facts("confirmTestSetupIntent", role="admin", calls_stripe=True, charges=True)
    @blp.arguments(TestPaymentMethodSchema)
    @blp.response(200, SetupIntentResultSchema)
    def post(self, data: dict[str, Any], workspaceId: str, billingAccountId: str, setupIntentId: str) -> Any:
        """Confirm a SetupIntent with a test payment method, as Stripe.js would"""
        return service.confirm_setup_intent(
            current(),
            account_access(workspaceId, billingAccountId),
            setupIntentId,
            data["payment_method"],
            stripe_key(),
        )


@blp.route(ACCOUNT + "/authenticate")
class Authenticate(MethodView):
    @route_facts("authenticateTestPayment", role="admin", calls_stripe=True)
    @blp.arguments(AuthenticateSchema)
    @blp.response(200, AuthenticationResultSchema)
    def post(self, data: dict[str, Any], workspaceId: str, billingAccountId: str) -> Any:
        """Complete (or fail) a pending 3-D Secure authentication, as Stripe.js would"""
        return service.authenticate(
            current(),
            account_access(workspaceId, billingAccountId),
            data["client_secret"],
            data["outcome"] == "succeed",
        )


# What an invoice's hosted_invoice_url and invoice_pdf serve: public, as Stripe's are (the URL's
# token is the key), HTML and PDF rather than the API's JSON.
hosted_invoices_blp = Blueprint("sandbox_hosted_invoices", __name__)
HOSTED_RULE = HOSTED_PATH.replace("{", "<").replace("}", ">")


@hosted_invoices_blp.get(HOSTED_RULE)
def hosted_invoice_page(invoice: str, token: str) -> Response:
    page = hosted_invoices.html(service.hosted_invoice(current(), invoice, token))
    # Nothing but the page itself and its inline style.
    return Response(
        page,
        mimetype="text/html",
        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"},
    )


@hosted_invoices_blp.get(HOSTED_RULE + "/pdf")
def hosted_invoice_pdf(invoice: str, token: str) -> Response:
    data = service.hosted_invoice(current(), invoice, token)
    return Response(
        hosted_invoices.pdf(data),
        mimetype="application/pdf",
        headers={"Content-Disposition": f'inline; filename="Invoice-{data["number"]}.pdf"'},
    )
