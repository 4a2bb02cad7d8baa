"""Stripe-shaped API errors.

Handlers raise `SandboxError`; the HTTP client turns it into the JSON body and
status Stripe would send, so the `stripe` library raises the same exception
class (InvalidRequestError, IdempotencyError, ...) it would against Stripe.
"""

from __future__ import annotations

from typing import Any


class SandboxError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}
        # Further fields of Stripe's error hash (decline_code, payment_method, ...).
        self.extra = extra or {}
        # Commit what the request did before failing (a declined invoice payment
        # stays recorded as an attempt); by default a failed request changes nothing.
        self.keep_changes = False

    def hash(self) -> dict[str, Any]:
        """Stripe's error hash, as a PaymentIntent's last_payment_error also shows it."""
        error: dict[str, Any] = {}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = "https://stripe.com/docs/error-codes/" + self.code.replace("_", "-")
        error.update(self.extra)
        error["message"] = self.message
        if self.param is not None:
            error["param"] = self.param
        error["type"] = self.type
        return error

    def body(self, request_id: str, now: int) -> dict[str, Any]:
        error = self.hash()
        error["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}?t={now}"
        return {"error": dict(sorted(error.items()))}


def resource_missing(noun: str, object_id: str, *, param: str = "id", status: int = 404) -> SandboxError:
    # Stripe answers 404 when the object in the URL is missing and 400 when an
    # id passed as a parameter (customer, items[0][price], ...) is.
    return SandboxError(status, f"No such {noun}: '{object_id}'", code="resource_missing", param=param)


def parameter_unknown(param: str) -> SandboxError:
    return SandboxError(400, f"Received unknown parameter: {param}", code="parameter_unknown", param=param)


def parameter_missing(param: str) -> SandboxError:
    return SandboxError(400, f"Missing required param: {param}.", code="parameter_missing", param=param)


def parameters_exclusive(*params: str) -> SandboxError:
    return SandboxError(
        400,
        "You may only specify one of these parameters: " + ", ".join(params) + ".",
        code="parameters_exclusive",
        param=params[0],
    )


def not_supported(param: str) -> SandboxError:
    # Known to Stripe but not emulated: failing loudly beats pretending.
    return SandboxError(400, f"The Stripe sandbox does not support `{param}` yet.", param=param)


def unrecognized_url(method: str, path: str) -> SandboxError:
    return SandboxError(
        404,
        f"Unrecognized request URL ({method.upper()}: {path}). Please see https://stripe.com/docs "
        "or we can help at https://support.stripe.com/.",
    )


def idempotency_error(message: str) -> SandboxError:
    return SandboxError(400, message, type="idempotency_error")


def card_declined(
    decline_code: str,
    payment_method: dict[str, Any] | None,
    *,
    code: str = "card_declined",
    message: str = "Your card was declined.",
    param: str | None = None,
    extra: dict[str, Any] | None = None,
) -> SandboxError:
    """A charge or card check refused by the card's issuer: HTTP 402, which the library raises as CardError."""
    fields: dict[str, Any] = {"decline_code": decline_code, **(extra or {})}
    if payment_method is not None:
        fields["payment_method"] = payment_method
    return SandboxError(402, message, type="card_error", code=code, param=param, extra=fields)


def requires_action(payment_intent: dict[str, Any] | None = None) -> SandboxError:
    """An invoice payment that needs the customer's authentication (3-D Secure), paid off-session."""
    return SandboxError(
        402,
        "This payment requires additional user action before it can be completed successfully. Payment can "
        "be completed using the PaymentIntent associated with the invoice. For more details see: "
        "https://stripe.com/docs/billing/subscriptions/overview#requires-action",
        type="card_error",
        code="invoice_payment_intent_requires_action",
        extra={"payment_intent": payment_intent} if payment_intent is not None else None,
    )


def no_payment_method() -> SandboxError:
    return SandboxError(
        400,
        "This customer has no attached payment source or default payment method. Please "
        "consider adding a default payment method. For more information, visit "
        "https://stripe.com/docs/billing/subscriptions/payment-methods-setting#payment-method-priority.",
    )
