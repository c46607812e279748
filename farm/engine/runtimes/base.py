"""What a runtime is to the engine: load an artifact, one call, threads, a profile.

The engine's timing loop (`farm.engine.timing.time_inferences`), markers, sync
pulses, warm-up, statistics, memory readings and the board lock are common to
every runtime (`farm.engine.runner`): a runtime adds no timing code. It says

- which artifact kinds it loads (``kinds``) and whether it needs torch,
- whether this board can run it (``available``: None, or why not),
- how its threads are set (``set_threads``; a pool that cannot change in a warm
  process raises `ThreadsFixed`),
- how an artifact becomes a `Session`: the seeded inputs, and either ``call()`` —
  one inference, the thing the engine times — or ``timed_run(n)`` for a runtime
  that times in its own process (a native runner) and hands back the begin/end
  clock readings in `farm.engine.timing.Timed`'s shape,
- optionally its own per-operator ``profile`` for the layer pass.

Runtimes register by name (`register`); a second registration of a name is a
ValueError, like the transports and monitors.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

PRECISIONS = ("fp32", "int8")


class ThreadsFixed(RuntimeError):
    """The runtime's thread pool is fixed in this process and cannot take another count."""


class RuntimeUnavailable(RuntimeError):
    """This board cannot run the runtime (its package or runner is missing)."""


@dataclass
class OpRow:
    """One row of a runtime's own profile: a layer (or fused operators), its mean time
    per inference, and the operator type(s) it ran."""

    name: str
    op: str
    time_ms: float
    calls: int = 1


@dataclass
class Profile:
    """A runtime's per-operator profile, averaged over ``iterations`` inferences.

    ``whole_ms`` is the mean whole inference of the same profiled runs;
    ``unprofiled_ms``, where the runtime measured it, the mean whole of unprofiled
    runs interleaved with them: what the profiler added is ``whole_ms`` less it, and
    the layer pass sets the rows' sum against it where it is given, else against
    ``whole_ms``.
    ``source`` names the profiler (``ort.enable_profiling``, ``etdump``); ``notes``
    say what it could not attribute or measure.
    """

    rows: list[OpRow]
    whole_ms: float
    iterations: int
    source: str
    notes: list[str] = field(default_factory=list)
    unprofiled_ms: float | None = None


class Session:
    """A loaded model, ready to time. Subclasses set ``call`` or override ``timed_run``."""

    inputs: list[Any]
    param_bytes: int = 0
    form: str = "runtime"  # what is timed, e.g. "onnxruntime", "executorch/xnnpack"
    impl: str = ""  # which implementation of the runtime (e.g. "pybindings", "native")
    call: Callable[[], Any] | None = None

    @property
    def handle(self) -> Any:
        """The runtime's own loaded object (ORT's ``InferenceSession``, ExecuTorch's
        module), for a caller that goes around farm: ``benchmarks/runtimes.py`` times a
        plain loop over it against the engine's. None where the model runs elsewhere."""
        return None

    def timed_run(self, n: int) -> Any:  # -> farm.engine.timing.Timed
        """``n`` inferences timed by the runtime itself; only for sessions without ``call``."""
        raise NotImplementedError

    def output(self) -> Any:
        """The first output of one inference on ``inputs``, as a numpy array."""
        raise NotImplementedError

    def profile(self, iterations: int) -> Profile | None:
        """The runtime's own per-operator profile, or None where it has none."""
        return None


class Runtime:
    name: ClassVar[str] = ""
    kinds: ClassVar[tuple[str, ...]] = ()
    needs_torch: ClassVar[bool] = False
    library: ClassVar[str] = ""  # the Python package the runtime needs on the board, if any

    def available(self) -> str | None:
        """None, or why this board cannot run the runtime (its library will not import)."""
        if not self.library:
            return None
        try:
            importlib.import_module(self.library)
        except ImportError as exc:
            return f"{self.library} is not installed ({exc})"
        return None

    def set_threads(self, threads: int) -> int:
        raise NotImplementedError

    def load(self, path: str, manifest: dict[str, Any]) -> Session:
        raise NotImplementedError


class Registry:
    def __init__(self) -> None:
        self._classes: dict[str, type[Runtime]] = {}
        self._instances: dict[str, Runtime] = {}

    def register(self, name: str) -> Callable[[type[Runtime]], type[Runtime]]:
        def decorate(cls: type[Runtime]) -> type[Runtime]:
            if name in self._classes:
                raise ValueError(f"runtime {name!r} is already registered")
            cls.name = name
            self._classes[name] = cls
            return cls

        return decorate

    def names(self) -> list[str]:
        return sorted(self._classes)

    def get(self, name: str) -> Runtime:
        """The process's one instance of runtime ``name`` (thread pools are per process)."""
        if name not in self._classes:
            raise KeyError(f"unknown runtime {name!r}; registered: {', '.join(self.names())}")
        if name not in self._instances:
            self._instances[name] = self._classes[name]()
        return self._instances[name]


REGISTRY = Registry()
register = REGISTRY.register
