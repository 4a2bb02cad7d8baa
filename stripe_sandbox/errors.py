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

    def body(self, request_id: str, now: int) -> dict[str, Any]:
        error: dict[str, Any] = {}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = "https://stripe.com/docs/error-codes/" + self.code.replace("_", "-")
        error.update(self.extra)
        error["message"] = self.message
        if self.param is not None:
            error["param"] = self.param
        error["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}?t={now}"
        error["type"] = self.type
        return {"error": dict(sorted(error.items()))}


def invalid_request(message: str, *, param: str | None = None, code: str | None = None,
                    status: int = 400) -> SandboxError:
    return SandboxError(status, message, param=param, code=code)


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


def card_declined(decline_code: str, payment_method: dict[str, Any] | None) -> SandboxError:
    """A charge declined by the card's issuer: HTTP 402, which the library raises as CardError."""
    extra: dict[str, Any] = {"decline_code": decline_code}
    if payment_method is not None:
        extra["payment_method"] = payment_method
    return SandboxError(402, "Your card was declined.", type="card_error", code="card_declined", extra=extra)


def no_payment_method() -> SandboxError:
    return SandboxError(
        400, "This customer has no attached payment source or default payment method. Please "
        "consider adding a default payment method. For more information, visit "
        "https://stripe.com/docs/billing/subscriptions/payment-methods-setting#payment-method-priority.")
