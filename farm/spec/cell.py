"""One cell of the matrix, the same across jobs: a model on a board's processor under
one variant. The one key (and the one label) by which the store matches jobs,
nightly compares and trends, metrics label series, the report pairs sweeps and
the CLI shows a task's variant.

A variant is keyed by what it *changes*: a knob left unset (``None``) and a knob
set to what farm does without it (``VARIANT_DEFAULTS``: the zoo's ReLU, the eager
runtime, fp32) are left out, so a job without a ``runtime`` axis pairs with one
that says ``runtime: [eager]``. Its label is ``activation=tanh,threads=2`` (sorted
keys), or ``default`` for a cell that changes nothing: a Prometheus label value
too (``farm_cell_*{variant="default"}``), so it stays that word.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

VARIANT_DEFAULTS: Mapping[str, Any] = {
    "activation": "relu",
    "runtime": "eager",
    "precision": "fp32",
}
"""What a task runs with when its variant does not name the axis: the zoo's ReLU
(``farm.zoo``: a user model runs as built, which farm accepts only as ReLU), the
engine's eager runtime and fp32 artifacts (``farm.engine.request.Request``)."""

DEFAULT_LABEL = "default"
"""The label of a cell whose variant changes nothing."""


_UNSET = object()


def knob(variant: Mapping[str, Any], name: str) -> Any:
    """The value of a defaulted knob (``activation``, ``runtime``, ``precision``) in force
    for ``variant``: its own, else the default."""
    value = variant.get(name)
    return VARIANT_DEFAULTS[name] if value is None or value == "" else value


def effective(variant: Mapping[str, Any]) -> dict[str, Any]:
    """The knobs of ``variant`` that change what is measured, sorted by name."""
    return {
        k: v
        for k, v in sorted(variant.items())
        if v is not None and VARIANT_DEFAULTS.get(k, _UNSET) != v
    }


def variant_label(variant: Mapping[str, Any]) -> str:
    """``activation=tanh,threads=2``: the effective knobs, sorted; ``default`` for none."""
    return ",".join(f"{k}={v}" for k, v in effective(variant).items()) or DEFAULT_LABEL


@dataclass(frozen=True, order=True)
class CellKey:
    """model, board, processor and the variant's label (``variant_label``): equal for
    two tasks that measure the same thing, whichever job they belong to."""

    model: str
    board: str
    processor: str
    variant: str = DEFAULT_LABEL

    @classmethod
    def of(cls, model: str, board: str, processor: str, variant: Mapping[str, Any]) -> CellKey:
        return cls(model, board, processor, variant_label(variant))

    @property
    def peers_key(self) -> tuple[str, str, str]:
        """The cell on any board: what boards of the same tags are compared on."""
        return self.model, self.processor, self.variant

    def __str__(self) -> str:
        return f"{self.model}/{self.board}/{self.processor}/{self.variant}"
