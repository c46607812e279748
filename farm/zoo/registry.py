"""The zoo's registry: models register by name with a decorator that refuses duplicates.

A model file is one ``build(activation="relu", **options) -> nn.Module`` function under
``@register(...)``. Looking a model up is a dictionary read, never an import by a name
taken from a job file.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from farm.errors import UserError

BuildFn = Callable[..., nn.Module]

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def nonlinearity(name: str) -> nn.Module:
    """A fresh non-linearity layer: the paper's Table 7 swaps ReLU for sigmoid and tanh."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise UserError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}"
        ) from None


@dataclass(frozen=True)
class ModelInfo:
    """One zoo model: what it is, where it comes from, and how to build it.

    ``input_shape`` includes the batch dimension of 1 (``(1, 3, 227, 227)``), the shape
    of the tensor the engine feeds.
    """

    name: str
    source: str
    input_shape: tuple[int, ...]
    description: str
    builder: BuildFn

    def build(self, activation: str = "relu", **options: Any) -> nn.Module:
        """Build the model with random weights from torch's global generator.

        Unknown options are a `UserError` naming the ones the model takes.
        """
        try:
            inspect.signature(self.builder).bind(activation=activation, **options)
        except TypeError:
            known = [p for p in inspect.signature(self.builder).parameters if p != "activation"]
            raise UserError(
                f"model {self.name!r}: unknown options {sorted(options)}; it takes {known}"
            ) from None
        return self.builder(activation=activation, **options)


class Registry:
    """Name -> `ModelInfo`. Tests make their own; the zoo uses `REGISTRY`."""

    def __init__(self) -> None:
        self._models: dict[str, ModelInfo] = {}

    def register(
        self, name: str, *, source: str, input_shape: tuple[int, ...], description: str
    ) -> Callable[[BuildFn], BuildFn]:
        """Decorator registering a build function; a second model with the same name is a
        ValueError (two files silently shadowing each other is the bug this prevents)."""

        def decorate(builder: BuildFn) -> BuildFn:
            if name in self._models:
                raise ValueError(f"zoo model {name!r} is already registered")
            self._models[name] = ModelInfo(
                name=name,
                source=source,
                input_shape=tuple(input_shape),
                description=description,
                builder=builder,
            )
            return builder

        return decorate

    def names(self) -> list[str]:
        return sorted(self._models)

    def get(self, name: str) -> ModelInfo:
        try:
            return self._models[name]
        except KeyError:
            raise UserError(
                f"unknown zoo model {name!r}; the zoo has {', '.join(self.names())}"
            ) from None


REGISTRY = Registry()
register = REGISTRY.register
