"""What every spec model shares: strictness, names, and problems that know where they are.

Models are strict (YAML already typed the values: ``"5"`` is not an int, ``1`` is
not ``true``), refuse unknown keys (a typo must not silently become a default),
and are frozen (a validated spec is passed around, never edited in place;
``model_copy(update=...)`` makes a changed one).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
DEVICE_PATTERN = r"^(cpu|cuda(:[0-9]+)?)$"

PATTERN_WORDS = {
    NAME_PATTERN: "letters, digits, '.', '_' and '-' only, starting with a letter or digit",
    DEVICE_PATTERN: "cpu, cuda or cuda:N",
}
"""How the loader explains a pattern mismatch to a person."""

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=64)]
"""Board, processor, monitor and model names. They appear in task keys
(``kws/local/cpu/...``) and file names, so no ``/``, ``,``, ``=`` or spaces."""


def _supported_version(value: int) -> int:
    if value != 1:
        raise ValueError(f"unsupported version {value}: this farm reads version 1")
    return value


Version = Annotated[int, AfterValidator(_supported_version)]


def _finite_inside(value: Any, where: str = "") -> Any:
    """A free-form mapping (``options:``) holds no ``.inf`` or ``.nan``: no option means
    one, and JSON (the result, the store) has no way to write it."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where or 'a value'}: {value} is not a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            _finite_inside(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite_inside(v, f"{where}[{i}]")
    return value


Options = Annotated[dict[str, Any], AfterValidator(_finite_inside)]
"""A model's or a monitor's ``options``: free-form, finite."""
"""The ``version:`` of an inventory or job file: 1 is the only one there is."""


class SpecModel(BaseModel):
    """Base of every inventory and job model."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Problem(ValueError):
    """A validator's complaint about a field *below* the model it validates.

    Pydantic locates an error raised by a model validator at the model itself;
    ``path`` (relative to that model) lets the loader point at the exact key —
    the second ``name: cpu``, not the whole board.
    """

    def __init__(self, path: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.path = path
        self.message = message


def duplicates(names: list[str]) -> list[tuple[int, int]]:
    """``(index, index_of_first)`` for every repeated name, in order."""
    first: dict[str, int] = {}
    out = []
    for i, name in enumerate(names):
        if name in first:
            out.append((i, first[name]))
        else:
            first[name] = i
    return out
