"""The runtimes an engine can measure with, registered by name (see `base`).

    eager        torch as the model was written (the zoo's graphs, users' modules)
    onnxruntime  ONNX Runtime, CPU execution provider (no torch needed)
    executorch   ExecuTorch + XNNPACK (pybindings, or the board's native runner)
    executorch-native  the same .pte through farm's C++ runner (`farm.engine.native`)
    aoti         AOTInductor: a library compiled on the station, loaded by torch here

Importing this package imports no runtime library: each module imports its own
when it loads a model, so a board without torch can run onnxruntime.
"""

from __future__ import annotations

from farm.engine.runtimes import aoti, eager, et, native, ort  # noqa: F401  (they register themselves)
from farm.engine.runtimes.base import (
    PRECISIONS,
    REGISTRY,
    OpRow,
    Profile,
    Runtime,
    RuntimeUnavailable,
    Session,
    ThreadsFixed,
    register,
)

__all__ = [
    "PRECISIONS",
    "REGISTRY",
    "OpRow",
    "Profile",
    "Runtime",
    "RuntimeUnavailable",
    "Session",
    "ThreadsFixed",
    "get",
    "names",
    "register",
]


def get(name: str) -> Runtime:
    return REGISTRY.get(name)


def names() -> list[str]:
    return REGISTRY.names()
