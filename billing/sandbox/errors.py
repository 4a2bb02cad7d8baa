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
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self, request_id: str, now: int) -> dict[str, Any]:
        error: dict[str, Any] = {}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = "https://stripe.com/docs/error-codes/" + self.code.replace("_", "-")
        error["message"] = self.message
        if self.param is not None:
            error["param"] = self.param
        error["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}?t={now}"
        error["type"] = self.type
        return {"error": error}


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
