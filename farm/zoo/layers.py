"""Small helpers the model files share: chains and fully-connected stacks as graph nodes.

A node is ``(name, layer, input)`` as `farm.engine.artifact.GraphModule` takes it; these
helpers keep each model file a readable list of its layers.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import nn

from farm.zoo.registry import nonlinearity

Node = tuple[str, nn.Module, str]


def chain(layers: Sequence[tuple[str, nn.Module]], source: str = "input") -> list[Node]:
    """Nodes that each read the one before; the first reads ``source``."""
    nodes = []
    for name, layer in layers:
        nodes.append((name, layer, source))
        source = name
    return nodes


def dense_stack(sizes: Sequence[int], act: str, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """``fc1, act1, fc2, act2, ..., fcN`` for widths ``sizes[0] -> ... -> sizes[-1]``.

    The last layer has no non-linearity: it produces the logits (softmax is left to
    whoever reads them, as it adds nothing to the cost being measured).
    """
    if len(sizes) < 2:
        raise ValueError(f"a dense stack needs at least two sizes, got {list(sizes)}")
    layers: list[tuple[str, nn.Module]] = []
    last = len(sizes) - 1
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes), start=1):
        layers.append((f"{prefix}fc{i}", nn.Linear(n_in, n_out)))
        if i < last:
            layers.append((f"{prefix}act{i}", nonlinearity(act)))
    return layers
