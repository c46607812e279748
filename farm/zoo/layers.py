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


def dense_stack(
    sizes: Sequence[int], act: str, prefix: str = "", dropout: float | None = None
) -> list[tuple[str, nn.Module]]:
    """``fc1, act1[, drop1], fc2, ..., fcN, softmax`` for widths ``sizes[0] -> sizes[-1]``.

    A classifier: the last fully-connected layer gives logits and a softmax turns
    them into class probabilities, as in the study (its tables count the softmax
    as non-linear work). ``dropout`` adds a Dropout after each hidden activation:
    an identity at inference, kept so the layer rows are the published ones.
    """
    if len(sizes) < 2:
        raise ValueError(f"a dense stack needs at least two sizes, got {list(sizes)}")
    layers: list[tuple[str, nn.Module]] = []
    last = len(sizes) - 1
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes), start=1):
        layers.append((f"{prefix}fc{i}", nn.Linear(n_in, n_out)))
        if i < last:
            layers.append((f"{prefix}act{i}", nonlinearity(act)))
            if dropout is not None:
                layers.append((f"{prefix}drop{i}", nn.Dropout(dropout)))
    layers.append((f"{prefix}softmax", softmax()))
    return layers


def softmax() -> nn.Module:
    """The classifier's last layer: class probabilities over dimension 1 (batch first)."""
    return nn.Softmax(dim=1)
