"""AOTInductor: kind ``pt2`` artifacts, a model compiled to a shared library on the station.

The station (`farm.export.aoti`) compiles with its ``g++``; the board needs torch
(the library calls libtorch's kernels) and no compiler:
``torch._inductor.aoti_load_package`` opens the package and the engine times its
call with the common loop. torch is imported only inside this module's methods.

The library is bound to what it was compiled for (the manifest's ``target``): the
CPU architecture, the vector instruction set's CPU flags, and the torch version.
A board that differs is refused before loading (`Unfit`: does not fit, with the
reason); the station refuses it earlier from the board's probe.

Threads: the library is compiled with Inductor's ``cpp.dynamic_threads``, so its
parallel loops ask OpenMP for the count each time they run, and the aten kernels
it calls read torch's: ``torch.set_num_threads`` changes the count in a warm
engine too (the same OpenMP runtime, libtorch's libgomp, serves both).

No per-operator rows: the library records nothing for ``torch.profiler`` unless
Inductor compiles it with ``cpp.enable_kernel_profile`` (a ``RECORD_FUNCTION`` per
kernel and per aten call), which made kws 43% slower (64 us against 45 us, 1
thread); the library is timed as built, without it, and the result says why it
has no layer rows, as ExecuTorch's does.
"""

from __future__ import annotations

import platform
import zipfile
from typing import Any

from farm.engine import bundle
from farm.engine.runtimes.base import (
    Profile,
    Runtime,
    RuntimeUnavailable,
    Session,
    register,
)

NO_ROWS = (
    "the AOTInductor library is built without Inductor's kernel profiling "
    "(cpp.enable_kernel_profile, a RECORD_FUNCTION per kernel, made kws 43% slower): "
    "torch.profiler sees none of its kernels, so no per-operator rows"
)


class NotForThisBoard(RuntimeUnavailable):
    """The library was compiled for another architecture, CPU or torch (the reason): the
    task does not fit."""


@register("aoti")
class AOTInductor(Runtime):
    kinds = (bundle.KIND_PT2,)
    needs_torch = True
    library = "torch"

    def set_threads(self, threads: int) -> int:
        from farm.engine import host

        return host.apply_threads(threads)

    def load(self, path: str, manifest: dict[str, Any]) -> AotiSession:
        import torch

        why = unfit(manifest.get("target") or {}, platform.machine(), torch.__version__,
                    cpu_flags())  # fmt: skip
        if why is not None:
            raise NotForThisBoard(why)
        return AotiSession(path, manifest)


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags (/proc/cpuinfo's ``flags``/``Features``), None where unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        return None
    return None


def unfit(target: dict[str, Any], machine: str, torch_version: str,
          flags: set[str] | None) -> str | None:  # fmt: skip
    """Why this board cannot load a library compiled for ``target``, or None."""
    if not target:
        return "the artifact records no target (architecture, torch): export it again"
    if target.get("machine") != machine:
        return (
            f"the AOTInductor library is compiled for {target.get('machine')}; "
            f"this board is {machine}"
        )
    if target.get("torch") != torch_version:
        return (
            f"the AOTInductor library is compiled against torch {target.get('torch')}; "
            f"this board has torch {torch_version}"
        )
    missing = sorted(set(target.get("cpu_flags") or []) - flags) if flags is not None else []
    if missing:
        return (
            f"the AOTInductor library uses {target.get('cpu_isa')} instructions; this CPU "
            f"lacks {', '.join(missing)}"
        )
    return None


class AotiSession(Session):
    form = "aoti"
    impl = "aoti_load_package"

    def __init__(self, path: str, manifest: dict[str, Any]) -> None:
        import torch
        from torch._inductor import aoti_load_package

        package = bundle.extract(path, bundle.MEMBERS[bundle.KIND_PT2])
        with zipfile.ZipFile(path) as archive:  # the library and its weights
            self.param_bytes = archive.getinfo(bundle.MEMBERS[bundle.KIND_PT2]).file_size
        self.inputs = bundle.example_inputs(manifest)
        self._runner = runner = aoti_load_package(package)
        args = tuple(torch.from_numpy(a) for a in self.inputs)
        # the library runs no autograd: a call is the runner's, with nothing around it
        self.call = lambda: runner(*args)

    def output(self) -> Any:
        out = self.call()  # type: ignore[misc]
        return (out[0] if isinstance(out, (list, tuple)) else out).numpy()

    def profile(self, iterations: int) -> Profile:
        return Profile([], 0.0, 0, "torch.profiler", [NO_ROWS])
