"""The model zoo: the four models of Lane et al. 2015 (Table 1), and artifact export.

    alexnet   Krizhevsky et al. 2012, grouped convolutions and LRN, 3×227×227 -> 1000
    svhn      the Torch7 tutorial's SVHN CNN, 3×32×32 -> 10
    kws       Deep KWS, 40 frames × 40 log-mel -> 23
    deepear   DeepEar's emotion, speaker and ambient DNNs on one 224-feature frame

Every model takes ``activation`` (``relu``, ``sigmoid``, ``tanh``) for the paper's Table 7.
Weights are seeded random: latency, energy and memory depend on the shapes of the weights,
not on their trained values, so nothing is downloaded and every export is reproducible.

    >>> from farm import zoo
    >>> zoo.names()
    ['alexnet', 'deepear', 'kws', 'svhn']
    >>> ref = zoo.export("kws", cache_dir="/tmp/farm-cache")   # -> ArtifactRef
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from farm.zoo.exporter import ArtifactRef, export
    from farm.zoo.registry import REGISTRY, ModelInfo, Registry, register

__all__ = ["REGISTRY", "ArtifactRef", "ModelInfo", "Registry", "export", "get", "names", "register"]

NAMES: tuple[str, ...] = ("alexnet", "deepear", "kws", "svhn")
"""The zoo's models, each the module ``farm.zoo.<name>`` that registers it. Known
without importing torch: ``farm submit`` validates a job against these names before
anything heavy loads (a bad job is refused in a fraction of a second); torch is
imported when a model is looked up or built. A test checks they are exactly the
registered ones."""

_LAZY = {
    "REGISTRY": "farm.zoo.registry",
    "ModelInfo": "farm.zoo.registry",
    "Registry": "farm.zoo.registry",
    "register": "farm.zoo.registry",
    "ArtifactRef": "farm.zoo.exporter",
    "export": "farm.zoo.exporter",
}


def names() -> list[str]:
    """The zoo's model names, sorted (no torch import)."""
    return sorted(NAMES)


def get(name: str) -> ModelInfo:
    """A model's `ModelInfo`; an unknown name is a `farm.errors.UserError`."""
    return _registered().get(name)


def _registered() -> Registry:
    """The registry with every zoo model in it (importing torch and the model files)."""
    for name in NAMES:
        importlib.import_module(f"farm.zoo.{name}")
    from farm.zoo.registry import REGISTRY

    return REGISTRY


def __getattr__(attr: str) -> Any:
    """``zoo.export``, ``zoo.REGISTRY``, ...: loaded, with every model registered, on first use."""
    if attr not in _LAZY:
        raise AttributeError(f"module 'farm.zoo' has no attribute {attr!r}")
    _registered()
    return getattr(importlib.import_module(_LAZY[attr]), attr)
