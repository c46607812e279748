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

Per-kernel profile: the library records each generated kernel for
``torch.profiler`` (``cpp.enable_kernel_profile``): rows are Inductor's fused
kernels by name (``cpp_fused_relu_0``: the ops it fused are in the name) and the
aten kernels the library calls (``aten.convolution #2``: the second convolution
of the graph), not the model's layers: Inductor keeps no module names in them.
"""

from __future__ import annotations

import bisect
import platform
import zipfile
from typing import Any

from farm.engine import bundle
from farm.engine.runtimes.base import (
    OpRow,
    Profile,
    Runtime,
    RuntimeUnavailable,
    Session,
    register,
)

RUN = "farm.aoti.run"  # the profiler's label for one whole inference
_SHIM = "aoti_torch_cpu_"
_KERNEL_PREFIX = "graph_"  # Inductor names a recorded kernel graph_<n>_<kernel>


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
        from torch.profiler import ProfilerActivity, profile, record_function

        call = self.call
        for _ in range(3):  # the profiler's own warm-up is outside its window
            call()  # type: ignore[misc]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(iterations):
                with record_function(RUN):
                    call()  # type: ignore[misc]
        events = [(e.name, e.time_range.start, e.time_range.end) for e in prof.events()]
        return rows(events, iterations)


def rows(events: list[tuple[str, float, float]], iterations: int) -> Profile:
    """Per-kernel rows from the profiler's events ``(name, start_us, end_us)``: each
    kernel belongs to the inference (`RUN`) whose interval holds it; of those runs
    the faster half (a busy machine only adds time), rows and whole averaged over the
    same runs. A kernel the graph calls more than once is a row per call, numbered in
    graph order (``aten.addmm``, ``aten.addmm #2``, ...)."""
    runs = sorted((s, e) for name, s, e in events if name == RUN)[-iterations:]
    starts = [s for s, _ in runs]
    per_run: list[dict[str, list]] = [{} for _ in runs]
    seen: list[dict[str, int]] = [{} for _ in runs]
    for name, start, end in sorted(events, key=lambda e: e[1]):
        if name.startswith(_SHIM):
            op = "aten." + name[len(_SHIM) :].removesuffix("_out")
        elif name.startswith(_KERNEL_PREFIX) and "_cpp_" in name:
            op = "inductor"
        else:
            continue
        k = bisect.bisect_right(starts, start) - 1
        if k < 0 or start > runs[k][1]:
            continue
        nth = seen[k][name] = seen[k].get(name, 0) + 1
        base = name.split("_", 2)[2] if op == "inductor" else op
        label = base if nth == 1 else f"{base} #{nth}"
        per_run[k].setdefault(label, [0.0, op])[0] += end - start
    order = sorted(range(len(runs)), key=lambda k: runs[k][1] - runs[k][0])
    fast = sorted(order[: max(1, (len(order) + 1) // 2)]) if runs else []
    n = max(len(fast), 1)
    totals: dict[str, list] = {}
    for k in fast:
        for label, (us, op) in per_run[k].items():
            totals.setdefault(label, [0.0, op])[0] += us
    out = [OpRow(label, op, us / n / 1000) for label, (us, op) in totals.items()]
    whole_ms = sum(runs[k][1] - runs[k][0] for k in fast) / n / 1000
    notes = [
        "rows are AOTInductor's compiled kernels (Inductor's fused kernels by their "
        "generated names, aten kernels the library calls; a second call of one is '#2'), "
        "not the model's layers"
    ]
    return Profile(out, whole_ms, len(runs), "torch.profiler (aoti kernels)", notes)
