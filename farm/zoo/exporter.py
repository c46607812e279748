"""Turn a model reference into a ``<sha256>.farm`` artifact in a cache directory.

The bytes are a function of (model, options, activation, seed) and the torch version:
weights are seeded random, drawn under ``torch.manual_seed(seed)`` in a forked RNG so the
caller's generator is untouched. Latency, energy and memory do not depend on what the
weights have learned, only on their shapes, so nothing is downloaded.

Caching. For zoo models and ``.pt2`` files a small index (``<cache_dir>/index/<key>.json``)
maps what was asked for to the artifact already written, so a second export neither
rebuilds the model nor rewrites the file. The key covers the model file's own source, so
editing a model invalidates it. A factory model is always rebuilt (its code lives outside
farm and may have changed), but an artifact whose bytes already exist is not rewritten.
Its package zip is rebuilt from the sources each time: an edited file changes its sha256,
so the manifest, the artifact's name and what deploys all change with it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from farm.engine import artifact, files, package
from farm.errors import UserError
from farm.zoo import alexnet, deepear, kws, svhn, user  # noqa: F401  (a model file registers itself: zoo.NAMES)
from farm.zoo.registry import REGISTRY


@dataclass(frozen=True)
class ArtifactRef:
    """Where an exported artifact is, and what it holds."""

    sha256: str
    path: Path
    name: str
    size_bytes: int
    params: int
    companions: tuple[Path, ...] = ()  # files that deploy beside it (a user's package)


def export(
    ref: Any,
    *,
    activation: str | None = "relu",
    seed: int = 0,
    cache_dir: str | Path,
) -> ArtifactRef:
    """Export ``ref`` (a zoo name, or an object shaped like the spec's ModelRef with
    ``name, zoo, module, program, options, input_shape``) into ``cache_dir``.

    ``activation`` applies to zoo models (None means their default, relu). User models
    are measured as built, so they accept only relu or None and record ``activation: null``.
    """
    cache_dir = Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(ref, str):
        return _export_zoo(ref, ref, {}, None, activation or "relu", seed, cache_dir)
    name = getattr(ref, "name", None)
    options = dict(getattr(ref, "options", None) or {})
    shape = getattr(ref, "input_shape", None)
    if not isinstance(name, str) or not name:
        raise UserError(f"model reference {ref!r} has no name")
    module_path = getattr(ref, "module", None)
    program_path = getattr(ref, "program", None)
    if module_path or program_path:
        if activation not in (None, "relu"):
            raise UserError(f"model {name!r}: activation variants apply to zoo models only")
        if module_path and program_path:
            raise UserError(f"model {name!r}: give either module or program, not both")
        if module_path:
            return _export_factory(name, module_path, options, shape, seed, cache_dir)
        return _export_program(name, Path(program_path), options, shape, cache_dir)
    zoo = getattr(ref, "zoo", None) or name
    return _export_zoo(name, zoo, options, shape, activation or "relu", seed, cache_dir)


# ------------------------------------------------------------------------ the kinds


def _export_zoo(
    name: str,
    zoo: str,
    options: dict[str, Any],
    shape: Any,
    activation: str,
    seed: int,
    cache_dir: Path,
) -> ArtifactRef:
    info = REGISTRY.get(zoo)
    if "activation" in options:
        raise UserError(f"model {name!r}: set activation as a variant, not an option")
    if shape is not None and _tuple_shape(shape) != info.input_shape:
        raise UserError(
            f"model {name!r}: input_shape {list(shape)} differs from {zoo}'s {list(info.input_shape)}"
        )
    key = {
        "kind": "zoo",
        "name": name,
        "zoo": zoo,
        "options": _jsonable(options, name),
        "activation": activation,
        "seed": seed,
        "model_source": _source_digest(info.builder),
    }
    cached = _lookup(cache_dir, key)
    if cached is not None:
        return cached
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = info.build(activation, **options)
    if not isinstance(module, artifact.GraphModule):
        raise TypeError(f"zoo model {zoo!r} must build a farm.engine.artifact.GraphModule")
    params = _count(module)
    manifest = _manifest(
        name=name,
        kind=artifact.KIND_GRAPH,
        source=info.source,
        params=params,
        activation=activation,
        input_shape=list(info.input_shape),
        dtype="float32",
        options=key["options"],
        seed=seed,
    )
    manifest["zoo"] = zoo
    manifest["graph"] = module.describe()
    weights = io.BytesIO()
    torch.save(module.state_dict(), weights)
    return _store(cache_dir, key, manifest, {artifact.WEIGHTS: weights.getvalue()}, name, params)


def _export_factory(
    name: str, path: str, options: dict[str, Any], shape: Any, seed: int, cache_dir: Path
) -> ArtifactRef:
    """The user's eager module: seeded weights in the artifact, their package beside it
    (``<sha256>.pkg``), the factory and its arguments in the manifest for the board."""
    if shape is None:
        raise UserError(f"model {name!r}: a module model needs input_shape (batch first)")
    shipped = files.store(user.package_zip(path), cache_dir, package.PACKAGE_SUFFIX)
    # built from the zip that ships, so the weights fit the code the board will run
    # even when the sources changed since this process first imported them
    package.activate(shipped, path, replace_imported=True)
    module = user.build_module(path, options, seed)
    user.check_forward(module, shape, f"model {name!r}")
    params = _count(module)
    manifest = _manifest(
        name=name,
        kind=artifact.KIND_MODULE,
        source=f"module {path}",
        params=params,
        activation=None,
        input_shape=_json_shape(shape),
        dtype="float32",
        options=_jsonable(options, name),
        seed=seed,
    )
    manifest["factory"] = path
    manifest["package_sha256"] = shipped.name[: -len(package.PACKAGE_SUFFIX)]
    weights = io.BytesIO()
    torch.save(module.state_dict(), weights)
    ref = _store(cache_dir, None, manifest, {artifact.WEIGHTS: weights.getvalue()}, name, params)
    return dataclasses.replace(ref, companions=(shipped,))


def _export_program(
    name: str, path: Path, options: dict[str, Any], shape: Any, cache_dir: Path
) -> ArtifactRef:
    if options:
        raise UserError(f"model {name!r}: an exported program takes no options")
    try:
        data = path.expanduser().read_bytes()
    except OSError as exc:
        raise UserError(f"model {name!r}: cannot read {str(path)!r}: {exc}") from exc
    key = {"kind": "program", "name": name, "program_sha256": hashlib.sha256(data).hexdigest()}
    key["input_shape"] = None if shape is None else _json_shape(shape)
    cached = _lookup(cache_dir, key)
    if cached is not None:
        return cached
    program = user.read_program(path.expanduser())
    found_shape, dtype = user.program_inputs(program, path)
    if shape is not None and _json_shape(shape) != found_shape:
        raise UserError(
            f"model {name!r}: input_shape {list(shape)} differs from the program's {found_shape}"
        )
    params = sum(p.numel() for p in program.parameters())
    manifest = _manifest(
        name=name,
        kind=artifact.KIND_PROGRAM,
        source=f"program {path}",
        params=params,
        activation=None,
        input_shape=found_shape,
        dtype=dtype,
        options={},
        seed=None,
    )
    # The user's .pt2 goes in verbatim: the artifact then holds exactly what they gave.
    return _store(cache_dir, key, manifest, {artifact.PROGRAM: data}, name, params)


# -------------------------------------------------------------------------- helpers


def _manifest(**fields: Any) -> dict[str, Any]:
    return {"format": artifact.FORMAT, **fields}


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _tuple_shape(shape: Any) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in shape)
    except (TypeError, ValueError) as exc:
        raise UserError(f"input_shape {shape!r} must be a list of integers") from exc


def _json_shape(shape: Any) -> list:
    try:
        shapes = artifact.input_shapes(shape)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    as_lists = [list(s) for s in shapes]
    return as_lists[0] if len(as_lists) == 1 else as_lists


def _jsonable(options: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Options as canonical JSON values (tuples become lists), or a UserError."""
    try:
        return json.loads(json.dumps(dict(options), sort_keys=True))
    except (TypeError, ValueError) as exc:
        raise UserError(f"model {name!r}: options must be plain JSON values: {exc}") from exc


def _source_digest(builder: Any) -> str:
    """sha256 of the model's file and of the artifact format, for the cache key."""
    digest = hashlib.sha256(torch.__version__.encode())
    for path in (sys.modules[builder.__module__].__file__, artifact.__file__, __file__):
        digest.update(Path(str(path)).read_bytes())
    return digest.hexdigest()


def _index_path(cache_dir: Path, key: Mapping[str, Any]) -> Path:
    blob = json.dumps({"format": artifact.FORMAT, **key}, sort_keys=True).encode()
    return cache_dir / "index" / f"{hashlib.sha256(blob).hexdigest()}.json"


def _lookup(cache_dir: Path, key: Mapping[str, Any]) -> ArtifactRef | None:
    """The artifact an earlier export wrote for ``key``, if it is still there intact in size."""
    try:
        entry = json.loads(_index_path(cache_dir, key).read_text())
        path = cache_dir / f"{entry['sha256']}.farm"
        if path.stat().st_size != entry["size_bytes"]:
            return None
        return ArtifactRef(
            entry["sha256"], path, entry["name"], entry["size_bytes"], entry["params"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store(
    cache_dir: Path,
    key: Mapping[str, Any] | None,
    manifest: Mapping[str, Any],
    members: Mapping[str, bytes],
    name: str,
    params: int,
) -> ArtifactRef:
    """Write the zip to a temp file, name it by its hash; keep an existing copy untouched."""
    fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=".export-", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        artifact.write(tmp, manifest, members)
        sha = artifact.sha256_file(tmp)
        final = cache_dir / f"{sha}.farm"
        if final.exists():
            tmp.unlink()
        else:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    ref = ArtifactRef(sha, final, name, final.stat().st_size, params)
    if key is not None:
        _write_index(cache_dir, key, ref)
    return ref


def _write_index(cache_dir: Path, key: Mapping[str, Any], ref: ArtifactRef) -> None:
    path = _index_path(cache_dir, key)
    path.parent.mkdir(exist_ok=True)
    entry = {"sha256": ref.sha256, "name": ref.name, "size_bytes": ref.size_bytes}
    entry["params"] = ref.params
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entry, sort_keys=True))
    os.replace(tmp, path)
