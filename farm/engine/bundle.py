"""Reading an artifact's manifest and members without torch.

Every artifact is a ``<sha256>.farm`` zip with a ``manifest.json``
(`farm.engine.artifact` documents the format and writes it). Eager artifacts
(kinds ``graph``, ``module``, ``program``) need torch to load; a runtime's
artifact (kind ``onnx`` with member ``model.onnx``, kind ``pte`` with member
``model.pte``, kind ``pt2`` with member ``model.pt2``) needs only its runtime, so a board without torch reads it here:
standard library and numpy (which every runtime's Python package brings).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import zipfile
from pathlib import Path
from typing import Any

from farm.engine.files import sha256_file

MANIFEST = "manifest.json"
KIND_ONNX = "onnx"
KIND_PTE = "pte"
KIND_PT2 = "pt2"  # an AOTInductor package (a compiled library and its weights)
MEMBERS = {KIND_ONNX: "model.onnx", KIND_PTE: "model.pte", KIND_PT2: "model.pt2"}
INPUT_SEED = 0  # as `farm.engine.artifact.INPUT_SEED`

_SHA_NAME = re.compile(r"^([0-9a-f]{64})\.farm$")


class BundleError(ValueError):
    """The artifact is corrupt, of another kind, or misses a member."""


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of the artifact at ``path`` (no hash check: see `verified`)."""
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(archive.read(MANIFEST))
    except (OSError, KeyError, zipfile.BadZipFile, ValueError) as exc:
        raise BundleError(f"{path}: not a farm artifact: {exc}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: the manifest is not an object")
    return manifest


def verified(path: str | Path) -> str:
    """The artifact's sha256; a ``<sha256>.farm`` file must hash to its name."""
    path = Path(path)
    digest = sha256_file(path)
    named = _SHA_NAME.match(path.name)
    if named and named.group(1) != digest:
        raise BundleError(f"{path}: content hashes to {digest}, refusing a corrupted artifact")
    return digest


def member_bytes(path: str | Path, member: str) -> bytes:
    with zipfile.ZipFile(path) as archive:
        try:
            return archive.read(member)
        except KeyError as exc:
            raise BundleError(f"{path}: member {member} is missing") from exc


def extract(path: str | Path, member: str) -> str:
    """``member`` written once beside the artifact as ``<artifact stem>.<member>``, for
    runtimes that open a file (mmap) rather than bytes; the path of that file."""
    path = Path(path)
    target = path.with_name(f"{path.stem}.{member}")
    if not target.exists():
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            tmp.write_bytes(member_bytes(path, member))
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return str(target)


def input_shapes(manifest: dict[str, Any]) -> list[tuple[int, ...]]:
    value = manifest.get("input_shape")
    if isinstance(value, list) and value and isinstance(value[0], list):
        return [tuple(s) for s in value]
    if isinstance(value, list) and value:
        return [tuple(value)]
    raise BundleError(f"input_shape {value!r} must be a list of positive integers")


def example_inputs(manifest: dict[str, Any], batch: int = 1) -> list[Any]:
    """Seeded float32 inputs of the manifest's shapes (first dimension times ``batch``)."""
    import numpy as np

    rng = np.random.default_rng(INPUT_SEED)
    return [
        rng.standard_normal((s[0] * batch, *s[1:])).astype(np.float32)
        for s in input_shapes(manifest)
    ]
