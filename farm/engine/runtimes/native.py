"""ExecuTorch through farm's C++ runner (`farm.engine.native`): kind ``pte`` artifacts,
timed in the runner's own process on CLOCK_MONOTONIC (``timed_run``), so the Python
interpreter is out of the timed loop. Threads are per runner process: each session
starts its own, so a warm engine changes the count freely (unlike the pybindings'
fixed pool). Needs the runner built on the board (``farm board bootstrap``)."""

from __future__ import annotations

from typing import Any

from farm.engine import bundle
from farm.engine.runtimes.base import Runtime, RuntimeUnavailable, Session, register


@register("executorch-native")
class ExecuTorchNative(Runtime):
    kinds = (bundle.KIND_PTE,)
    needs_torch = False  # the engine imports none (the runner's library loads its own)

    def __init__(self) -> None:
        self.threads = 1

    def available(self) -> str | None:
        from farm.engine import native

        return native.available()

    def set_threads(self, threads: int) -> int:
        self.threads = threads  # applied to each runner process this runtime starts
        return threads

    def load(self, path: str, manifest: dict[str, Any]) -> Session:
        from farm.engine import native

        reason = native.available()
        if reason is not None:
            raise RuntimeUnavailable(reason)
        return native.load(path, manifest, self.threads)  # type: ignore[return-value]
