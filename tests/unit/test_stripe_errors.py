"""How a Stripe failure becomes the contract's error (billing.errors.from_stripe_error):
the exceptions as the stripe library raises them, no app, no HTTP."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from billing.errors import TYPE_BY_STATUS, envelope, from_stripe_error


def test_a_card_refusal_is_402_with_stripes_words_for_the_cardholder() -> None:
    error = stripe.CardError("Your card has expired.", "exp_month", "expired_card", http_status=402)
    mapped = from_stripe_error(error)
    assert (mapped.status, mapped.code, mapped.message) == (402, "card_declined", "Your card has expired.")


def test_a_card_refusal_without_a_message_says_declined() -> None:
    mapped = from_stripe_error(stripe.CardError("", None, "card_declined", http_status=402))
    assert (mapped.status, mapped.code, mapped.message) == (402, "card_declined", "The card was declined.")


@pytest.mark.parametrize("headers,retry_after", [({"Retry-After": "7"}, "7"), (None, "1"), ({}, "1")])
def test_stripes_rate_limit_is_429_with_retry_after(headers: dict[str, str] | None, retry_after: str) -> None:
    mapped = from_stripe_error(stripe.RateLimitError("slow down", http_status=429, headers=headers))
    assert (mapped.status, mapped.code, mapped.headers) == (429, "rate_limited", {"Retry-After": retry_after})


@pytest.mark.parametrize(
    "error,status",
    [
        (stripe.APIConnectionError("connection reset"), 503),
        (stripe.APIError("boom", http_status=500), 502),
        (stripe.InvalidRequestError("odd", None, http_status=503), 502),  # any 5xx is Stripe's failure
    ],
)
def test_stripe_unreachable_or_failing_is_stripe_unavailable(error: stripe.StripeError, status: int) -> None:
    mapped = from_stripe_error(error)
    assert (mapped.status, mapped.code) == (status, "stripe_unavailable")


def test_a_missing_object_is_our_404() -> None:
    mapped = from_stripe_error(
        stripe.InvalidRequestError("No such customer", "id", code="resource_missing", http_status=404)
    )
    assert (mapped.status, mapped.code) == (404, "not_found")


def test_no_upcoming_invoice_is_a_409() -> None:
    mapped = from_stripe_error(stripe.InvalidRequestError("none", None, code="invoice_upcoming_none", http_status=400))
    assert (mapped.status, mapped.code) == (409, "invoice_upcoming_none")


def test_an_object_in_the_wrong_state_is_a_409_under_stripes_code() -> None:
    error = stripe.InvalidRequestError("already succeeded", None, code="setup_intent_unexpected_state", http_status=400)
    mapped = from_stripe_error(error)
    assert (mapped.status, mapped.code) == (409, "setup_intent_unexpected_state")
    assert "already succeeded" not in mapped.message  # Stripe's words are for us, not the client


@pytest.mark.parametrize(
    "error",
    [
        stripe.AuthenticationError("Invalid API Key provided: sk_live_****1234", http_status=401),
        stripe.PermissionError("not allowed", http_status=403),
    ],
)
def test_refused_credentials_are_stripe_unavailable_without_stripes_text(error: stripe.StripeError) -> None:
    mapped = from_stripe_error(error)
    assert (mapped.status, mapped.code) == (502, "stripe_unavailable")
    assert "sk_live" not in mapped.message


def test_any_other_refusal_is_stripe_request_failed_without_stripes_text() -> None:
    error = stripe.InvalidRequestError(
        "Received unknown parameter: secret_field", "secret_field", code="parameter_unknown", http_status=400
    )
    mapped = from_stripe_error(error)
    assert (mapped.status, mapped.code) == (502, "stripe_request_failed")
    assert "secret_field" not in mapped.message


def test_the_envelope_of_a_mapped_error() -> None:
    mapped = from_stripe_error(stripe.RateLimitError("slow down", http_status=429))
    body: dict[str, Any] = envelope(mapped, "req_1", "https://docs.test/errors#")
    assert body == {
        "type": TYPE_BY_STATUS[429],
        "code": "rate_limited",
        "message": mapped.message,
        "request_id": "req_1",
        "doc_url": "https://docs.test/errors#rate_limited",
    }
