"""The one error envelope, and the one place where exceptions become responses.

Every error leaves as
`{"type", "code", "message", ["errors"], "request_id", "doc_url"}`; Stripe's
errors are mapped here and nowhere else.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import stripe
from flask import Flask, Response, current_app, g, jsonify
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from billing.config import DEFAULT_ERRORS_DOC_URL

log = logging.getLogger("billing.errors")

TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "payment_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    414: "invalid_request_error",
    415: "invalid_request_error",
    417: "invalid_request_error",
    422: "unprocessable_entity",
    429: "rate_limit_error",
    431: "invalid_request_error",
}

# Codes for errors raised by Flask/werkzeug, or answered by the HTTP server
# (billing.http_worker), rather than by our own rules.
_HTTP_CODES = {
    400: ("bad_request", "The request could not be understood."),
    401: ("authentication_required", "Authentication is required."),
    403: ("permission_denied", "You do not have permission to do this."),
    404: ("not_found", "The requested resource was not found."),
    405: ("method_not_allowed", "This method is not allowed on this resource."),
    408: ("request_timeout", "The request did not arrive in time."),
    413: ("payload_too_large", "The request body is too large."),
    414: ("uri_too_long", "The request line is too long."),
    415: ("unsupported_media_type", "Send the body as application/json."),
    417: ("expectation_failed", "The Expect header's expectation is not supported."),
    429: ("rate_limited", "Too many requests."),
    431: ("request_header_fields_too_large", "The request has too many header fields, or one too long."),
    501: ("not_implemented", "The request's transfer coding is not supported."),
}


class ApiError(Exception):
    """An error the client should see, in the contract's envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        errors: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = dict(headers or {})


class StripeAnswerInvalid(Exception):
    """An object Stripe returned lacks a field the service reads (or holds it in
    another shape): Stripe's fault, answered 502 `stripe_error`, not a 500."""

    def __init__(self, object_type: str, object_id: str | None, cause: BaseException) -> None:
        super().__init__(f"{object_type} {object_id}")
        self.object_type = object_type
        self.object_id = object_id
        self.cause = cause


def raised_by_stripe_object(error: BaseException) -> bool:
    """A KeyError or AttributeError raised by the stripe library's StripeObject:
    a field the service read is missing from what Stripe answered."""
    if not isinstance(error, (KeyError, AttributeError)) or error.__traceback__ is None:
        return False
    frame = traceback.extract_tb(error.__traceback__)[-1]
    return Path(frame.filename).name == "_stripe_object.py" and Path(frame.filename).parent.name == "stripe"


def _bad_stripe_answer(what: str, cause: BaseException) -> ApiError:
    # The log line carries the Stripe request ids of this request (Stripe's
    # support finds the answer by them) and what was missing; the body only
    # says the contract's envelope.
    calls = getattr(g, "stripe_calls", None)
    # A missing key's name is ours to log; another error's message might hold data.
    missing = cause.args[0] if isinstance(cause, (KeyError, AttributeError)) and cause.args else None
    log.error(
        "stripe answered %s that the service can't read (%s: %s)",
        what,
        type(cause).__name__,
        str(missing)[:80] if missing is not None else "-",
        extra={"stripe_request_ids": list(calls.request_ids) if calls else []},
    )
    return ApiError(502, "stripe_error", "The payment provider answered with an object the service can't read.")


def not_found(what: str = "resource") -> ApiError:
    return ApiError(404, "not_found", f"No such {what}.")


def forbidden(message: str = "Your role does not allow this action.") -> ApiError:
    return ApiError(403, "permission_denied", message)


def validation_error(errors: Mapping[str, Any], message: str = "The request is invalid.") -> ApiError:
    return ApiError(422, "validation_failed", message, errors=errors)


def envelope(error: ApiError, request_id: str | None, doc_base: str = DEFAULT_ERRORS_DOC_URL) -> dict[str, Any]:
    """The error's body, as the app and the HTTP server (billing.http_worker) both answer it."""
    body: dict[str, Any] = {
        "type": TYPE_BY_STATUS.get(error.status, "api_error"),
        "code": error.code,
        "message": error.message,
    }
    if error.errors is not None:
        body["errors"] = error.errors
    body["request_id"] = request_id
    body["doc_url"] = doc_base + error.code
    return body


def for_status(status: int) -> ApiError:
    """The error for a bare HTTP status (no rule of ours behind it)."""
    if status >= 500 and status not in _HTTP_CODES:
        return ApiError(status, "internal_error", "Something went wrong on our side.")
    code, message = _HTTP_CODES.get(status, ("http_error", "Request failed."))
    return ApiError(status, code, message)


def error_response(error: ApiError) -> Response:
    response = jsonify(
        envelope(
            error, getattr(g, "request_id", None), current_app.config.get("ERRORS_DOC_URL", DEFAULT_ERRORS_DOC_URL)
        )
    )
    response.status_code = error.status
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def _flatten_locations(messages: Mapping[str, Any]) -> dict[str, Any]:
    """webargs nests errors under their location ("json", "query"); we don't."""
    flat: dict[str, Any] = {}
    for location_errors in messages.values():
        if isinstance(location_errors, Mapping):
            flat.update(location_errors)
        else:
            flat.setdefault("_schema", []).extend(
                location_errors if isinstance(location_errors, list) else [location_errors]
            )
    return flat


def from_http_exception(error: HTTPException) -> ApiError:
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    messages = data.get("messages")
    if status == 400 and messages and "json" in messages and messages["json"] == ["Invalid JSON body."]:
        return ApiError(400, "invalid_json", "The request body is not valid JSON.")
    if status == 422 and messages is not None:
        return validation_error(_flatten_locations(messages))
    if status >= 500:
        return ApiError(status, "internal_error", "Something went wrong on our side.")
    code, message = _HTTP_CODES.get(status, ("http_error", error.description or "Request failed."))
    headers = dict(data.get("headers") or {})
    if status == 405 and error.get_headers():
        allow = dict(error.get_headers()).get("Allow")
        if allow:
            headers["Allow"] = allow
    return ApiError(status, code, data.get("message", message), headers=headers)


def from_stripe_error(error: stripe.StripeError) -> ApiError:
    """Map a Stripe failure to the contract. Raw Stripe text is only shown for
    card errors, whose messages Stripe writes for the cardholder."""
    if isinstance(error, stripe.CardError):
        # One contract code for every refusal (expired_card, incorrect_cvc, ... included).
        return ApiError(402, "card_declined", error.user_message or "The card was declined.")
    if isinstance(error, stripe.RateLimitError):
        retry_after = "1"
        if error.headers and error.headers.get("Retry-After"):
            retry_after = str(error.headers["Retry-After"])
        return ApiError(
            429,
            "rate_limited",
            "The payment provider is rate limiting us; retry shortly.",
            headers={"Retry-After": retry_after},
        )
    if isinstance(error, stripe.APIConnectionError):
        return ApiError(503, "stripe_unavailable", "The payment provider could not be reached.")
    if isinstance(error, stripe.APIError) or (error.http_status or 0) >= 500:
        return ApiError(502, "stripe_unavailable", "The payment provider failed to answer.")
    if isinstance(error, stripe.InvalidRequestError) and error.code == "resource_missing":
        return not_found()
    if isinstance(error, stripe.InvalidRequestError) and error.code == "invoice_upcoming_none":
        # e.g. previewing a subscription that ends without another invoice: nothing to show, nothing failed.
        return ApiError(409, "invoice_upcoming_none", "There is no upcoming invoice to preview.")
    if isinstance(error, stripe.InvalidRequestError) and error.code == "tax_id_invalid":
        # The value does not fit its type (Stripe's reason, e.g. "Invalid value for eu_vat.").
        reason = error.user_message or "Stripe refused this tax ID."
        return ApiError(422, "tax_id_invalid", reason, errors={"value": [reason]})
    if isinstance(error, stripe.InvalidRequestError) and error.code == "customer_tax_location_invalid":
        # Stripe Tax can't place the customer: the field to fix, in the API's own names.
        field = tax_location_field(getattr(error, "param", None))
        *outer, last = field.split(".")
        errors: dict[str, Any] = {last: ["Stripe Tax can't compute tax from this address."]}
        for name in reversed(outer):  # nested as the body is, as validation errors are
            errors = {name: errors}
        return ApiError(
            422,
            "tax_location_invalid",
            f"Stripe Tax can't locate this billing account from its address: check {field}.",
            errors=errors,
        )
    if isinstance(error, stripe.InvalidRequestError) and (error.code or "").endswith("_unexpected_state"):
        # e.g. confirming a SetupIntent that already succeeded: the client's mistake, not Stripe's failure.
        return ApiError(409, str(error.code), "The object is not in a state that allows this.")
    if isinstance(error, (stripe.AuthenticationError, stripe.PermissionError)):
        log.error("stripe rejected our credentials (%s)", type(error).__name__)
        return ApiError(502, "stripe_unavailable", "The payment provider refused our credentials.")
    log.error(
        "stripe rejected a request: %s code=%s param=%s status=%s",
        type(error).__name__,
        error.code,
        getattr(error, "param", None),
        error.http_status,
    )
    return ApiError(502, "stripe_request_failed", "The payment provider rejected the request.")


def tax_location_field(param: str | None) -> str:
    """Stripe's `address[postal_code]` is the API's `address.postal_code`; no param: the whole `address`."""
    if not param or not param.startswith("address"):
        return "address"
    return param.replace("[", ".").replace("]", "")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Response:
        return error_response(error)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        return error_response(from_http_exception(error))

    @app.errorhandler(stripe.StripeError)
    def _stripe_error(error: stripe.StripeError) -> Response:
        return error_response(from_stripe_error(error))

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def _database_unavailable(error: Exception) -> Response:
        # The database is down or restarting: the client (Stripe too) should retry.
        log.error("database unavailable (%s)", type(error).__name__)
        state = current_app.extensions.get("billing")
        if state is not None:
            state.db.suspect_pooled()  # the pool's other connections may be cut too
        return error_response(
            ApiError(
                503,
                "database_unavailable",
                "The service's database is unavailable; retry shortly.",
                headers={"Retry-After": "5"},
            )
        )

    @app.errorhandler(StripeAnswerInvalid)
    def _stripe_answer_invalid(error: StripeAnswerInvalid) -> Response:
        return error_response(_bad_stripe_answer(f"a {error.object_type} ({error.object_id})", error.cause))

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        if raised_by_stripe_object(error):
            return error_response(_bad_stripe_answer("an object", error))
        # Where it failed, without the traceback or the message: either could
        # carry request data or secrets into the log.
        frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
        where = f"{frame.filename}:{frame.lineno} in {frame.name}" if frame else "unknown"
        log.error("unhandled %s at %s", type(error).__name__, where)
        return error_response(ApiError(500, "internal_error", "Something went wrong on our side."))
