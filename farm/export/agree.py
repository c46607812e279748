"""How closely a lowered model agrees with eager, on a seeded input set.

Computed on the station when the artifact is made: the largest absolute
difference between the two first outputs, and the share of inputs whose top-1
class (argmax over dimension 1) is the same. ExecuTorch runs in a child process:
its thread pool belongs to the process that first loads a program and must not
be sized by the station's check before an engine in the same process sizes it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

AGREEMENT_SEED = 2
AGREEMENT_SIZE = 32
TOP1_WARN = 0.99  # an int8 cell below this agreement carries a warning


@dataclass(frozen=True)
class Agreement:
    max_abs_diff: float
    top1: float
    n: int

    def to_json(self) -> dict[str, Any]:
        return {"max_abs_diff": self.max_abs_diff, "top1": self.top1, "n": self.n}


def inputs(example: tuple[torch.Tensor, ...], n: int = AGREEMENT_SIZE) -> list[list[np.ndarray]]:
    generator = torch.Generator().manual_seed(AGREEMENT_SEED)
    return [
        [torch.randn(t.shape, generator=generator, dtype=t.dtype).numpy() for t in example]
        for _ in range(n)
    ]


def eager_outputs(module: nn.Module, items: list[list[np.ndarray]]) -> list[np.ndarray]:
    with torch.inference_mode():
        outs = []
        for item in items:
            out = module(*(torch.from_numpy(a) for a in item))
            outs.append((out[0] if isinstance(out, tuple) else out).numpy().copy())
    return outs


def onnx_outputs(model: bytes, items: list[list[np.ndarray]]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return [session.run(None, dict(zip(names, item, strict=True)))[0] for item in items]


_PTE_CHILD = """
import sys, numpy as np, torch
from executorch.extension.pybindings import portable_lib as pl
data = np.load(sys.argv[2])
program = open(sys.argv[1], "rb").read()  # kept: the module reads from this buffer
module = pl._load_for_executorch_from_buffer(program)
count = int(data["count"]); width = int(data["width"])
outs = []
for i in range(count):
    args = tuple(torch.from_numpy(data[f"x{i}_{j}"]) for j in range(width))
    outs.append(module.forward(args)[0].numpy())
np.save(sys.argv[3], np.stack(outs))
"""


def child_outputs(script: str, name: str, program: bytes, items: list[list[np.ndarray]]
                  ) -> list[np.ndarray]:  # fmt: skip
    """The first output on each input of ``program`` (written as ``name``), run by the
    Python ``script`` in a child process, ``script PROGRAM INPUTS.npz OUT.npy``: the
    station keeps no runtime library or weights mapped afterwards."""
    with tempfile.TemporaryDirectory(prefix="farm-agree-") as tmp:
        path, data, out = (os.path.join(tmp, n) for n in (name, "x.npz", "y.npy"))
        with open(path, "wb") as f:
            f.write(program)
        arrays = {f"x{i}_{j}": a for i, item in enumerate(items) for j, a in enumerate(item)}
        np.savez(data, count=len(items), width=len(items[0]), **arrays)
        done = subprocess.run(
            [sys.executable, "-c", script, path, data, out],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
            raise RuntimeError(lines[-1] if lines else f"exit status {done.returncode}")
        return list(np.load(out))


def pte_outputs(program: bytes, items: list[list[np.ndarray]]) -> list[np.ndarray]:
    return child_outputs(_PTE_CHILD, "m.pte", program, items)


def compare(reference: list[np.ndarray], found: list[np.ndarray]) -> Agreement:
    diff = max(float(np.max(np.abs(r - f))) for r, f in zip(reference, found, strict=True))
    same = [
        np.array_equal(
            np.argmax(r.reshape(r.shape[0], -1), 1), np.argmax(f.reshape(f.shape[0], -1), 1)
        )
        for r, f in zip(reference, found, strict=True)
    ]
    return Agreement(diff, sum(same) / len(same), len(same))
