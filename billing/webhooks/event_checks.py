"""What a signed Stripe event must look like before it is stored: else 400 `invalid_event`.

A valid signature proves who sent the event, not that it can be stored: an id
or type too long for the inbox's columns, an id with a control character, a
`created` that is not a whole number, a NUL or a lone surrogate anywhere
(PostgreSQL's JSONB refuses both), or NaN. Stripe retries a 5xx for days, so
these are refused as the client errors they are. Stripe's own free text (a
customer's name...) may hold other control characters: not ours to refuse.
"""

from __future__ import annotations

import math
import re
from typing import Any

from billing.errors import ApiError
from billing.input_guard import is_clean_identifier
from billing.stripe_ids import named_id

MAX_ID_LENGTH = 255  # the inbox's id column, and Stripe's ids with room to spare
MAX_TYPE_LENGTH = 100  # the inbox's type column; Stripe's longest type is under 60
MAX_CREATED = 2**53  # a unix time, within what JSON and the inbox's BigInteger hold exactly
# The fields of an event's object that name what the event is about (the inbox's object key, the customer).
SUBJECT_FIELDS = ("id", "customer", "invoice", "payment_method", "subscription")
# What the payload's text holds wherever a NUL, a surrogate or a non-finite number
# may be in the event: without one, the walk through every value is skipped (the ack's cost).
_SUSPECT_TEXT = re.compile(r"\\u(?:0000|[dD][89a-fA-F])|NaN|Infinity")


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_event", message)


def _check_id(value: Any, what: str) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH or not is_clean_identifier(value):
        raise _invalid(f"The event's {what} is not a Stripe id.")


def _unstorable(value: Any) -> bool:
    """A NUL or a lone surrogate in any string (keys too), or a non-finite number, anywhere."""
    if isinstance(value, str):
        return "\x00" in value or any("\ud800" <= char <= "\udfff" for char in value)
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_unstorable(key) or _unstorable(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_unstorable(item) for item in value)
    return False


def check_event(event: dict[str, Any], text: str | None = None) -> None:
    """Raise 400 `invalid_event` unless the event can be stored and routed as it is.
    `text`: the JSON it was parsed from, if at hand."""
    _check_id(event.get("id"), "id")
    kind = event.get("type")
    if not isinstance(kind, str) or not kind or len(kind) > MAX_TYPE_LENGTH or not is_clean_identifier(kind):
        raise _invalid("The event's type is not a Stripe event type.")
    created = event.get("created")
    if created is not None and (
        isinstance(created, bool) or not isinstance(created, int) or not 0 <= created < MAX_CREATED
    ):
        raise _invalid("The event's created must be a unix time in whole seconds.")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if isinstance(obj, dict):
        for field in SUBJECT_FIELDS:
            value = named_id(obj.get(field))  # as given: checked here
            if value is not None:
                _check_id(value, f"object's {field}")
    if (text is None or _SUSPECT_TEXT.search(text)) and _unstorable(event):
        raise _invalid("The event holds a NUL character, a lone surrogate or a number that is not finite.")
