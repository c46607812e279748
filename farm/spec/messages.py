"""Pydantic's error records, said the way a person editing YAML wants to hear them.

``Input should be greater than or equal to 1`` becomes ``must be >= 1``;
``Extra inputs are not permitted`` becomes ``unknown key; expected one of: ...``
with a did-you-mean. Anything not translated keeps pydantic's own words.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel

from farm.spec import plugins
from farm.spec.base import PATTERN_WORDS, Problem

_TYPE_NAMES = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}

_YAML_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
    type(None): "null",
}


def describe(
    model: type[BaseModel], error: Any, loc: tuple[str | int, ...], data: Any = None
) -> str:
    """A short, plain message for one pydantic error located at ``loc``."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "value_error":
        cause = ctx.get("error")
        return cause.message if isinstance(cause, Problem) else str(cause or error["msg"])
    if kind == "missing":
        owner = _model_at(model, loc[:-1], data)
        plugin = plugins.name_of(owner) if owner is not None else None
        return f"required when {plugin[0]} is {plugin[1]}" if plugin else "required"
    if kind == "extra_forbidden":
        return _unknown_key(model, loc, data)
    if kind in _TYPE_NAMES:
        got = _YAML_NAMES.get(type(error.get("input")), type(error.get("input")).__name__)
        return f"expected {_TYPE_NAMES[kind]}, got {got}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx['ge']}"
    if kind == "greater_than":
        return f"must be > {ctx['gt']}"
    if kind == "less_than_equal":
        return f"must be <= {ctx['le']}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}, got {error.get('input')!r}"
    if kind == "string_pattern_mismatch":
        wanted = PATTERN_WORDS.get(ctx["pattern"], f"a match for {ctx['pattern']}")
        return f"must be {wanted}, got {error.get('input')!r}"
    if kind == "too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else error["msg"]
    return str(error["msg"])


def _unknown_key(model: type[BaseModel], loc: tuple[str | int, ...], data: Any) -> str:
    """``unknown key 'iteration' (did you mean 'iterations'?)`` with the allowed keys."""
    key = str(loc[-1]) if loc else "?"
    owner = _model_at(model, loc[:-1], data)
    if owner is None:
        return f"unknown key {key!r}"
    allowed = list(owner.model_fields)
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    plugin = plugins.name_of(owner)
    if plugin is not None:  # a board's or an options model: say whose key it would be
        kind, name = plugin
        hint = f" for {kind} {name}" + hint
        others = [n for n, m in plugins.discover(kind).items() if key in m.model_fields]
        if others and not close:
            hint += f" (a key of {kind} {', '.join(others)})"
    return f"unknown key {key!r}{hint}; expected one of: {', '.join(allowed)}"


def _model_at(
    model: type[BaseModel], loc: tuple[str | int, ...], data: Any = None
) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc`` below ``model``.

    ``data`` (the document) picks a plug-in's model where a field's depends on it: a
    board's by its ``transport`` (``model_for``), a monitor's options by its
    ``backend`` (``field_model``)."""
    current: Any = _concrete(model, data)
    for part in loc:
        if isinstance(part, int):
            data = data[part] if isinstance(data, list) and 0 <= part < len(data) else None
            current = _concrete(current, data)
            continue  # list indices keep the item type, already unwrapped below
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        chosen = getattr(current, "field_model", None)
        special = chosen(part, data) if chosen is not None else None
        data = data.get(part) if isinstance(data, dict) else None
        current = _concrete(special or _inner_model(field.annotation), data)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _concrete(model: Any, data: Any) -> Any:
    """A base model's plug-in subclass for ``data`` (``Board`` → its transport's)."""
    pick = getattr(model, "model_for", None)
    if pick is None or not isinstance(data, dict):
        return model
    try:
        return pick(data)
    except ValueError:
        return model


def _inner_model(annotation: Any) -> Any:
    """``list[Board] | None`` → ``Board``: the model a field's values are validated by."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, typing.Annotated):
        for arg in typing.get_args(annotation):
            inner = _inner_model(arg)
            if inner is not None:
                return inner
    return None
