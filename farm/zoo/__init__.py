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

# Importing the model files registers them.
from farm.zoo import alexnet, deepear, kws, svhn  # noqa: F401
from farm.zoo.exporter import ArtifactRef, export
from farm.zoo.registry import REGISTRY, ModelInfo, Registry, register

__all__ = ["REGISTRY", "ArtifactRef", "ModelInfo", "Registry", "export", "get", "names", "register"]


def names() -> list[str]:
    """The zoo's model names, sorted."""
    return REGISTRY.names()


def get(name: str) -> ModelInfo:
    """A model's `ModelInfo`; an unknown name is a `farm.errors.UserError`."""
    return REGISTRY.get(name)
