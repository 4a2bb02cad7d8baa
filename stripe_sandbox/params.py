"""Validate and coerce request parameters against the `stripe` library's TypedDicts.

The library ships one TypedDict per endpoint (`stripe.params.CustomerCreateParams`,
...), generated from the same OpenAPI spec as Stripe's own validation, so they
are the emulator's schema. Form values arrive as strings; this module turns
them into ints, bools, Decimals, lists and dicts per the declared types and
raises the errors Stripe raises for unknown, missing or malformed parameters.

Enum-like fields are typed `Literal[...] | str` so the library stays
forward-compatible; Stripe itself only accepts the listed values, so the bare
`str` is ignored whenever string literals are present.
"""

from __future__ import annotations

import decimal
import functools
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stripe._request_options import RequestOptions
from stripe._stripe_context import StripeContext
from stripe._stripe_object import UntypedStripeObject
from typing_extensions import is_typeddict

from stripe_sandbox.errors import SandboxError, parameter_missing, parameter_unknown

# RequestOptions only imports these under TYPE_CHECKING; get_type_hints needs them.
_TYPE_NAMES = {"StripeContext": StripeContext, "Mapping": Mapping}
_REQUEST_OPTION_KEYS = frozenset(RequestOptions.__annotations__)
_INTEGER = re.compile(r"-?\d+\Z")
_WRAPPERS = {typing.NotRequired, typing.Required, typing.Annotated}


@dataclass(frozen=True)
class _Shape:
    """What a declared type accepts, flattened out of its Union."""

    allow_empty: bool
    enums: tuple[str, ...]
    scalars: frozenset[type]
    typed_dict: type | None
    list_item: Any
    map_value: Any


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) in _WRAPPERS:
        tp = typing.get_args(tp)[0]
    return tp


def _members(tp: Any) -> list[Any]:
    tp = _unwrap(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(tp) for m in _members(arg)]
    return [tp]


@functools.cache
def _shape(tp: Any) -> _Shape:
    allow_empty = False
    enums: list[str] = []
    scalars: set[type] = set()
    typed_dict = list_item = map_value = None
    for member in _members(tp):
        origin = typing.get_origin(member)
        args = typing.get_args(member)
        if origin is typing.Literal:
            for literal in args:
                if literal == "":
                    allow_empty = True
                else:
                    enums.append(literal)
        elif is_typeddict(member):
            typed_dict = typed_dict or member
        elif origin in (list, list):
            list_item = args[0]
        elif origin in (dict, dict):
            map_value = args[1]
        elif origin is UntypedStripeObject:
            map_value = args[0]
        elif member in (str, int, bool, float, decimal.Decimal):
            scalars.add(member)
        elif member is type(None):
            pass
        else:
            raise TypeError(f"sandbox params: unsupported declared type {member!r}")
    return _Shape(allow_empty, tuple(enums), frozenset(scalars), typed_dict, list_item, map_value)


@functools.cache
def _fields(typed_dict: type) -> tuple[dict[str, Any], frozenset[str]]:
    hints = typing.get_type_hints(typed_dict, include_extras=True, localns=_TYPE_NAMES)
    required = set(getattr(typed_dict, "__required_keys__", ()))
    if RequestOptions in getattr(typed_dict, "__orig_bases__", ()):
        # Client-side options (api_key, idempotency_key, ...) never reach the
        # wire as parameters; Stripe would call them unknown.
        for key in _REQUEST_OPTION_KEYS:
            hints.pop(key, None)
            required.discard(key)
    return hints, frozenset(required)


def param_name(path: list[str]) -> str:
    """["items", "0", "price"] -> "items[0][price]", the way Stripe names params."""
    return path[0] + "".join(f"[{segment}]" for segment in path[1:])


def _one_of(choices: tuple[str, ...]) -> str:
    if len(choices) == 1:
        return choices[0]
    return ", ".join(choices[:-1]) + (", or " if len(choices) > 2 else " or ") + choices[-1]


def _kind(shape: _Shape) -> str:
    if shape.typed_dict is not None or shape.map_value is not None:
        return "object"
    if shape.list_item is not None:
        return "array"
    for scalar, name in ((int, "integer"), (bool, "boolean"), (float, "decimal"), (decimal.Decimal, "decimal")):
        if scalar in shape.scalars:
            return name
    return "string"


def _cannot_unset(name: str) -> SandboxError:
    return SandboxError(
        400,
        f"You passed an empty string for '{name}'. We assume empty values are an attempt to "
        f"unset a parameter; however '{name}' cannot be unset. You should remove '{name}' "
        "from your request or supply a non-empty value.",
        code="parameter_invalid_empty",
        param=name,
    )


def _coerce_str(value: str, shape: _Shape, path: list[str]) -> Any:
    name = param_name(path)
    if value == "":
        if shape.allow_empty or (str in shape.scalars and not shape.enums):
            return ""
        raise _cannot_unset(name)
    if value in shape.enums:
        return value
    if int in shape.scalars and _INTEGER.match(value):
        return int(value)
    if bool in shape.scalars and value in ("true", "false"):
        return value == "true"
    if shape.scalars & {float, decimal.Decimal}:
        try:
            number = decimal.Decimal(value)
        except decimal.InvalidOperation:
            pass
        else:
            if number.is_finite():
                return number if decimal.Decimal in shape.scalars else float(number)
    if str in shape.scalars and not shape.enums:
        return value
    if shape.enums and int not in shape.scalars:
        raise SandboxError(400, f"Invalid {name}: must be one of {_one_of(shape.enums)}", param=name)
    kind = _kind(shape)
    if kind == "integer":
        raise SandboxError(400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=name)
    if kind in ("object", "array"):
        raise SandboxError(400, f"Invalid {kind}", param=name)
    raise SandboxError(400, f"Invalid {kind}: {value}", param=name)


def _coerce(value: Any, declared: Any, path: list[str]) -> Any:
    shape = _shape(declared)
    if isinstance(value, str):
        return _coerce_str(value, shape, path)
    if isinstance(value, list):
        if shape.list_item is not None:
            return [_coerce(item, shape.list_item, [*path, str(i)]) for i, item in enumerate(value)]
        # The form decoder guesses `x[0]=a` is a list; for a hash it is a key.
        value = {str(i): item for i, item in enumerate(value)}
    if isinstance(value, dict):
        if shape.typed_dict is not None:
            return _validate_fields(shape.typed_dict, value, path)
        if shape.map_value is not None:
            return {key: _coerce(item, shape.map_value, [*path, key]) for key, item in value.items()}
        if shape.list_item is not None and all(key.isdigit() for key in value):
            return [_coerce(value[key], shape.list_item, [*path, key]) for key in sorted(value, key=int)]
    raise SandboxError(400, f"Invalid {_kind(shape)}", param=param_name(path))


def _validate_fields(typed_dict: type, value: dict[str, Any], path: list[str]) -> dict[str, Any]:
    fields, required = _fields(typed_dict)
    for key in value:
        if key not in fields:
            raise parameter_unknown(param_name([*path, key]))
    for key in (key for key in fields if key in required):  # declared order, deterministic
        if key not in value:
            raise parameter_missing(param_name([*path, key]))
        if value[key] == "" and not _shape(fields[key]).allow_empty:
            raise _cannot_unset(param_name([*path, key]))  # a required param cannot be unset
    return {key: _coerce(item, fields[key], [*path, key]) for key, item in value.items()}


def validate(typed_dict: type, params: dict[str, Any]) -> dict[str, Any]:
    """Check `params` (as decoded from the form) against `typed_dict` and coerce them."""
    return _validate_fields(typed_dict, params, [])
