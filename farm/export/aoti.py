"""AOTInductor: a torch module compiled ahead of time to a shared library (``.pt2``).

``torch.export`` makes the graph; ``torch._inductor.aoti_compile_and_package``
generates C++ for it and compiles that with the station's ``g++`` into a
package (the library, its weights) that the board loads with
``torch._inductor.aoti_load_package`` — torch on the board, no compiler there.

What the library is bound to, recorded in the artifact's manifest (``target``)
and checked by the station (`mismatch`, against the board's probe) and again by
the board's runtime (`farm.engine.runtimes.aoti`):

- the CPU architecture (``platform.machine()``) and the instruction set Inductor
  vectorised for (``cpu_isa``, e.g. ``avx512``) with the CPU flags it needs.
  Compiled without ``-march=native`` (``cpp.march = ""``), so the code uses
  only those flags, not every instruction the station's CPU happens to have;
- the torch version: the library calls libtorch's C shim (convolutions and
  matrix products are aten's kernels) and must load against the same libtorch.

Threads: Inductor writes its parallel loops for a thread count fixed at compile
time unless ``cpp.dynamic_threads`` is on; with it every loop asks OpenMP
(``omp_get_max_threads``) when it runs, and aten's kernels read torch's count,
so ``torch.set_num_threads`` on the board governs the whole library.

Per-kernel profile: ``cpp.enable_kernel_profile`` would wrap each generated
kernel in a ``RECORD_FUNCTION`` for ``torch.profiler``, but it is not free (kws:
64 us against 45 us per inference, 1 thread), so the library is compiled without
it and ``torch.profiler`` on the board sees nothing inside it: aoti cells have no
layer rows (and Inductor keeps no module names to attribute them to).

int8: the PT2E flow with ``X86InductorQuantizer`` (static, per-channel weights;
oneDNN's quantized convolution and linear), compiled with ``freezing`` so
Inductor folds the quantize/dequantize pairs into those kernels.
"""

from __future__ import annotations

import os
import platform
import tempfile
from typing import Any

import numpy as np
import torch
from torch import nn

from farm.export import agree, lower

COMPILE_CONFIG: dict[str, Any] = {
    "cpp.dynamic_threads": True,  # torch.set_num_threads on the board governs every loop
    "cpp.march": "",  # only the vector ISA's flags, recorded in the manifest
    # not "cpp.enable_kernel_profile": a RECORD_FUNCTION per kernel made kws 43% slower
    # (64 us against 45 us, 1 thread), so the library is timed without it
}
INT8_CONFIG: dict[str, Any] = {"freezing": True}

_GCC_TO_CPUINFO = {"avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16",
                   "avx512fp16": "avx512_fp16", "amx-tile": "amx_tile",
                   "amx-bf16": "amx_bf16", "amx-int8": "amx_int8", "amx-fp16": "amx_fp16"}  # fmt: skip


def target() -> dict[str, Any]:
    """What a library compiled here is bound to: architecture, torch, vector ISA and
    the /proc/cpuinfo flags that ISA's code needs."""
    from torch._inductor import cpu_vec_isa

    isa = cpu_vec_isa.pick_vec_isa()
    flags = []
    for flag in str(getattr(isa, "_arch_flags", "") or "").split():
        if flag.startswith("-m") and not flag.startswith(("-march", "-mcpu")):
            name = flag[2:]
            flags.append(_GCC_TO_CPUINFO.get(name, name.replace("-", "_")))
    return {
        "machine": platform.machine(),
        "torch": torch.__version__,
        "cpu_isa": str(isa) or "none",
        "cpu_flags": sorted(set(flags)),
    }


def mismatch(target_: dict[str, Any], machine: str | None, torch_version: str | None) -> str | None:
    """Why a board (its probed architecture and torch version) cannot load a library
    compiled for ``target_``, or None."""
    if machine != target_.get("machine"):
        return (
            f"the AOTInductor library is compiled for {target_.get('machine')} and the board "
            f"is {machine}"
        )
    if torch_version != target_.get("torch"):
        return (
            f"the AOTInductor library is compiled against torch {target_.get('torch')} and "
            f"the board has {torch_version or 'no torch'}"
        )
    return None


def to_pt2(module: nn.Module, example: tuple[torch.Tensor, ...],
           calibration: list[tuple[torch.Tensor, ...]] | None = None) -> bytes:  # fmt: skip
    """The compiled package's bytes; int8 (PT2E, X86InductorQuantizer) when ``calibration``."""
    from torch._inductor import aoti_compile_and_package
    from torch._inductor import config as inductor

    settings = dict(COMPILE_CONFIG)
    with lower._quiet(), torch.no_grad():
        if calibration is not None:
            module = _x86_int8(module, example, calibration)
            settings.update(INT8_CONFIG)
        program = torch.export.export(module, example)
        with tempfile.TemporaryDirectory(prefix="farm-aoti-") as tmp, inductor.patch(settings):
            path = aoti_compile_and_package(program, package_path=os.path.join(tmp, "m.pt2"))
            with open(path, "rb") as f:
                return f.read()


def _x86_int8(module: nn.Module, example: tuple[torch.Tensor, ...],
              calibration: list[tuple[torch.Tensor, ...]]) -> nn.Module:  # fmt: skip
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(torch.export.export(module, example).module(), quantizer)
    for item in calibration:
        prepared(*item)
    return convert_pt2e(prepared)


_CHILD = """
import sys, numpy as np, torch
from torch._inductor import aoti_load_package
data = np.load(sys.argv[2])
runner = aoti_load_package(sys.argv[1])
outs = []
with torch.inference_mode():
    for i in range(int(data["count"])):
        got = runner(*(torch.from_numpy(data[f"x{i}_{j}"]) for j in range(int(data["width"]))))
        outs.append((got[0] if isinstance(got, (list, tuple)) else got).numpy())
np.save(sys.argv[3], np.stack(outs))
"""


def outputs(program: bytes, items: list[list[np.ndarray]]) -> list[np.ndarray]:
    """The package's first output on each input, loaded as the board loads it, in a
    child process (the station keeps no library or weights mapped afterwards)."""
    return agree.child_outputs(_CHILD, "m.pt2", program, items)
