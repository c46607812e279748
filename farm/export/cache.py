"""One lowered artifact per (eager artifact, runtime, precision, batch), made once.

The eager artifact (`farm.zoo.export`: a zoo model, a user's ``module:`` or
``program:``) is the source: its sha256 covers the model, options, activation
and seed. Lowering adds the runtime, the precision and the batch (ONNX and
ExecuTorch programs and AOTInductor libraries have static shapes). The result is a ``<sha256>.farm``
artifact of kind ``onnx``, ``pte`` or ``pt2`` (`farm.engine.bundle`) in the same cache,
found again through an index entry that also keeps what making it cost (export
seconds, bytes) and how it agrees with eager; a model a runtime cannot take is
remembered too, with the runtime's reason, so it is not lowered again each task.
The index key covers the exporter's code and the versions of torch, onnx,
onnxruntime and executorch.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from farm import zoo
from farm.engine import artifact, bundle
from farm.errors import CannotLower
from farm.zoo import exporter

RUNTIME_KIND = {"onnxruntime": bundle.KIND_ONNX, "executorch": bundle.KIND_PTE,
                "aoti": bundle.KIND_PT2}  # fmt: skip
LOWERS_AS = {"executorch-native": "executorch"}
"""Runtimes that run another's artifact: farm's C++ runner takes the executorch .pte."""


@dataclass(frozen=True)
class Exported:
    """What deploys for one cell, and what making it cost."""

    ref: exporter.ArtifactRef
    runtime: str = "eager"
    precision: str = "fp32"
    export_s: float | None = None  # seconds lowering took when the artifact was made
    agreement: dict[str, Any] | None = None  # vs eager: max_abs_diff, top1, n
    source_sha256: str | None = None  # the eager artifact it was lowered from
    notes: list[str] = field(default_factory=list)
    target: dict[str, Any] | None = None  # what a compiled library is bound to (aoti)

    @property
    def path(self) -> Path:
        return self.ref.path

    @property
    def sha256(self) -> str:
        return self.ref.sha256

    @property
    def size_bytes(self) -> int:
        return self.ref.size_bytes

    @property
    def companions(self) -> tuple[Path, ...]:
        return self.ref.companions

    def record(self) -> dict[str, Any]:
        """The result's ``artifact`` field: what the store keeps about the artifact."""
        return {
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "runtime": self.runtime,
            "precision": self.precision,
            "export_s": self.export_s,
            "agreement": self.agreement,
            "source_sha256": self.source_sha256,
        }


def export(
    ref: Any,
    *,
    runtime: str = "eager",
    precision: str = "fp32",
    activation: str | None = "relu",
    seed: int = 0,
    batch: int = 1,
    cache_dir: str | Path,
) -> Exported:
    """The artifact ``runtime`` runs for model ``ref`` in ``precision``; `CannotLower`
    with the runtime's own reason when it cannot take it."""
    runtime = LOWERS_AS.get(runtime, runtime)
    # through the package: it registers the zoo's models on first use (farm.zoo is lazy)
    eager = zoo.export(ref, activation=activation, seed=seed, cache_dir=cache_dir)
    if runtime == "eager":
        if precision != "fp32":
            raise CannotLower(
                "eager runs fp32 only (int8 cells are the onnxruntime, executorch and "
                "aoti runtimes' static quantization)"
            )
        return Exported(eager)
    if runtime not in RUNTIME_KIND:
        raise CannotLower(f"farm cannot export for runtime {runtime!r}")
    cache_dir = Path(cache_dir).expanduser()
    key = {"kind": "lowered", "source": eager.sha256, "runtime": runtime,
           "precision": precision, "batch": batch, "exporter": _code_digest()}  # fmt: skip
    found = _lookup(cache_dir, key)
    if found is not None:
        return found
    try:
        made = _lower(eager, runtime, precision, batch, cache_dir)
    except CannotLower as exc:
        _remember(cache_dir, key, {"error": str(exc)})
        raise
    _remember(cache_dir, key, {**made.record(), "name": made.ref.name, "params": made.ref.params,
                               "target": made.target})  # fmt: skip
    return made


def _lower(
    eager: exporter.ArtifactRef, runtime: str, precision: str, batch: int, cache_dir: Path
) -> Exported:
    import torch

    from farm.export import agree, aoti, lower

    loaded = artifact.load(eager.path)
    example = loaded.example_input("cpu", batch=batch)
    example = example if isinstance(example, tuple) else (example,)
    module = lower.export_ready(loaded.module)
    calibration = lower.calibration_set(example) if precision == "int8" else None
    kind = RUNTIME_KIND[runtime]
    began = time.perf_counter()
    try:
        if kind == bundle.KIND_ONNX:
            program = lower.to_onnx(module, example)
            if calibration is not None:
                program = lower.onnx_int8(program, calibration)
        elif kind == bundle.KIND_PT2:
            program = aoti.to_pt2(module, example, calibration)
        else:
            program = lower.to_pte(module, example, calibration)
    except Exception as exc:  # exporters raise anything; every one means "cannot lower"
        raise CannotLower(f"{runtime} {precision}: {_one_line(exc)}") from exc
    export_s = time.perf_counter() - began
    items = agree.inputs(example)
    reference = agree.eager_outputs(loaded.module, items)
    outputs = {bundle.KIND_ONNX: agree.onnx_outputs, bundle.KIND_PTE: agree.pte_outputs,
               bundle.KIND_PT2: aoti.outputs}[kind]  # fmt: skip
    try:
        found = outputs(program, items)
    except Exception as exc:  # a program that lowered but does not run: it does not fit
        raise CannotLower(f"{runtime} {precision}: does not run: {_one_line(exc)}") from exc
    agreement = agree.compare(reference, found).to_json()
    shapes = [[int(d) for d in t.shape] for t in example]
    manifest = {
        "format": artifact.FORMAT,
        "kind": kind,
        "name": eager.name,
        "runtime": runtime,
        "precision": precision,
        "source_sha256": eager.sha256,
        "params": eager.params,
        "input_shape": shapes[0] if len(shapes) == 1 else shapes,
        "dtype": "float32",
        "batch": batch,
        "torch": torch.__version__,
    }
    for field_name in ("activation", "options", "seed", "zoo", "source"):
        if field_name in loaded.meta:
            manifest[field_name] = loaded.meta[field_name]
    if kind == bundle.KIND_ONNX:
        manifest["nodes"] = lower.onnx_nodes(program)
    target = aoti.target() if kind == bundle.KIND_PT2 else None
    if target is not None:
        manifest["target"] = target
    ref = exporter._store(
        cache_dir, None, manifest, {bundle.MEMBERS[kind]: program}, eager.name, eager.params
    )
    return Exported(ref, runtime, precision, round(export_s, 3), agreement, eager.sha256,
                    target=target)  # fmt: skip


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    for line in lines:  # the runtime's own words, where a long message has them
        if "Missing operator" in line or "xnn_status" in line or "not supported" in line:
            text = line
            break
    return text[:300]


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("torch", "onnx", "onnxruntime", "onnxscript", "executorch", "torchao"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


_DIGEST: list[str] = []


def _code_digest() -> str:
    if not _DIGEST:
        digest = hashlib.sha256(json.dumps(_versions(), sort_keys=True).encode())
        here = Path(__file__).parent
        for name in ("lower.py", "agree.py", "cache.py", "aoti.py"):
            digest.update((here / name).read_bytes())
        _DIGEST.append(digest.hexdigest())
    return _DIGEST[0]


def _lookup(cache_dir: Path, key: dict[str, Any]) -> Exported | None:
    try:
        entry = json.loads(exporter._index_path(cache_dir, key).read_text())
    except (OSError, ValueError):
        return None
    if "error" in entry:
        raise CannotLower(entry["error"])
    try:
        path = cache_dir / f"{entry['sha256']}.farm"
        if path.stat().st_size != entry["size_bytes"]:
            return None
        ref = exporter.ArtifactRef(
            entry["sha256"], path, entry["name"], entry["size_bytes"], entry["params"]
        )
        return Exported(ref, entry["runtime"], entry["precision"], entry["export_s"],
                        entry["agreement"], entry["source_sha256"],
                        target=entry.get("target"))  # fmt: skip
    except (OSError, KeyError, TypeError):
        return None


def _remember(cache_dir: Path, key: dict[str, Any], entry: dict[str, Any]) -> None:
    path = exporter._index_path(cache_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entry, sort_keys=True))
    os.replace(tmp, path)
