"""The study's words for layers, and what they mean in PyTorch: one place, stated.

Lane et al. (2015) name seven layer types in Tables 5 and 6: convolution,
non-linear, normalization, pooling, feed-forward, dropout and softmax. farm's
layer rows name a PyTorch module class (``type``: ``Conv2d``, ``ReLU``...) and,
for a user's model timed node by node, the kind of operation (``kind``:
``conv``, ``nonlinear``, ``linear``...). ``study_type`` maps either to the
study's word, or to ``None``: work the study has no word for (a ``Flatten``,
attention, elementwise glue, the ``(graph)`` row that bills the time between
layers). Tables 5-7 and their findings read layers only through this module.

The study's two groups (Table 5's line between layers 15 and 16): in a CNN every
layer before the first feed-forward one is *feature extraction*
(convolution-oriented), the rest *classification*. A DNN has no feature
extraction: it is feed-forward throughout.

Table 7 counts the *activation* layers only: ``non-linear``. Normalization
(AlexNet's local response normalization) and softmax are types of their own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

STUDY_TYPES = (
    "convolution", "non-linear", "normalization", "pooling", "feed-forward", "dropout", "softmax",
)  # fmt: skip
"""The study's layer types, in the words of its Tables 5 and 6."""

MODULES: dict[str, frozenset[str]] = {
    "convolution": frozenset(
        {"Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
         "LazyConv1d", "LazyConv2d", "LazyConv3d"}
    ),
    "non-linear": frozenset(
        {"ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU", "SiLU",
         "Mish", "Sigmoid", "Hardsigmoid", "LogSigmoid", "Tanh", "Hardtanh", "Hardswish",
         "Softplus", "Softsign", "Tanhshrink", "Threshold", "GLU"}
    ),
    "normalization": frozenset(
        {"LocalResponseNorm", "CrossMapLRN2d", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
         "LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
         "RMSNorm"}
    ),
    "pooling": frozenset(
        {"MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
         "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "AdaptiveMaxPool1d",
         "AdaptiveMaxPool2d", "AdaptiveMaxPool3d", "LPPool1d", "LPPool2d", "FractionalMaxPool2d"}
    ),
    "feed-forward": frozenset({"Linear", "LazyLinear", "Bilinear"}),
    "dropout": frozenset(
        {"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"}
    ),
    "softmax": frozenset({"Softmax", "Softmax2d", "LogSoftmax", "Softmin"}),
}  # fmt: skip
"""The study's type -> PyTorch module classes (``type`` of a layer row)."""

KINDS: dict[str, str | None] = {
    "conv": "convolution",
    "nonlinear": "non-linear",  # a softmax module's rows become "softmax" (see study_type)
    "norm": "normalization",
    "pooling": "pooling",
    "linear": "feed-forward",  # a product with a weight: a fully-connected layer
    "dropout": "dropout",
    "matmul": None,  # a product of two activations: no layer of the study's
    "attention": None,
    "layout": None,
    "reduction": None,
    "elementwise": None,
    "other": None,
    "graph": None,  # the time between layers, billed to the graph
}
"""An exported graph's operation kind (``kind`` of a layer row) -> the study's type."""

_OF_MODULE = {cls: study for study, classes in MODULES.items() for cls in classes}

ACTIVATION = "non-linear"
"""The type Table 7 counts."""


def study_type(row: Mapping[str, Any]) -> str | None:
    """The study's type of one layer row (``type``, and ``kind`` when a graph's), or None.

    Rows carry their own study type when they are the study's (``study_type``)."""
    if "study_type" in row:
        return row["study_type"]
    module = _OF_MODULE.get(row.get("type") or "")
    kind = row.get("kind")
    if kind is None:
        return module
    if kind == "nonlinear" and module == "softmax":
        return "softmax"
    if kind in ("nonlinear", "norm", "dropout") and module is not None:
        return module  # the owning module says more than the operation (e.g. LRN's ops)
    return KINDS.get(kind)


def is_layer_of_the_graph(row: Mapping[str, Any]) -> bool:
    """The ``(graph)`` row: time between layers, in no group of the study's."""
    return row.get("kind") == "graph" or row.get("name") == "(graph)"


def is_cnn(rows: Iterable[Mapping[str, Any]]) -> bool:
    return any(study_type(r) == "convolution" for r in rows)


def group(rows: list[Mapping[str, Any]]) -> list[str | None]:
    """Each row's group: ``feature extraction``, ``classification``, or None (the graph row).

    A CNN's rows before its first feed-forward layer extract features; a DNN's rows
    all classify."""
    cnn = is_cnn(rows)
    seen_ff = not cnn
    out: list[str | None] = []
    for r in rows:
        if is_layer_of_the_graph(r):
            out.append(None)
            continue
        seen_ff = seen_ff or study_type(r) == "feed-forward"
        out.append("classification" if seen_ff else "feature extraction")
    return out


def _time(r: Mapping[str, Any]) -> float:
    return float(r.get("time_ms") or 0.0)


def split(rows: list[Mapping[str, Any]]) -> dict[str, tuple[float, float]]:
    """{group: (share of time, share of parameters)} over the layers (the graph row apart).

    A DNN has no ``feature extraction`` entry: it has none."""
    groups = group(rows)
    layers = [(r, g) for r, g in zip(rows, groups, strict=True) if g is not None]
    total_t = math.fsum(_time(r) for r, _ in layers) or 1.0
    total_p = sum(r.get("params") or 0 for r, _ in layers) or 1
    out = {}
    for name in ("feature extraction", "classification"):
        part = [r for r, g in layers if g == name]
        if part:
            out[name] = (
                math.fsum(_time(r) for r in part) / total_t,
                sum(r.get("params") or 0 for r in part) / total_p,
            )
    return out


def type_shares(rows: list[Mapping[str, Any]]) -> dict[str, float]:
    """Share of the layers' time by the study's type (others under ``other``), largest first.
    The graph row is not a layer: it is left out."""
    layers = [r for r in rows if not is_layer_of_the_graph(r)]
    total = math.fsum(_time(r) for r in layers) or 1.0
    out: dict[str, float] = {}
    for r in layers:
        key = study_type(r) or "other"
        out[key] = out.get(key, 0.0) + _time(r) / total
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def activation_share(rows: list[Mapping[str, Any]]) -> float | None:
    """Table 7's figure: the activation layers' share of the layers' time (None: no layers)."""
    layers = [r for r in rows if not is_layer_of_the_graph(r)]
    if not layers:
        return None
    return type_shares(layers).get(ACTIVATION, 0.0)


def study_rows(layers: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The reference data's layer rows (Tables 5, 6) in the shape of farm's: percent as
    time, the study's type as it is."""
    return [
        {"name": f"layer {r['layer']}", "study_type": r["type"], "params": r.get("params") or 0,
         "time_ms": r["percent"]}
        for r in layers
    ]  # fmt: skip


def truncated(x: float, digits: int = 1) -> float:
    """A figure as the study prints it: truncated, not rounded (60,965,224 parameters
    print as 60.9M; 2.3M of 60.9M, 3.78%, prints as 3.7%)."""
    scale = 10**digits
    return math.floor(x * scale + 1e-9) / scale
