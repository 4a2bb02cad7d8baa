"""schemathesis hooks for .ci/fuzz.py (loaded through SCHEMATHESIS_HOOKS).

- Metadata keys: OpenAPI 3.0 has no `propertyNames`, so the document states the
  key rules (1-40 characters, no reserved prefix, no control character) only in
  words; generated keys are held to the service's own rules here, so that
  positive_data_acceptance judges everything else.
- CPython 3.11.7's ast.parse is not thread-safe (gh-106905, fixed in 3.11.8):
  hypothesis parses sources to describe its filters, and with two workers the
  coverage phase died with "AST constructor recursion depth mismatch". One
  parse at a time avoids it.
"""

from __future__ import annotations

import ast
import sys
import threading
from pathlib import Path
from typing import Any

import schemathesis
from marshmallow import ValidationError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from billing.input_guard import _FORBIDDEN_IN_TEXT
from schemas.subscriptions import SubscriptionUpdateSchema

_parse = ast.parse
_parsing = threading.Lock()


def _one_parse_at_a_time(*args: Any, **kwargs: Any) -> Any:
    with _parsing:
        return _parse(*args, **kwargs)


ast.parse = _one_parse_at_a_time  # type: ignore[assignment]

_metadata = SubscriptionUpdateSchema().fields["metadata"]


def _key_accepted(key: str) -> bool:
    if _FORBIDDEN_IN_TEXT.search(key):
        return False
    try:
        _metadata.deserialize({key: "v"})
    except ValidationError:
        return False
    return True


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    if isinstance(body, dict) and isinstance(body.get("metadata"), dict):
        body["metadata"] = {key: value for key, value in body["metadata"].items() if _key_accepted(key)}
    return body
