"""ExecuTorch with the XNNPACK delegate: kind ``pte`` artifacts.

Two implementations behind one name. Where the executorch Python package is
importable (it imports torch), its pybindings load the program from bytes. Where
it is not, a native runner (`farm.engine.native`, a C++ program built on the board
from the executorch wheel's libraries) loads it and times in its own process;
the engine then takes its begin/end readings as they are.

Threads: XNNPACK's pool belongs to the process and must be sized once, before the
first program is loaded; resizing it afterwards crashes the process. The first
task fixes the count; a later task asking for another one in the same warm
engine is refused with `ThreadsFixed` (run it with ``isolation: process``).

Per-operator profile: ExecuTorch writes ETDump only when built with its event
tracer. The pip wheel's pybindings are not (``has_etdump`` is false and
``write_etdump_result_to_file`` finds no data), so this implementation has no
layer rows; the result says so.
"""

from __future__ import annotations

import importlib
from typing import Any

from farm.engine import bundle
from farm.engine.runtimes.base import (
    Profile,
    Runtime,
    RuntimeUnavailable,
    Session,
    ThreadsFixed,
    register,
)

NO_ETDUMP = (
    "executorch's Python runtime is built without its event tracer "
    "(EXECUTORCH_ENABLE_EVENT_TRACER): no ETDump, so no per-operator rows"
)


def _pybindings() -> Any | None:
    try:
        return importlib.import_module("executorch.extension.pybindings.portable_lib")
    except ImportError:
        return None


def _native() -> Any | None:
    try:
        return importlib.import_module("farm.engine.native")
    except ImportError:
        return None


@register("executorch")
class ExecuTorch(Runtime):
    kinds = (bundle.KIND_PTE,)
    needs_torch = False  # the native runner needs none; the pybindings import it themselves

    def __init__(self) -> None:
        self.fixed: int | None = None  # the pool's size, once set
        self.threads = 1

    def available(self) -> str | None:
        if _pybindings() is not None:
            return None
        native = _native()
        if native is None:
            return "neither the executorch Python package nor farm's native runner is here"
        return native.available()

    def set_threads(self, threads: int) -> int:
        if self.fixed is not None and threads != self.fixed:
            raise ThreadsFixed(
                f"executorch's thread pool is fixed at {self.fixed} threads in this engine "
                f"process and cannot become {threads} (resizing it crashes the process); "
                "run such tasks with isolation: process"
            )
        self.threads = threads
        pl = _pybindings()
        if pl is not None and self.fixed is None:
            if pl._threadpool_get_thread_count() != threads:
                pl._unsafe_reset_threadpool(threads)  # before any program is loaded
            self.fixed = pl._threadpool_get_thread_count()
        return threads if pl is None else self.fixed  # type: ignore[return-value]

    def load(self, path: str, manifest: dict[str, Any]) -> Session:
        pl = _pybindings()
        if pl is not None:
            self.fixed = self.fixed or pl._threadpool_get_thread_count()
            return PyExecuTorchSession(pl, path, manifest)
        native = _native()
        reason = self.available()
        if native is None or reason is not None:
            raise RuntimeUnavailable(reason or "no executorch runtime on this board")
        return native.load(path, manifest, self.threads)


class PyExecuTorchSession(Session):
    form = "executorch/xnnpack"
    impl = "pybindings"

    def __init__(self, pl: Any, path: str, manifest: dict[str, Any]) -> None:
        import torch  # the pybindings take torch tensors

        program = bundle.member_bytes(path, bundle.MEMBERS[bundle.KIND_PTE])
        self.param_bytes = len(program)
        self.inputs = bundle.example_inputs(manifest)
        self._args = tuple(torch.from_numpy(a) for a in self.inputs)
        self._program = program  # kept alive: the loaded module reads its data from it
        self._module = pl._load_for_executorch_from_buffer(program)
        forward, args = self._module.forward, self._args
        self.call = lambda: forward(args)

    @property
    def handle(self) -> Any:
        return self._module

    def output(self) -> Any:
        return self._module.forward(self._args)[0].numpy()

    def profile(self, iterations: int) -> Profile | None:
        return Profile([], 0.0, 0, "etdump", [NO_ETDUMP])
