"""Stripe's metadata rules: limits, and the unset semantics of empty strings."""

from __future__ import annotations

from typing import Any

from stripe_sandbox.errors import SandboxError

MAX_KEYS = 50
MAX_KEY_LENGTH = 40
MAX_VALUE_LENGTH = 500


def _check(metadata: dict[str, str], param: str) -> dict[str, str]:
    if len(metadata) > MAX_KEYS:
        raise SandboxError(
            400,
            f"Invalid {param}: metadata can have up to {MAX_KEYS} keys, but you passed in {len(metadata)} keys.",
            param=param,
        )
    for key, value in metadata.items():
        if len(key) > MAX_KEY_LENGTH:
            raise SandboxError(
                400,
                f"Metadata keys can have up to {MAX_KEY_LENGTH} characters, but you passed in a "
                f"key that is {len(key)} characters. Invalid key: '{key}'",
                param=f"{param}[{key}]",
            )
        if len(value) > MAX_VALUE_LENGTH:
            raise SandboxError(
                400,
                f"Metadata values can have up to {MAX_VALUE_LENGTH} characters, but you passed "
                f"in a value that is {len(value)} characters.",
                param=f"{param}[{key}]",
            )
    return metadata


def initial(value: Any, param: str = "metadata") -> dict[str, str]:
    """Metadata of a new object: `metadata=""` or empty values set nothing."""
    if not value:
        return {}
    return _check({k: v for k, v in value.items() if v != ""}, param)


def merged(existing: dict[str, str], value: Any, param: str = "metadata") -> dict[str, str]:
    """Update semantics: keys merge, `metadata[k]=""` removes k, `metadata=""` clears all."""
    if value == "":
        return {}
    result = dict(existing)
    for key, item in (value or {}).items():
        if item == "":
            result.pop(key, None)
        else:
            result[key] = item
    return _check(result, param)
