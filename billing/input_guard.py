"""Bad input never reaches the database or Stripe (API.md, Errors).

Runs before every view: the path and the query may hold no control character
(C0, DEL or C1) or lone surrogate; a body with content is JSON (sent without a Content-Type it
is read as JSON; with another type it is 415), nested at
most 32 levels (400 `invalid_json`, checked before it is parsed, so a deep
document can't exhaust the parser), and its strings may hold no NUL, lone
surrogate or control character but tab and newline (422).
"""

from __future__ import annotations

import re
from typing import Any

from flask import request

from billing.errors import ApiError, validation_error

MAX_DEPTH = 32
# Regex character ranges; the control characters' source text is also the OpenAPI
# document's `pattern` (lone surrogates are not: JSON Schema's regex engines refuse them).
# C0, DEL and C1 (U+0080-U+009F: NEL, CSI... a terminal or a log reader acts on them too).
CONTROL_IN_URL = r"\x00-\x1f\x7f-\x9f"
CONTROL_IN_TEXT = r"\x00-\x08\x0b-\x1f\x7f-\x9f"  # tab and newline are fine in free text
_LONE_SURROGATES = r"\ud800-\udfff"
_FORBIDDEN_IN_URL = re.compile(f"[{CONTROL_IN_URL}{_LONE_SURROGATES}]")
_FORBIDDEN_IN_TEXT = re.compile(f"[{CONTROL_IN_TEXT}{_LONE_SURROGATES}]")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_clean_identifier(text: str) -> bool:
    """Whether an identifier (a token's subject, a Stripe event's ids) holds no control
    character (tab and newline included) and no lone surrogate: the URL's rule."""
    return _FORBIDDEN_IN_URL.search(text) is None


# A string, escapes included (an unterminated one runs to the end), and what
# is not a bracket: both removed by the regex engine, so only the brackets
# outside strings are walked in Python (a 3 MB picture's base64 is one match).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON text nests arrays/objects deeper than `limit` (strings skipped)."""
    depth = 0
    for char in _NOT_BRACKET.sub("", _STRING.sub("", text)):
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _bad_strings(value: Any, where: str) -> dict[str, list[str]]:
    if isinstance(value, str):
        return (
            {where or "_schema": ["Control characters and lone surrogates are not allowed."]}
            if _FORBIDDEN_IN_TEXT.search(value)
            else {}
        )
    found: dict[str, list[str]] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"{where}.{key}" if where else str(key)
            if _FORBIDDEN_IN_TEXT.search(str(key)):
                found[name] = ["Control characters and lone surrogates are not allowed."]
            found.update(_bad_strings(item, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.update(_bad_strings(item, f"{where}.{index}" if where else str(index)))
    return found


def check_request() -> None:
    """The before-request hook; raises the contract's error for bad input."""
    if _FORBIDDEN_IN_URL.search(request.path) or any(
        _FORBIDDEN_IN_URL.search(key) or _FORBIDDEN_IN_URL.search(value)
        for key, value in request.args.items(multi=True)
    ):
        raise validation_error({"_path": ["Control characters and lone surrogates are not allowed in the URL."]})
    if request.method not in _BODY_METHODS:
        return
    raw = request.get_data(cache=True)
    if not raw:
        return
    if not request.content_type:
        # A JSON body sent without its type is read as JSON, never "missing field".
        request.environ["CONTENT_TYPE"] = "application/json"
        request.__dict__.pop("_parsed_content_type", None)  # werkzeug caches the parsed header
    elif not request.is_json:
        raise ApiError(415, "unsupported_media_type", "Send the body as JSON, with Content-Type: application/json.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "The request body is not valid UTF-8 JSON.") from None
    if json_too_deep(text):
        raise ApiError(400, "invalid_json", f"The request body nests deeper than {MAX_DEPTH} levels.")
    body = request.get_json(silent=True)
    if body is None and text.strip() != "null":
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.")
    if request.path.startswith("/webhooks/"):
        return  # Stripe's own text, signed: not ours to refuse
    bad = _bad_strings(body, "")
    if bad:
        raise validation_error(bad, "Strings may not hold control characters or lone surrogates.")
